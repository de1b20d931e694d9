//! What an autoregressive decoder (Whisper's, MusicGen's) carries between steps, and the seed's
//! decode optimizations as independent switches.
use mlx_rs::Array;

use crate::checkpoint::Vars;
use crate::error::Result;
use crate::nn::attention::{AttentionKernel, CrossKvCache, Mask, MultiHeadAttention};
use crate::nn::fixed_step::FixedStack;
use crate::nn::kv_cache::{new_cache_staged, KvCache, KvCacheKind};
use crate::nn::layer_cuda::{self, Barrier, StepInputs};
use crate::nn::linear::Linear;
use crate::nn::norm::LayerNorm;
use crate::nn::ops::gelu;
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
    /// The layer stack as one compiled graph with the same shapes at every step (keys and
    /// values over the full capacity under a mask, the position an array; see
    /// [`crate::nn::fixed_step`]). It replaces the KV cache kind and the attention kernel
    /// (always MLX's fused attention over a preallocated buffer) and caches the cross K/V.
    pub fixed_step: bool,
    /// On a CUDA GPU, each layer of a one-position step as a single kernel
    /// ([`crate::nn::layer_cuda`]), where op by op it is about 20 kernels. It needs the
    /// preallocated cache (unstaged) and cached cross K/V, and float32 weights; steps it does
    /// not take (the prompt, other backends, other precisions) run op by op.
    pub fused_layer: bool,
    /// At each evaluation point, start the evaluation and wait only for the previous one, so
    /// the host builds the next steps' graph while the device runs the last ones (MusicGen's
    /// generation: nothing on the host waits for its tokens). Whisper's greedy decode reads
    /// the tokens at each evaluation point and ignores it.
    pub overlap: bool,
}

