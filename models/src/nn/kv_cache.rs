//! Self-attention key/value caches: the seed's first optimization.
//!
//! - [`ConcatCache`] (naive): each step concatenates the new keys onto the old ones, copying the
//!   whole cache: O(n) per step, O(n^2) per sequence.
//! - [`PreallocCache`] (optimized): one buffer sized for the expected length, written in place
//!   with `slice_update`: O(1) per step. MLX donates the old buffer to the update when nothing
//!   else holds it, so callers must not keep the arrays `update_and_fetch` returns across steps.
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};

use crate::error::{Error, Result};
use crate::nn::ops::slice_update;

/// A cache of keys and values laid out `[B, H, T, D]`.
pub trait KvCache {
    /// Number of positions cached so far.
    fn offset(&self) -> i32;
    /// Append `k`, `v` (`[B, H, t, D]`) and return all cached keys and values so far.
    fn update_and_fetch(&mut self, k: &Array, v: &Array) -> Result<(Array, Array)>;
    /// Reorder the batch rows: row `i` becomes old row `rows[i]` (beam search keeps the
    /// surviving beams' histories).
    fn reorder(&mut self, rows: &Array) -> Result<()>;
}

/// Which cache a decoder builds: the naive/optimized switch for this optimization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvCacheKind {
    Concat,
    Preallocated,
}

/// Naive: concatenate along the time axis every step.
#[derive(Default, Clone)]
pub struct ConcatCache {
    kv: Option<(Array, Array)>,
}

impl ConcatCache {
    pub fn new() -> Self {
        Self::default()
    }
}

impl KvCache for ConcatCache {
    fn offset(&self) -> i32 {
        self.kv.as_ref().map_or(0, |(k, _)| k.shape()[2])
    }

    fn update_and_fetch(&mut self, k: &Array, v: &Array) -> Result<(Array, Array)> {
        let kv = match self.kv.take() {
            None => (k.clone(), v.clone()),
            Some((ck, cv)) => (ops::concatenate(&[ck, k.clone()], 2)?, ops::concatenate(&[cv, v.clone()], 2)?),
        };
        self.kv = Some(kv.clone());
        Ok(kv)
    }

    fn reorder(&mut self, rows: &Array) -> Result<()> {
        if let Some((k, v)) = self.kv.take() {
            self.kv = Some((k.take_axis(rows, 0)?, v.take_axis(rows, 0)?));
        }
        Ok(())
    }
}

/// Optimized: a preallocated `[B, H, capacity, D]` buffer with O(1) appends. When a sequence
/// outgrows `capacity`, the buffer grows by `step` positions (one copy), so a wrong guess costs
/// time, never correctness.
#[derive(Clone)]
pub struct PreallocCache {
    capacity: i32,
    step: i32,
    offset: i32,
    buffers: Option<(Array, Array)>,
}

impl PreallocCache {
    /// `capacity`: the expected final length (e.g. the decoder's context size).
    pub fn new(capacity: i32) -> Self {
        Self { capacity: capacity.max(1), step: 256, offset: 0, buffers: None }
    }

    pub fn capacity(&self) -> i32 {
        self.capacity
    }

    fn ensure_room(&mut self, k: &Array, v: &Array, t: i32) -> Result<()> {
        let needed = self.offset + t;
        let grow = |old: Option<&Array>, like: &Array, cap: i32| -> Result<Array> {
            let s = like.shape();
            let fresh = ops::zeros_dtype(&[s[0], s[1], cap, s[3]], like.dtype())?;
            match old {
                None => Ok(fresh),
                Some(old) => Ok(slice_update(&fresh, old, &[0, 0, 0, 0], &[s[0], s[1], old.shape()[2], s[3]])?),
            }
        };
        match &self.buffers {
            None => {
                self.capacity = self.capacity.max(needed);
                self.buffers = Some((grow(None, k, self.capacity)?, grow(None, v, self.capacity)?));
            }
            Some(_) if needed > self.capacity => {
                let cap = (needed + self.step - 1) / self.step * self.step;
                let (ok, ov) = self.buffers.take().ok_or_else(|| Error::Mlx("cache buffers vanished".into()))?;
                let ok = ok.index((.., .., ..self.offset, ..));
                let ov = ov.index((.., .., ..self.offset, ..));
                self.buffers = Some((grow(Some(&ok), k, cap)?, grow(Some(&ov), v, cap)?));
                self.capacity = cap;
            }
            Some(_) => {}
        }
        Ok(())
    }
}

impl KvCache for PreallocCache {
    fn offset(&self) -> i32 {
        self.offset
    }

    fn update_and_fetch(&mut self, k: &Array, v: &Array) -> Result<(Array, Array)> {
        let s = k.shape();
        if s.len() != 4 || v.shape() != s {
            return Err(Error::InvalidArgument(format!("cache update: keys {:?} and values {:?} must be [B, H, t, D]", s, v.shape())));
        }
        let t = s[2];
        self.ensure_room(k, v, t)?;
        let (bk, bv) = self.buffers.take().ok_or_else(|| Error::Mlx("cache buffers vanished".into()))?;
        let (start, stop) = ([0, 0, self.offset, 0], [s[0], s[1], self.offset + t, s[3]]);
        // Move the buffers into the update so MLX may reuse them in place.
        let bk = slice_update(&bk, k, &start, &stop)?;
        let bv = slice_update(&bv, v, &start, &stop)?;
        self.offset += t;
        let out = (bk.index((.., .., ..self.offset, ..)), bv.index((.., .., ..self.offset, ..)));
        self.buffers = Some((bk, bv));
        Ok(out)
    }

    fn reorder(&mut self, rows: &Array) -> Result<()> {
        if let Some((k, v)) = self.buffers.take() {
            self.buffers = Some((k.take_axis(rows, 0)?, v.take_axis(rows, 0)?));
        }
        Ok(())
    }
}

/// Build a boxed cache of the given kind.
pub fn new_cache(kind: KvCacheKind, capacity: i32) -> Box<dyn KvCache> {
    match kind {
        KvCacheKind::Concat => Box::new(ConcatCache::new()),
        KvCacheKind::Preallocated => Box::new(PreallocCache::new(capacity)),
    }
}
