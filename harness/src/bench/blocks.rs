//! Block-level workloads from the shared `models::nn` building blocks, at Whisper
//! large-v3-turbo decoder width (d_model 1280, 20 heads): the seed's decode optimizations in
//! isolation, until and beside the full models.
use anyhow::Result;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{random, transforms::eval, Array};
use models::nn::attention::{AttentionKernel, CrossKvCache, Mask, MultiHeadAttention};
use models::nn::kv_cache::{ConcatCache, KvCache, PreallocCache};
use models::nn::linear::Linear;

use super::workload::{Scale, Spec, Variant, Workload};
use crate::report::{Work, WorkloadInfo};

const D: i32 = 1280;
const HEADS: i32 = 20;
/// Whisper's text context: the preallocated cache's capacity.
const CONTEXT: i32 = 448;
/// Encoder frames of 30 s of audio.
const AUDIO_CTX: i32 = 1500;

fn randn(shape: &[i32], seed: u64) -> Result<Array> {
    Ok(random::normal::<f32>(shape, None, None, &random::key(seed)?)?)
}

fn attention(seed: u64) -> Result<MultiHeadAttention> {
    let lin = |s: u64, bias: bool| -> Result<Linear> {
        let w = randn(&[D, D], seed + s)?.multiply(mlx_rs::array!(0.02f32))?;
        let b = if bias { Some(randn(&[D], seed + 10 + s)?) } else { None };
        Ok(Linear::new(w, b)?)
    };
    let a = MultiHeadAttention {
        query: lin(1, true)?,
        key: lin(2, false)?,
        value: lin(3, true)?,
        out: lin(4, true)?,
        n_head: HEADS,
        qkv: None,
    };
    eval([&a.query, &a.key, &a.value, &a.out].iter().flat_map(|l| l.weight.arrays()))?;
    Ok(a)
}

/// One self-attention decode step with `cached` tokens already in the cache.
struct DecodeStep {
    attn: MultiHeadAttention,
    prefix: Array,
    x: Array,
    cached: i32,
    steps: i32,
    concat: ConcatCache,
    prealloc: PreallocCache,
}

impl Workload for DecodeStep {
    fn prepare(&mut self, v: Variant) -> Result<()> {
        // Fill a fresh cache with the prefix, evaluated, so the timed steps start from it.
        let (k, val) = self.attn.project_kv(&self.prefix)?;
        let (ck, cv) = match v {
            Variant::Naive => {
                self.concat = ConcatCache::new();
                self.concat.update_and_fetch(&k, &val)?
            }
            Variant::Optimized => {
                self.prealloc = PreallocCache::new(CONTEXT.max(self.cached + self.steps));
                self.prealloc.update_and_fetch(&k, &val)?
            }
        };
        eval([&ck, &cv])?;
        Ok(())
    }

    fn run(&mut self, v: Variant) -> Result<()> {
        for _ in 0..self.steps {
            let cache: &mut dyn KvCache = match v {
                Variant::Naive => &mut self.concat,
                Variant::Optimized => &mut self.prealloc,
            };
            let y = self.attn.self_attention(&self.x, Some(cache), Mask::Causal, AttentionKernel::Fused)?;
            y.eval()?;
        }
        Ok(())
    }
}

/// Decode steps of cross-attention over 30 s of encoder output: K/V recomputed every step
/// (naive) against computed once and cached (optimized).
struct CrossAttn {
    attn: MultiHeadAttention,
    xa: Array,
    x: Array,
    steps: i32,
    cache: CrossKvCache,
}

impl Workload for CrossAttn {
    fn prepare(&mut self, _: Variant) -> Result<()> {
        self.cache = CrossKvCache::new();
        Ok(())
    }

    fn run(&mut self, v: Variant) -> Result<()> {
        for _ in 0..self.steps {
            let cache = match v {
                Variant::Naive => None,
                Variant::Optimized => Some(&mut self.cache),
            };
            self.attn.cross_attention(&self.x, &self.xa, cache, AttentionKernel::Fused)?.eval()?;
        }
        Ok(())
    }
}

/// A 64-step decode loop (preallocated cache) evaluated every step (naive) against every 8
/// steps (optimized). The next input depends on the previous output, as in generation.
struct EvalInterval {
    attn: MultiHeadAttention,
    x0: Array,
    steps: i32,
    cache: PreallocCache,
}

