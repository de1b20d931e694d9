//! The decode optimizations must not change results: token-by-token decoding through either
//! cache equals one full causal pass, cached cross-attention equals recomputed, and the fused
//! kernel equals the explicit one.
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, random, Array, Dtype};
use models::nn::attention::{AttentionKernel, CrossKvCache, Mask, MultiHeadAttention};
use models::nn::kv_cache::{new_cache, KvCache, KvCacheKind, PreallocCache};
use models::nn::linear::Linear;

fn randn(shape: &[i32], seed: u64) -> Array {
    random::normal::<f32>(shape, None, None, &random::key(seed).unwrap()).unwrap()
}

fn mha(d: i32, heads: i32) -> MultiHeadAttention {
    let lin = |s, bias: bool| Linear::new(randn(&[d, d], s).multiply(mlx_rs::array!(0.2f32)).unwrap(), bias.then(|| randn(&[d], s + 100))).unwrap();
    MultiHeadAttention {
        query: lin(1, true),
        key: lin(2, false),
        value: lin(3, true),
        out: lin(4, true),
        n_head: heads,
        qkv: None,
    }
}

fn max_abs_diff(a: &Array, b: &Array) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let d = a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().as_dtype(Dtype::Float32).unwrap();
    d.item_exact::<f32>()
}

/// The stacked query/key/value product (the optimized decoders') gives the three separate
/// products' result, full pass and token by token through a cache, and leaves the three
/// projections as they were (views of the stack).
#[test]
fn stacked_qkv_projection_matches_three_products() {
    let plain = mha(32, 4);
    let mut fused = plain.clone();
    fused.fuse_qkv().unwrap();
    assert!(fused.qkv.is_some());
    let x = randn(&[2, 9, 32], 17);
    for (a, b) in [(&plain.query, &fused.query), (&plain.key, &fused.key), (&plain.value, &fused.value)] {
        assert_eq!(max_abs_diff(&a.forward(&x).unwrap(), &b.forward(&x).unwrap()), 0.0);
    }
    let want = plain.self_attention(&x, None, Mask::Causal, AttentionKernel::Fused).unwrap();
    let got = fused.self_attention(&x, None, Mask::Causal, AttentionKernel::Fused).unwrap();
    let err = max_abs_diff(&got, &want);
    assert!(err < 1e-5, "full pass: max error {err}");
    let mut cache = new_cache(KvCacheKind::Preallocated, 16);
    let mut outs = vec![fused.self_attention(&x.index((.., ..4, ..)), Some(cache.as_mut()), Mask::Causal, AttentionKernel::Fused).unwrap()];
    for t in 4..9 {
        outs.push(fused.self_attention(&x.index((.., t..t + 1, ..)), Some(cache.as_mut()), Mask::Causal, AttentionKernel::Fused).unwrap());
    }
    let err = max_abs_diff(&ops::concatenate(&outs, 1).unwrap(), &want);
    assert!(err < 1e-5, "token by token: max error {err}");
    // The naive path (explicit attention) keeps the three products, with the same result.
    let naive = fused.self_attention(&x, None, Mask::Causal, AttentionKernel::Explicit).unwrap();
    assert!(max_abs_diff(&naive, &want) < 1e-5);
}

#[test]
fn incremental_decoding_matches_full_pass_for_both_caches() {
    let attn = mha(32, 4);
    let x = randn(&[2, 9, 32], 7);
    let full = attn.self_attention(&x, None, Mask::Causal, AttentionKernel::Fused).unwrap();
    // A capacity below the sequence length also exercises the grow path.
    for (kind, capacity) in [(KvCacheKind::Concat, 0), (KvCacheKind::Preallocated, 16), (KvCacheKind::Preallocated, 3)] {
        let mut cache = new_cache(kind, capacity);
        // A 4-token prompt, then one token at a time.
        let mut outs = vec![attn.self_attention(&x.index((.., ..4, ..)), Some(cache.as_mut()), Mask::Causal, AttentionKernel::Fused).unwrap()];
        for t in 4..9 {
            outs.push(attn.self_attention(&x.index((.., t..t + 1, ..)), Some(cache.as_mut()), Mask::Causal, AttentionKernel::Fused).unwrap());
        }
        assert_eq!(cache.offset(), 9);
        let inc = ops::concatenate(&outs, 1).unwrap();
        let err = max_abs_diff(&inc, &full);
        assert!(err < 1e-5, "{kind:?} (capacity {capacity}): max error {err}");
    }
}