impl DecodeOptions {
    pub fn naive() -> Self {
        Self {
            kv_cache: KvCacheKind::Concat,
            cache_cross: false,
            eval_every: 1,
            kernel: AttentionKernel::Explicit,
            fixed_step: false,
            fused_layer: false,
            overlap: false,
        }
    }
    /// The seed's optimizations (the compiled fixed-shape step stays off: see below).
    /// Evaluating every 8 steps pays only on a GPU, where it lets
    /// MLX batch several steps' launches (H200: blocks/eval-interval 1.19x); on the CPU, where a
    /// step is a few large matrix-vector products, deferring adds graph overhead and measured
    /// 0.84-0.98x even with the staged cache (0.56x without), so there it evaluates every step.
    pub fn optimized() -> Self {
        Self {
            kv_cache: KvCacheKind::Preallocated,
            cache_cross: true,
            eval_every: if crate::runtime::on_gpu() { 8 } else { 1 },
            kernel: AttentionKernel::Fused,
            // Measured on top of the other four it gains nothing: H200, MusicGen small 100
            // guided steps 0.99x, Whisper turbo's decoder 64 tokens 0.79x; this CPU 0.89x both
            // (`--example fixed_step_ab`). Alone against the naive path it is 1.8-1.9x on the
            // H200 (the bench's `*-fixed-step` rows). So the optimized path leaves it off.
            fixed_step: false,
            // H200, random weights, 500 guided steps of MusicGen medium: 6.0 ms a step with
            // it, 10.4-13.4 ms op by op (`--example layer_kernel_ab`).
            fused_layer: crate::nn::layer_cuda::available(),
            // On a GPU the device would otherwise wait at each evaluation point while the host
            // builds the next interval's graph (H200, MusicGen medium: about a fifth of a step
            // idle, `--example layer_kernel_ab` with LAYER_TRACE). On the CPU the host's
            // building competes with the computation for the same cores.
            overlap: crate::runtime::on_gpu(),
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
    fixed: Option<FixedStack>,
    fused_layer: bool,
    /// The layer kernel's grid barrier, made on its first step.
    barrier: Option<Barrier>,
}

impl DecodeState {
    /// State for `layers` decoder layers; a preallocated cache holds `capacity` positions.
    pub fn new(layers: usize, opts: &DecodeOptions, capacity: i32) -> Self {
        Self {
            // Evaluating every few steps on the CPU: stage positions between commits (see
            // kv_cache). Not on a GPU, where copying a cache costs little and the split
            // attention's extra kernels cost more (H200: staged 0.63x on blocks/eval-interval,
            // unstaged 1.19x; musicgen-small 500 steps 4.41 s staged, 3.84 s not).
            self_caches: (0..layers).map(|_| new_cache_staged(opts.kv_cache, capacity, opts.eval_every > 1 && !crate::runtime::on_gpu())).collect(),
            cross_caches: (0..layers).map(|_| CrossKvCache::new()).collect(),
            cache_cross: opts.cache_cross,
            kernel: opts.kernel,
            offset: 0,
            fixed: opts.fixed_step.then(|| FixedStack::new(capacity)),
            fused_layer: opts.fused_layer,
            barrier: None,
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

    /// Write every cache's staged positions in, once the steps that read them are evaluated
    /// (the loops that evaluate every few steps call it right after evaluating).
    pub fn commit(&mut self) -> Result<()> {
        for c in &mut self.self_caches {
            c.commit()?;
        }
        Ok(())
    }

    /// Run `layers` on the new positions `h` (cross-attention over `xa` under `mask`) and
    /// record them: the fixed-shape step when the options ask for it, else layer by layer
    /// through the caches.
    pub fn forward_layers(&mut self, layers: &[DecoderLayer], h: &Array, xa: &Array, mask: Mask<'_>) -> Result<Array> {
        let t = h.shape().get(1).copied().unwrap_or(0);
        let offset = self.offset;
        let h = match &mut self.fixed {
            Some(f) => {
                let m = match mask {
                    Mask::Additive(a) => Some(a),
                    Mask::None => None,
                    Mask::Causal => return Err(crate::error::Error::InvalidArgument("a causal cross-attention mask".into())),
                };
                f.forward(layers, h, xa, m, offset)?
            }
            None => match self.forward_fused(layers, h, mask)? {
                Some(h) => h,
                None => {
                    let mut h = h.clone();
                    for (i, l) in layers.iter().enumerate() {
                        h = l.forward(&h, xa, mask, self, i)?;
                    }
                    h
                }
            },
        };
        self.advance(t);
        Ok(h)
    }

    /// The step through the layer kernel, when the options ask for it and it takes every
    /// layer: one new position, every self-attention cache writable in place with room for
    /// it, the cross K/V cached. `None` leaves the step to the layers op by op (nothing has
    /// run then).
    fn forward_fused(&mut self, layers: &[DecoderLayer], h: &Array, mask: Mask<'_>) -> Result<Option<Array>> {
        if !self.fused_layer || layers.is_empty() || h.shape().get(1) != Some(&1) || !layer_cuda::available() {
            return Ok(None);
        }
        let mask = match mask {
            Mask::None => None,
            Mask::Additive(a) => Some(a),
            Mask::Causal => return Ok(None),
        };
        if self.barrier.is_none() {
            self.barrier = Some(Barrier::new()?);
        }
        let Some(barrier) = self.barrier.as_ref() else {
            return Ok(None);
        };
        let pos = Array::from_slice(&[self.offset], &[1]);
        let mut prepared = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            let cross = match (&l.cross, self.cache_cross) {
                (None, _) => None,
                (Some(_), true) => match self.cross_caches[i].kv() {
                    Some((k, v)) => Some((k, v, mask)),
                    None => return Ok(None),
                },
                (Some(_), false) => return Ok(None),
            };
            if self.self_caches[i].offset() != self.offset {
                return Ok(None);
            }
            let Some((k, v)) = self.self_caches[i].in_place_buffers(1) else {
                return Ok(None);
            };
            let Some(p) = layer_cuda::prepare(l, &StepInputs { x: h, pos: &pos, cache: (&k, &v), cross }, barrier)? else {
                return Ok(None);
            };
            prepared.push(p);
        }
        let mut x = h.clone();
        for (i, p) in prepared.iter_mut().enumerate() {
            x = p.run(&x, barrier)?;
            self.self_caches[i].wrote_in_place(1, &x)?;
        }
        Ok(Some(x))
    }

    /// Keep only the batch rows `rows` of every cache, self- and cross-attention (a batch
    /// whose finished rows leave it; the encoder states passed to later steps must be
    /// narrowed the same way).
    pub fn keep_rows(&mut self, rows: &mlx_rs::Array) -> Result<()> {
        self.reorder(rows)?;
        if let Some(f) = &mut self.fixed {
            f.keep_cross_rows(rows)?;
        }
        for c in &mut self.cross_caches {
            c.keep_rows(rows)?;
        }
        Ok(())
    }

    /// Keep the batch rows `rows` of every self-attention cache (beam search).
    pub fn reorder(&mut self, rows: &mlx_rs::Array) -> Result<()> {
        if let Some(f) = &mut self.fixed {
            f.reorder(rows)?;
        }
        for c in &mut self.self_caches {
            c.reorder(rows)?;
        }
        Ok(())
    }
}

/// One pre-norm decoder layer as HF's Whisper and MusicGen decoders have it: causal
/// self-attention through a KV cache, cross-attention over the encoder (or text) states, and a
/// GELU feed-forward, each added to the residual stream after its layer norm. MusicGen Melody's
/// layers have no cross-attention (its conditioning is a prefix of the sequence).
#[derive(Clone)]
pub struct DecoderLayer {
    pub attn: MultiHeadAttention,
    pub attn_ln: LayerNorm,
    pub cross: Option<(MultiHeadAttention, LayerNorm)>,
    pub fc1: Linear,
    pub fc2: Linear,
    pub ff_ln: LayerNorm,
}

impl DecoderLayer {
    /// HF's names under `vs` (`self_attn`, `self_attn_layer_norm`, `encoder_attn`,
    /// `encoder_attn_layer_norm`, `fc1`, `fc2`, `final_layer_norm`), `d` wide with `heads` heads
    /// and `ffn` hidden units; `bias`: whether the projections carry biases (Whisper's do,
    /// MusicGen's do not).
    pub fn load(vs: &Vars, d: i32, heads: i32, ffn: i32, bias: bool) -> Result<Self> {
        Self::load_with(vs, d, heads, ffn, bias, true)
    }

    /// [`Self::load`], without the cross-attention when `cross` is false.
    pub fn load_with(vs: &Vars, d: i32, heads: i32, ffn: i32, bias: bool, cross: bool) -> Result<Self> {
        let cross = if cross { Some((MultiHeadAttention::load(&vs.pp("encoder_attn"), d, heads, bias)?, LayerNorm::load(&vs.pp("encoder_attn_layer_norm"), d)?)) } else { None };
        let mut attn = MultiHeadAttention::load(&vs.pp("self_attn"), d, heads, bias)?;
        if !crate::runtime::unfused(crate::runtime::Fusion::Qkv) {
            attn.fuse_qkv()?;
        }
        Ok(Self {
            attn,
            attn_ln: LayerNorm::load(&vs.pp("self_attn_layer_norm"), d)?,
            cross,
            fc1: vs.pp("fc1").linear(ffn, d, bias)?,
            fc2: vs.pp("fc2").linear(d, ffn, bias)?,
            ff_ln: LayerNorm::load(&vs.pp("final_layer_norm"), d)?,
        })
    }

    /// The layer on the new positions `h`: cross-attention over `xa` under `mask`, both caches
    /// of layer `i` of `state`.
    pub fn forward(&self, h: &Array, xa: &Array, mask: Mask<'_>, state: &mut DecodeState, i: usize) -> Result<Array> {
        let kernel = state.kernel();
        let (self_cache, cross_cache) = state.layer(i);
        let h = h.add(self.attn.self_attention(&self.attn_ln.forward(h)?, Some(self_cache), Mask::Causal, kernel)?)?;
        let h = match &self.cross {
            Some((cross, ln)) => h.add(cross.cross_attention_masked(&ln.forward(&h)?, xa, cross_cache, mask, kernel)?)?,
            None => h,
        };
        Ok(h.add(self.fc2.forward(&gelu(&self.fc1.forward(&self.ff_ln.forward(&h)?)?)?)?)?)
    }
}
