//! What an autoregressive decoder (Whisper's, MusicGen's) carries between steps, and the seed's
//! decode optimizations as independent switches.
use crate::error::Result;
use crate::nn::attention::{AttentionKernel, CrossKvCache};
use crate::nn::kv_cache::{new_cache, KvCache, KvCacheKind};
use crate::Variant;

/// The seed's decode optimizations, each on its own switch so a report can attribute gains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Self-attention KV cache: concatenation (naive) or preallocated with O(1) updates.
    pub kv_cache: KvCacheKind,
    /// Cross-attention K/V computed once and cached (else recomputed every step).
    pub cache_cross: bool,
    /// Evaluate the graph every N steps (1 = every step).
    pub eval_every: u32,
    /// Attention weights by MLX's fused kernel, or explicit softmax (naive).
    pub kernel: AttentionKernel,
}

impl DecodeOptions {
    pub fn naive() -> Self {
        Self { kv_cache: KvCacheKind::Concat, cache_cross: false, eval_every: 1, kernel: AttentionKernel::Explicit }
    }
    pub fn optimized() -> Self {
        Self {
            kv_cache: KvCacheKind::Preallocated,
            cache_cross: true,
            eval_every: 8,
            kernel: AttentionKernel::Fused,
        }
    }
    pub fn for_variant(v: Variant) -> Self {
        match v {
            Variant::Naive => Self::naive(),
            Variant::Optimized => Self::optimized(),
        }
    }
}

/// Per-layer caches of one decode, and the number of positions seen.
pub struct DecodeState {
    self_caches: Vec<Box<dyn KvCache>>,
    cross_caches: Vec<CrossKvCache>,
    cache_cross: bool,
    kernel: AttentionKernel,
    offset: i32,
}

impl DecodeState {
    /// State for `layers` decoder layers; a preallocated cache holds `capacity` positions.
    pub fn new(layers: usize, opts: &DecodeOptions, capacity: i32) -> Self {
        Self {
            self_caches: (0..layers).map(|_| new_cache(opts.kv_cache, capacity)).collect(),
            cross_caches: (0..layers).map(|_| CrossKvCache::new()).collect(),
            cache_cross: opts.cache_cross,
            kernel: opts.kernel,
            offset: 0,
        }
    }

    /// The attention kernel of every layer.
    pub fn kernel(&self) -> AttentionKernel {
        self.kernel
    }

    /// Positions decoded so far.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Layer `i`'s self-attention cache, and its cross-attention cache when K/V are cached.
    pub fn layer(&mut self, i: usize) -> (&mut dyn KvCache, Option<&mut CrossKvCache>) {
        let cross = if self.cache_cross { Some(&mut self.cross_caches[i]) } else { None };
        (self.self_caches[i].as_mut(), cross)
    }

    /// Record `t` more positions.
    pub fn advance(&mut self, t: i32) {
        self.offset += t;
    }

    /// Keep the batch rows `rows` of every self-attention cache (beam search).
    pub fn reorder(&mut self, rows: &mlx_rs::Array) -> Result<()> {
        for c in &mut self.self_caches {
            c.reorder(rows)?;
        }
        Ok(())
    }
}
