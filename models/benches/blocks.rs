//! Block-level micro-benchmarks of the seed's decode optimizations (`cargo bench -p models`):
//! the decode step with the concatenating versus the preallocated KV cache at 64, 256 and 1024
//! cached tokens, cross-attention cached versus recomputed, and eval every step versus every 8.
//! Sizes are Whisper large-v3-turbo's decoder width (d_model 1280, 20 heads).
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{random, transforms::eval, Array};
use models::nn::attention::{AttentionKernel, CrossKvCache, Mask, MultiHeadAttention};
use models::nn::kv_cache::{ConcatCache, KvCache, PreallocCache};
use models::nn::linear::Linear;

const D: i32 = 1280;
const HEADS: i32 = 20;

fn randn(shape: &[i32], seed: u64) -> Array {
    random::normal::<f32>(shape, None, None, &random::key(seed).unwrap()).unwrap()
}

fn attention() -> MultiHeadAttention {
    let lin = |s: u64| Linear::new(randn(&[D, D], s).multiply(mlx_rs::array!(0.02f32)).unwrap(), Some(randn(&[D], s + 9))).unwrap();
    let a = MultiHeadAttention { query: lin(1), key: lin(2), value: lin(3), out: lin(4), n_head: HEADS, kernel: AttentionKernel::Fused };
    eval([&a.query, &a.key, &a.value, &a.out].iter().flat_map(|l| l.weight.arrays())).unwrap();
    a
}

/// A cache of `kind` holding `n` evaluated tokens.
fn filled<C: KvCache>(mut cache: C, attn: &MultiHeadAttention, prefix: &Array) -> C {
    let (k, v) = attn.project_kv(prefix).unwrap();
    let (k, v) = cache.update_and_fetch(&k, &v).unwrap();
    eval([&k, &v]).unwrap();
    cache
}

fn decode_step(c: &mut Criterion) {
    let attn = attention();
    let x = randn(&[1, 1, D], 7);
    let mut g = c.benchmark_group("decode_step");
    g.sample_size(20);
    for n in [64, 256, 1024] {
        let prefix = randn(&[1, n, D], n as u64);
        g.bench_with_input(BenchmarkId::new("concat", n), &n, |b, _| {
            b.iter_batched(
                || filled(ConcatCache::new(), &attn, &prefix),
                |mut cache| attn.self_attention(&x, Some(&mut cache), Mask::Causal).unwrap().eval().unwrap(),
                BatchSize::PerIteration,
            )
        });
        g.bench_with_input(BenchmarkId::new("preallocated", n), &n, |b, _| {
            b.iter_batched(
                || filled(PreallocCache::new(n + 64), &attn, &prefix),
                |mut cache| attn.self_attention(&x, Some(&mut cache), Mask::Causal).unwrap().eval().unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn cross_attention(c: &mut Criterion) {
    let attn = attention();
    let xa = randn(&[1, 1500, D], 3);
    let x = randn(&[1, 1, D], 4);
    let mut warm = CrossKvCache::new();
    attn.cross_attention(&x, &xa, Some(&mut warm)).unwrap().eval().unwrap();
    let mut g = c.benchmark_group("cross_attention_step");
    g.sample_size(20);
    g.bench_function("recomputed", |b| b.iter(|| attn.cross_attention(&x, &xa, None).unwrap().eval().unwrap()));
    g.bench_function("cached", |b| b.iter(|| attn.cross_attention(&x, &xa, Some(&mut warm)).unwrap().eval().unwrap()));
    g.finish();
}

fn eval_interval(c: &mut Criterion) {
    let attn = attention();
    let x0 = randn(&[1, 1, D], 5);
    let mut g = c.benchmark_group("decode_64_steps");
    g.sample_size(10);
    for every in [1, 8] {
        g.bench_with_input(BenchmarkId::new("eval_every", every), &every, |b, &every| {
            b.iter_batched(
                || PreallocCache::new(128),
                |mut cache| {
                    let mut x = x0.clone();
                    for step in 0..64 {
                        x = attn.self_attention(&x, Some(&mut cache), Mask::Causal).unwrap().index((.., -1.., ..));
                        if (step + 1) % every == 0 {
                            x.eval().unwrap();
                        }
                    }
                    x.eval().unwrap();
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, decode_step, cross_attention, eval_interval);
criterion_main!(benches);