/// A staged cache (positions held apart between commits, attention over the two parts) gives
/// the full pass's result: with commits every few steps, past the in-graph commit bound
/// without them, across growth, and with beam-style row reordering on both parts.
#[test]
fn staged_cache_matches_full_pass() {
    let attn = mha(32, 4);
    let x = randn(&[2, 48, 32], 9);
    let full = attn.self_attention(&x, None, Mask::Causal, AttentionKernel::Fused).unwrap();
    for (commit_every, capacity) in [(Some(3), 64), (Some(1), 8), (None, 64), (Some(5), 4)] {
        let mut cache = PreallocCache::staged(capacity);
        let mut outs = vec![attn.self_attention(&x.index((.., ..4, ..)), Some(&mut cache), Mask::Causal, AttentionKernel::Fused).unwrap()];
        for t in 4..48 {
            outs.push(attn.self_attention(&x.index((.., t..t + 1, ..)), Some(&mut cache), Mask::Causal, AttentionKernel::Fused).unwrap());
            if commit_every.is_some_and(|n| (t + 1) % n == 0) {
                outs.last().unwrap().eval().unwrap();
                cache.commit().unwrap();
            }
        }
        assert_eq!(cache.offset(), 48);
        let err = max_abs_diff(&ops::concatenate(&outs, 1).unwrap(), &full);
        assert!(err < 1e-5, "commits every {commit_every:?} (capacity {capacity}): max error {err}");
    }
    // Swapping the two batch rows mid-sequence swaps them in what follows, pending part included.
    let mut cache = PreallocCache::staged(64);
    attn.self_attention(&x.index((.., ..4, ..)), Some(&mut cache), Mask::Causal, AttentionKernel::Fused).unwrap();
    for t in 4..7 {
        attn.self_attention(&x.index((.., t..t + 1, ..)), Some(&mut cache), Mask::Causal, AttentionKernel::Fused).unwrap();
    }
    cache.reorder(&Array::from_slice(&[1i32, 0], &[2])).unwrap();
    let swapped = ops::concatenate(&[x.index((1..2, ..8, ..)), x.index((0..1, ..8, ..))], 0).unwrap();
    let y = attn.self_attention(&swapped.index((.., 7..8, ..)), Some(&mut cache), Mask::Causal, AttentionKernel::Fused).unwrap();
    let want = attn.self_attention(&swapped, None, Mask::Causal, AttentionKernel::Fused).unwrap().index((.., 7..8, ..));
    assert!(max_abs_diff(&y, &want) < 1e-5);
}

#[test]
fn preallocated_cache_keeps_its_buffer_when_it_fits() {
    let mut cache = PreallocCache::new(32);
    for t in 0..5 {
        let k = randn(&[1, 2, 1, 4], t);
        let (kk, _) = cache.update_and_fetch(&k, &k).unwrap();
        assert_eq!(kk.shape(), &[1, 2, t as i32 + 1, 4]);
        assert_eq!(max_abs_diff(&kk.index((.., .., t as i32, ..)), &k.index((.., .., 0, ..))), 0.0);
    }
    assert_eq!(cache.capacity(), 32);
}

#[test]
fn cached_cross_attention_matches_recomputed() {
    let attn = mha(24, 3);
    let xa = randn(&[1, 11, 24], 5);
    let mut cross = CrossKvCache::new();
    for step in 0..3 {
        let x = randn(&[1, 1, 24], 50 + step);
        let naive = attn.cross_attention(&x, &xa, None, AttentionKernel::Fused).unwrap();
        let cached = attn.cross_attention(&x, &xa, Some(&mut cross), AttentionKernel::Fused).unwrap();
        assert!(cross.is_filled());
        assert!(max_abs_diff(&naive, &cached) < 1e-6);
    }
}

#[test]
fn explicit_kernel_matches_fused() {
    let attn = mha(16, 2);
    let x = randn(&[2, 6, 16], 9);
    for mask in [Mask::None, Mask::Causal] {
        let a = attn.self_attention(&x, None, mask, AttentionKernel::Fused).unwrap();
        let b = attn.self_attention(&x, None, mask, AttentionKernel::Explicit).unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-5);
    }
}

/// What the layer kernel (`nn::layer_cuda`) may write into in place: only a preallocated,
/// unstaged cache that has written positions of its own and has room; recording positions
/// written in place advances it, and past its capacity is refused. After such writes the
/// cache still updates through MLX as before (the writer is evaluated first).
#[test]
fn in_place_buffers_only_where_a_kernel_may_write() {
    let (k, v) = (randn(&[2, 4, 3, 8], 1), randn(&[2, 4, 3, 8], 2));
    let mut fresh = PreallocCache::new(5);
    assert!(fresh.in_place_buffers(1).is_none(), "nothing written yet: the buffers would be a broadcast zero");
    let mut staged = PreallocCache::staged(16);
    staged.update_and_fetch_parts(&k, &v).unwrap();
    assert!(staged.in_place_buffers(1).is_none(), "a staging cache");
    let mut concat = new_cache(KvCacheKind::Concat, 16);
    concat.update_and_fetch(&k, &v).unwrap();
    assert!(concat.in_place_buffers(1).is_none(), "a concatenating cache");
    assert!(concat.wrote_in_place(1, &k).is_err());

    let mut cache = PreallocCache::new(5);
    cache.update_and_fetch(&k, &v).unwrap();
    let (bk, bv) = cache.in_place_buffers(2).expect("3 of 5 used: room for 2");
    assert_eq!((bk.shape(), bv.shape()), (&[2, 4, 5, 8][..], &[2, 4, 5, 8][..]));
    assert!(cache.in_place_buffers(3).is_none(), "no room for 3");
    cache.wrote_in_place(2, &bk).unwrap();
    assert_eq!(cache.offset(), 5);
    assert!(cache.in_place_buffers(1).is_none(), "full");
    assert!(cache.wrote_in_place(1, &bk).is_err(), "past the capacity");
    // The next update through MLX grows the buffer and keeps every position.
    let (k1, v1) = (randn(&[2, 4, 1, 8], 3), randn(&[2, 4, 1, 8], 4));
    let (ak, _) = cache.update_and_fetch(&k1, &v1).unwrap();
    assert_eq!(ak.shape(), &[2, 4, 6, 8]);
    assert!(max_abs_diff(&ak.index((.., .., ..3, ..)), &k) == 0.0 && max_abs_diff(&ak.index((.., .., 5.., ..)), &k1) == 0.0);
}
