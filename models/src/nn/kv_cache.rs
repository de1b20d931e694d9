//! Self-attention key/value caches: the seed's first optimization.
//!
//! - [`ConcatCache`] (naive): each step concatenates the new keys onto the old ones, copying the
//!   whole cache: O(n) per step, O(n^2) per sequence.
//! - [`PreallocCache`] (optimized): one buffer sized for the expected length, written in place
//!   with `slice_update`: O(1) per step. MLX donates the old buffer to the update when nothing
//!   else holds it, so callers must not keep the arrays `update_and_fetch` returns across steps.
//!
//! Evaluating every N steps defeats that donation: a deferred step's update finds the buffer
//! still held by the previous, unevaluated step's attention, and copies all of it (measured on
//! the CPU: eval every 8 steps 0.56x of every step). A *staged* cache therefore leaves the
//! buffer alone between evaluations: new keys and values wait in a small pending block, the
//! attention reads the buffer's committed part and the block ([`KvParts`]), and
//! [`KvCache::commit`], called once the steps are evaluated, writes the block in with one
//! update that can reuse the buffer. On the CPU that took eval-every-8 from 0.56x to
//! 0.84-0.98x of evaluating every step; on a GPU (H200), where the copy is cheap and the split
//! attention costs extra kernels, it measured slower than the plain cache (0.63x against
//! 1.19x), so decoders stage only on the CPU.
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
    /// Append `k`, `v` and return what to attend over in parts: the committed history (none
    /// for caches that do not stage) and the recent positions, the new ones last.
    fn update_and_fetch_parts(&mut self, k: &Array, v: &Array) -> Result<KvParts> {
        Ok(KvParts { committed: None, recent: self.update_and_fetch(k, v)? })
    }
    /// Write staged positions into the buffer and evaluate it. Call it after evaluating the
    /// steps that read the cache, so the update may reuse the buffer; a no-op for caches
    /// that do not stage.
    fn commit(&mut self) -> Result<()> {
        Ok(())
    }
    /// The buffers `[B, H, capacity, D]` into which a kernel may write the next `t` positions
    /// in place ([`crate::nn::layer_cuda`]), when this cache has them with room for `t` more:
    /// a preallocated cache, not staging, that has written positions before (so its buffers
    /// are arrays of their own, not a broadcast zero). After the kernel, call
    /// [`Self::wrote_in_place`]. `None` for caches that cannot.
    fn in_place_buffers(&mut self, _t: i32) -> Option<(Array, Array)> {
        None
    }
    /// Record `t` positions written in place by the computation of `marker`. MLX does not know
    /// that computation writes the buffers, so the cache evaluates `marker` before it next
    /// reads them through MLX (a later update, a reorder).
    fn wrote_in_place(&mut self, _t: i32, _marker: &Array) -> Result<()> {
        Err(Error::InvalidArgument("this cache is not written in place".into()))
    }
}

/// Keys and values `[B, H, T, D]` in two parts: attention over both equals attention over
/// their concatenation (committed first).
pub struct KvParts {
    pub committed: Option<(Array, Array)>,
    pub recent: (Array, Array),
}

/// Pending positions past which a staged cache commits inside the graph (a copy) rather than
/// wait for [`KvCache::commit`], so a caller that never commits stays correct and bounded.
const MAX_PENDING: i32 = 32;

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
    /// Stage positions between commits (see the module docs).
    staged: bool,
    /// Staged positions not yet in the buffers (counted in `offset`).
    pending: Option<(Array, Array)>,
    /// The output of the last kernel that wrote the buffers in place, not yet evaluated.
    written: Option<Array>,
}

impl PreallocCache {
    /// `capacity`: the expected final length (e.g. the decoder's context size).
    pub fn new(capacity: i32) -> Self {
        Self {
            capacity: capacity.max(1),
            step: 256,
            offset: 0,
            buffers: None,
            staged: false,
            pending: None,
            written: None,
        }
    }

    /// [`Self::new`], staging positions between [`KvCache::commit`] calls: for decoding that
    /// evaluates every few steps.
    pub fn staged(capacity: i32) -> Self {
        Self { staged: true, ..Self::new(capacity) }
    }

    fn pending_len(&self) -> i32 {
        self.pending.as_ref().map_or(0, |(k, _)| k.shape()[2])
    }

    /// Write the pending positions into the buffers (growing them if needed); evaluate them
    /// when `eval`.
    fn commit_pending(&mut self, eval: bool) -> Result<()> {
        let Some((pk, pv)) = self.pending.take() else {
            return Ok(());
        };
        let s = pk.shape().to_vec();
        let p = s[2];
        let committed = self.offset - p;
        self.ensure_room(&pk, &pv, committed, p)?;
        let (start, stop) = ([0, 0, committed, 0], [s[0], s[1], committed + p, s[3]]);
        // The old handles go out of scope before the evaluation, so the update may reuse them.
        let (bk, bv) = {
            let (ok, ov) = self.buffers.take().ok_or_else(|| Error::Mlx("cache buffers vanished".into()))?;
            (slice_update(&ok, &pk, &start, &stop)?, slice_update(&ov, &pv, &start, &stop)?)
        };
        if eval {
            mlx_rs::transforms::eval([&bk, &bv])?;
        }
        self.buffers = Some((bk, bv));
        Ok(())
    }