impl Workload for EvalInterval {
    fn prepare(&mut self, v: Variant) -> Result<()> {
        // Evaluating every 8 steps on the CPU, the cache stages positions between evaluations
        // (as DecodeState does; not on a GPU, where it measured slower).
        let staged = v == Variant::Optimized && !models::runtime::on_gpu();
        self.cache = if staged { PreallocCache::staged(CONTEXT) } else { PreallocCache::new(CONTEXT) };
        Ok(())
    }

    fn run(&mut self, v: Variant) -> Result<()> {
        let every = match v {
            Variant::Naive => 1,
            Variant::Optimized => 8,
        };
        let mut x = self.x0.clone();
        for step in 0..self.steps {
            let y = self.attn.self_attention(&x, Some(&mut self.cache), Mask::Causal, AttentionKernel::Fused)?;
            x = y.index((.., -1.., ..));
            if (step + 1) % every == 0 {
                x.eval()?;
                self.cache.commit()?;
            }
        }
        x.eval()?;
        self.cache.commit()?;
        Ok(())
    }
}

pub fn specs(scale: Scale) -> Vec<Spec> {
    // Quick mode halves the eval-interval loop; it stays a multiple of the interval.
    let eval_steps = if scale.quick { 32 } else { 64 };
    let mut out = Vec::new();
    for cached in [64, 256, 1024] {
        let steps = 8;
        out.push(Spec {
            id: format!("blocks/decode-step-cache-{cached}"),
            model: "blocks",
            info: WorkloadInfo {
                size: format!("one attention layer, d_model {D}, {HEADS} heads (Whisper large-v3-turbo decoder width), random weights"),
                input: format!("{cached} cached tokens, then {steps} single-token steps, batch 1"),
                timed: format!("{steps} self-attention decode steps, each evaluated; naive = concatenating KV cache, optimized = preallocated O(1) slice update"),
                note: None,
            },
            work: Work { tokens: Some(steps as f64), ..Work::default() },
            heavy: false,
            build: Box::new(move |_scale: Scale| {
                Ok(Box::new(DecodeStep {
                    attn: attention(100)?,
                    prefix: randn(&[1, cached, D], 1)?,
                    x: randn(&[1, 1, D], 2)?,
                    cached,
                    steps,
                    concat: ConcatCache::new(),
                    prealloc: PreallocCache::new(CONTEXT),
                }) as Box<dyn Workload>)
            }),
        });
    }
    out.push(Spec {
        id: "blocks/cross-attention".into(),
        model: "blocks",
        info: WorkloadInfo {
            size: format!("one cross-attention layer, d_model {D}, {HEADS} heads, random weights"),
            input: format!("{AUDIO_CTX} encoder frames (30 s of audio), 16 single-token steps"),
            timed: "16 cross-attention decode steps, each evaluated; naive = K/V recomputed every step, optimized = computed on the first step and cached".into(),
            note: None,
        },
        work: Work { tokens: Some(16.0), ..Work::default() },
        heavy: false,
        build: Box::new(|_scale| {
            Ok(Box::new(CrossAttn {
                attn: attention(200)?,
                xa: randn(&[1, AUDIO_CTX, D], 3)?,
                x: randn(&[1, 1, D], 4)?,
                steps: 16,
                cache: CrossKvCache::new(),
            }) as Box<dyn Workload>)
        }),
    });
    out.push(Spec {
        id: "blocks/eval-interval".into(),
        model: "blocks",
        info: WorkloadInfo {
            size: format!("one attention layer, d_model {D}, {HEADS} heads, preallocated cache, random weights"),
            input: format!("{eval_steps} dependent single-token steps, batch 1"),
            timed: format!("{eval_steps} decode steps; naive = eval every step, optimized = eval every 8 steps (on the CPU the preallocated cache stages positions between evaluations)"),
            note: None,
        },
        work: Work { tokens: Some(eval_steps as f64), ..Work::default() },
        heavy: false,
        build: Box::new(move |_scale| {
            Ok(Box::new(EvalInterval {
                attn: attention(300)?,
                x0: randn(&[1, 1, D], 5)?,
                steps: eval_steps,
                cache: PreallocCache::new(CONTEXT),
            }) as Box<dyn Workload>)
        }),
    });
    out
}