    pub fn capacity(&self) -> i32 {
        self.capacity
    }

    /// Whether a kernel may write the next `t` positions into the buffers in place (see
    /// [`KvCache::in_place_buffers`]): not staging, positions written before, room for `t`.
    fn writable_in_place(&self, t: i32) -> bool {
        !self.staged && self.pending.is_none() && self.offset >= 1 && t >= 1 && self.offset + t <= self.capacity && self.buffers.as_ref().is_some_and(|(k, _)| k.shape().get(2) == Some(&self.capacity))
    }

    /// Evaluate the last in-place writer, so what MLX reads from the buffers next includes
    /// its positions (MLX orders work by the arrays it reads and writes, and the kernel's
    /// writes into its inputs are invisible to it).
    fn settle(&mut self) -> Result<()> {
        if let Some(m) = self.written.take() {
            m.eval()?;
        }
        Ok(())
    }

    /// Room for `t` more positions after the `used` ones in the buffers (growing them, keeping
    /// the used part).
    fn ensure_room(&mut self, k: &Array, v: &Array, used: i32, t: i32) -> Result<()> {
        let needed = used + t;
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
                let ok = ok.index((.., .., ..used, ..));
                let ov = ov.index((.., .., ..used, ..));
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
        let s = check_kv(k, v)?;
        self.settle()?;
        // Whole histories are asked for: staged positions go in first.
        self.commit_pending(false)?;
        let t = s[2];
        self.ensure_room(k, v, self.offset, t)?;
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
        self.settle()?;
        if let Some((k, v)) = self.buffers.take() {
            self.buffers = Some((k.take_axis(rows, 0)?, v.take_axis(rows, 0)?));
        }
        if let Some((k, v)) = self.pending.take() {
            self.pending = Some((k.take_axis(rows, 0)?, v.take_axis(rows, 0)?));
        }
        Ok(())
    }

    fn update_and_fetch_parts(&mut self, k: &Array, v: &Array) -> Result<KvParts> {
        // Not staging, or nothing committed to keep apart yet (the prompt): write through.
        if !self.staged || self.buffers.is_none() {
            return Ok(KvParts { committed: None, recent: self.update_and_fetch(k, v)? });
        }
        let s = check_kv(k, v)?;
        self.settle()?;
        if self.pending_len() >= MAX_PENDING {
            self.commit_pending(false)?;
        }
        let committed = self.offset - self.pending_len();
        let recent = match self.pending.take() {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => (ops::concatenate(&[pk, k.clone()], 2)?, ops::concatenate(&[pv, v.clone()], 2)?),
        };
        self.offset += s[2];
        self.pending = Some(recent.clone());
        let committed = match &self.buffers {
            Some((bk, bv)) if committed > 0 => Some((bk.index((.., .., ..committed, ..)), bv.index((.., .., ..committed, ..)))),
            _ => None,
        };
        Ok(KvParts { committed, recent })
    }

    fn commit(&mut self) -> Result<()> {
        self.commit_pending(true)
    }

    fn in_place_buffers(&mut self, t: i32) -> Option<(Array, Array)> {
        self.writable_in_place(t).then(|| self.buffers.clone()).flatten()
    }

    fn wrote_in_place(&mut self, t: i32, marker: &Array) -> Result<()> {
        if !self.writable_in_place(t) {
            return Err(Error::InvalidArgument(format!("{t} positions written in place past the cache's {} of {}", self.offset, self.capacity)));
        }
        self.offset += t;
        self.written = Some(marker.clone());
        Ok(())
    }
}

/// The shape of keys `k`, which must be `[B, H, t, D]` as values `v` are.
fn check_kv(k: &Array, v: &Array) -> Result<Vec<i32>> {
    let s = k.shape();
    if s.len() != 4 || v.shape() != s {
        return Err(Error::InvalidArgument(format!("cache update: keys {:?} and values {:?} must be [B, H, t, D]", s, v.shape())));
    }
    Ok(s.to_vec())
}

/// Build a boxed cache of the given kind.
pub fn new_cache(kind: KvCacheKind, capacity: i32) -> Box<dyn KvCache> {
    new_cache_staged(kind, capacity, false)
}

/// [`new_cache`]; a preallocated cache stages positions between commits when `staged`.
pub fn new_cache_staged(kind: KvCacheKind, capacity: i32, staged: bool) -> Box<dyn KvCache> {
    match kind {
        KvCacheKind::Concat => Box::new(ConcatCache::new()),
        KvCacheKind::Preallocated if staged => Box::new(PreallocCache::staged(capacity)),
        KvCacheKind::Preallocated => Box::new(PreallocCache::new(capacity)),
    }
}
