//! The MLX operations the five models rely on, each checked against values computed without MLX
//! (`fixtures/ops/ops.safetensors`, written by numpy from textbook definitions by
//! `fixtures/ops/make_ops_fixtures.py`) or against closed forms.
use std::collections::HashMap;

use mlx_rs::fast::ScaledDotProductAttentionMask;
use mlx_rs::fft::{fft, ifft, irfft, rfft};
use mlx_rs::ops::indexing::{argmax_axis, topk_axis, IndexOp};
use mlx_rs::{complex64, nn, ops, random, Array, Dtype};
use models::nn::{conv, lstm::LstmLayer, norm, ops as nnops};

fn fixtures() -> HashMap<String, Array> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/ops/ops.safetensors");
    Array::load_safetensors(path).unwrap_or_else(|e| panic!("loading {path}: {e:?}"))
}

fn get<'a>(f: &'a HashMap<String, Array>, name: &str) -> &'a Array {
    f.get(name).unwrap_or_else(|| panic!("fixture tensor {name} missing"))
}

fn to_f32(a: &Array) -> Vec<f32> {
    let a = a.as_dtype(Dtype::Float32).unwrap().reshape(&[-1]).unwrap();
    a.eval().unwrap();
    a.as_slice::<f32>().to_vec()
}

fn to_i32(a: &Array) -> Vec<i32> {
    let a = a.as_dtype(Dtype::Int32).unwrap().reshape(&[-1]).unwrap();
    a.eval().unwrap();
    a.as_slice::<i32>().to_vec()
}

/// |got - want| <= atol + rtol * |want| everywhere, with matching shapes.
#[track_caller]
fn assert_close(what: &str, got: &Array, want: &Array, atol: f32, rtol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (to_f32(got), to_f32(want));
    let mut worst = (0.0f32, 0usize);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let excess = (a - b).abs() - (atol + rtol * b.abs());
        assert!(!a.is_nan(), "{what}: NaN at {i}");
        if excess > worst.0 {
            worst = (excess, i);
        }
    }
    assert!(worst.0 <= 0.0, "{what}: element {} is {} but should be {}", worst.1, g[worst.1], w[worst.1]);
}

#[test]
#[should_panic(expected = "should be")]
fn assert_close_catches_a_mismatch() {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]);
    let b = Array::from_slice(&[1.0f32, 2.0, 3.001], &[3]);
    assert_close("mismatch", &a, &b, 1e-5, 1e-5);
}

fn params(f: &HashMap<String, Array>, name: &str) -> Vec<i32> {
    to_i32(get(f, name))
}

#[test]
fn matmul_batched() {
    let f = fixtures();
    let out = get(&f, "matmul.a").matmul(get(&f, "matmul.b")).unwrap();
    assert_close("matmul", &out, get(&f, "matmul.out"), 1e-5, 1e-5);
}

#[test]
fn conv1d_padding_stride_dilation_groups() {
    let f = fixtures();
    for case in ["plain", "pad_stride", "dilation", "groups", "depthwise"] {
        let p = params(&f, &format!("conv1d.{case}.params"));
        let x = get(&f, &format!("conv1d.{case}.x"));
        let w = get(&f, &format!("conv1d.{case}.w"));
        let out = ops::conv1d(x, w, p[0], p[1], p[2], p[3]).unwrap();
        assert_close(&format!("conv1d {case}"), &out, get(&f, &format!("conv1d.{case}.out")), 1e-4, 1e-4);
    }
}

#[test]
fn conv2d_padding_stride_dilation_groups() {
    let f = fixtures();
    for case in ["plain", "pad_stride", "dilation_groups"] {
        let p = params(&f, &format!("conv2d.{case}.params"));
        let x = get(&f, &format!("conv2d.{case}.x"));
        let w = get(&f, &format!("conv2d.{case}.w"));
        let out = ops::conv2d(x, w, (p[0], p[1]), (p[2], p[3]), (p[4], p[5]), p[6]).unwrap();
        assert_close(&format!("conv2d {case}"), &out, get(&f, &format!("conv2d.{case}.out")), 1e-4, 1e-4);
    }
}

#[test]
fn conv1d_from_torch_layout() {
    // A PyTorch [out, in, k] weight converted by our loader helper gives the same conv.
    let f = fixtures();
    let w = get(&f, "conv1d.pad_stride.w");
    let torch_layout = w.transpose_axes(&[0, 2, 1]).unwrap();
    let back = conv::conv_weight_from_torch(&torch_layout).unwrap();
    assert_close("conv weight round trip", &back, w, 0.0, 0.0);
}

#[test]
fn conv_transpose1d_with_torch_weights() {
    let f = fixtures();
    for case in ["plain", "stride", "dilation", "groups"] {
        let p = params(&f, &format!("convt1d.{case}.params"));
        let x = get(&f, &format!("convt1d.{case}.x"));
        let w = conv::conv_transpose1d_weight_from_torch(get(&f, &format!("convt1d.{case}.w_torch")), p[3]).unwrap();
        let out = ops::conv_transpose1d(x, &w, p[0], p[1], p[2], 0, p[3]).unwrap();
        assert_close(&format!("conv_transpose1d {case}"), &out, get(&f, &format!("convt1d.{case}.out")), 1e-4, 1e-4);
    }
}

fn complex(re: &Array, im: &Array) -> Array {
    let j = Array::from_complex(complex64::new(0.0, 1.0));
    re.as_dtype(Dtype::Complex64).unwrap().add(im.multiply(&j).unwrap()).unwrap()
}

#[test]
fn rfft_matches_numpy() {
    let f = fixtures();
    for n in [16, 400, 4096] {
        let x = get(&f, &format!("rfft.{n}.x"));
        let spec = rfft(x, None, -1).unwrap();
        // Values grow like sqrt(n); scale the absolute tolerance with it.
        let atol = 2e-5 * (n as f32).sqrt();
        assert_close(&format!("rfft {n} re"), &spec.real().unwrap(), get(&f, &format!("rfft.{n}.re")), atol, 1e-4);
        assert_close(&format!("rfft {n} im"), &spec.imag().unwrap(), get(&f, &format!("rfft.{n}.im")), atol, 1e-4);
    }
}

#[test]
fn fft_ifft_irfft_match_numpy() {
    let f = fixtures();
    let z = complex(get(&f, "fft.x_re"), get(&f, "fft.x_im"));
    let spec = fft(&z, None, -1).unwrap();
    assert_close("fft re", &spec.real().unwrap(), get(&f, "fft.re"), 1e-4, 1e-4);
    assert_close("fft im", &spec.imag().unwrap(), get(&f, "fft.im"), 1e-4, 1e-4);
    let inv = ifft(&z, None, -1).unwrap();
    assert_close("ifft re", &inv.real().unwrap(), get(&f, "ifft.re"), 1e-5, 1e-4);
    assert_close("ifft im", &inv.imag().unwrap(), get(&f, "ifft.im"), 1e-5, 1e-4);
    let s = complex(get(&f, "irfft.re"), get(&f, "irfft.im"));
    let back = irfft(&s, 512, -1).unwrap();
    assert_close("irfft", &back, get(&f, "irfft.out"), 1e-5, 1e-4);
}

/// The devices this libmlx can compute on: the CPU, and the GPU where there is one.
fn devices() -> Vec<models::runtime::DeviceKind> {
    use models::runtime::{gpu_available, DeviceKind};
    let mut d = vec![DeviceKind::Cpu];
    if gpu_available() {
        d.push(DeviceKind::Gpu);
    }
    d
}

#[test]
fn irfft_ignores_the_imaginary_parts_of_dc_and_nyquist_on_every_device() {
    let f = fixtures();
    // MLX's default device is process-wide: on a machine with a GPU, run this suite with
    // --test-threads=1 so no other test runs while it is switched.
    let before = models::runtime::default_device_kind().unwrap();
    for kind in devices() {
        mlx_rs::Device::set_default(&kind.device());
        for n in [16, 15, 4096] {
            let z = complex(get(&f, &format!("irfft_edges.{n}.re")), get(&f, &format!("irfft_edges.{n}.im")));
            let out = nnops::irfft_real_edges(&z, n).unwrap();
            // Values are O(1 / sqrt(n)) sums of n terms.
            assert_close(&format!("irfft_real_edges {n} on {kind}"), &out, get(&f, &format!("irfft_edges.{n}.out")), 1e-5, 1e-4);
        }
        let wrong = nnops::irfft_real_edges(&complex(get(&f, "irfft_edges.16.re"), get(&f, "irfft_edges.16.im")), 20);
        assert!(wrong.unwrap_err().to_string().contains("needs 11 bins"), "a size mismatch is refused on {kind}");
    }
    mlx_rs::Device::set_default(&before.device());
}

#[test]
fn sdpa_with_and_without_mask() {
    let f = fixtures();
    let (q, k, v) = (get(&f, "sdpa.q"), get(&f, "sdpa.k"), get(&f, "sdpa.v"));
    let scale = 1.0 / 8f32.sqrt();
    let out = mlx_rs::fast::scaled_dot_product_attention(q, k, v, scale, None, None).unwrap();
    assert_close("sdpa", &out, get(&f, "sdpa.out"), 1e-5, 1e-4);
    let mask = get(&f, "sdpa.mask");
    let masked = mlx_rs::fast::scaled_dot_product_attention(q, k, v, scale, ScaledDotProductAttentionMask::Array(mask), None).unwrap();
    assert_close("sdpa masked", &masked, get(&f, "sdpa.out_masked"), 1e-5, 1e-4);
    let causal = mlx_rs::fast::scaled_dot_product_attention(q, k, v, scale, ScaledDotProductAttentionMask::Causal, None).unwrap();
    assert_close("sdpa causal mode", &causal, get(&f, "sdpa.out_masked"), 1e-5, 1e-4);
    let (qd, kd, vd) = (get(&f, "sdpa_decode.q"), get(&f, "sdpa_decode.k"), get(&f, "sdpa_decode.v"));
    let dec = mlx_rs::fast::scaled_dot_product_attention(qd, kd, vd, 0.25, None, None).unwrap();
    assert_close("sdpa decode step", &dec, get(&f, "sdpa_decode.out"), 1e-5, 1e-4);
}

#[test]
fn layer_norm_and_group_norm() {
    let f = fixtures();
    let ln = norm::layer_norm(get(&f, "layer_norm.x"), Some(get(&f, "layer_norm.w")), Some(get(&f, "layer_norm.b")), 1e-5).unwrap();
    assert_close("layer_norm", &ln, get(&f, "layer_norm.out"), 1e-5, 1e-4);
    let gn = norm::group_norm(get(&f, "group_norm.x"), 4, Some(get(&f, "group_norm.w")), Some(get(&f, "group_norm.b")), 1e-5).unwrap();
    assert_close("group_norm", &gn, get(&f, "group_norm.out"), 1e-5, 1e-4);
    assert!(norm::group_norm(get(&f, "group_norm.x"), 3, None, None, 1e-5).is_err(), "8 channels in 3 groups must be refused");
}

#[test]
fn activations() {
    let f = fixtures();
    let x = get(&f, "act.x");
    assert_close("gelu", &nn::gelu(x).unwrap(), get(&f, "act.gelu"), 1e-5, 1e-4);
    assert_close("gelu tanh", &nn::gelu_approximate(x).unwrap(), get(&f, "act.gelu_tanh"), 1e-5, 1e-4);
    assert_close("silu", &nn::silu(x).unwrap(), get(&f, "act.silu"), 1e-5, 1e-4);
    assert_close("glu", &nnops::glu(get(&f, "glu.x")).unwrap(), get(&f, "glu.out"), 1e-5, 1e-4);
}

#[test]
fn lstm_gate_math() {
    let f = fixtures();
    let layer = LstmLayer::new(get(&f, "lstm.w_ih").clone(), get(&f, "lstm.w_hh").clone(), get(&f, "lstm.b_ih"), get(&f, "lstm.b_hh")).unwrap();
    let (out, h, c) = layer.forward(get(&f, "lstm.x")).unwrap();
    assert_close("lstm out", &out, get(&f, "lstm.out"), 1e-5, 1e-4);
    assert_close("lstm h", &h, get(&f, "lstm.h"), 1e-5, 1e-4);
    assert_close("lstm c", &c, get(&f, "lstm.c"), 1e-5, 1e-4);
    let bad = ops::zeros::<f32>(&[6, 2, 3]).unwrap();
    assert!(layer.forward(&bad).is_err(), "wrong input width must be refused");
}

/// Every recurrence against torch.nn.LSTM on every device (on the CPU and Metal, `Fused` runs
/// as the compiled wavefront); on a CUDA GPU the fused kernel also against the step-by-step ops
/// at EnCodec 32 kHz's size (2 x 1024 over 250 steps), batched, and from a carried state.
#[test]
fn lstm_recurrences_match_torch_on_every_device() {
    use models::nn::lstm::{forward_stack, Recurrence};
    let f = fixtures();
    let before = models::runtime::default_device_kind().unwrap();
    let w = |seed: u64, shape: &[i32], scale: f32| mlx_rs::random::normal::<f32>(shape, None, None, &mlx_rs::random::key(seed).unwrap()).unwrap().multiply(mlx_rs::array!(scale)).unwrap();
    // The GPU first: on the CUDA machine's image MLX's CPU compiler (g++ JIT) may be unusable.
    for kind in devices().into_iter().rev() {
        mlx_rs::Device::set_default(&kind.device());
        let layer = LstmLayer::new(get(&f, "lstm.w_ih").clone(), get(&f, "lstm.w_hh").clone(), get(&f, "lstm.b_ih"), get(&f, "lstm.b_hh")).unwrap();
        for rec in [Recurrence::Ops, Recurrence::Compiled, Recurrence::Fused] {
            let (out, state) = forward_stack(std::slice::from_ref(&layer), get(&f, "lstm.x"), None, rec).unwrap();
            assert_close(&format!("lstm out, {rec:?} on {kind}"), &out, get(&f, "lstm.out"), 1e-5, 1e-4);
            assert_close(&format!("lstm h, {rec:?} on {kind}"), &state[0].0, get(&f, "lstm.h"), 1e-5, 1e-4);
            assert_close(&format!("lstm c, {rec:?} on {kind}"), &state[0].1, get(&f, "lstm.c"), 1e-5, 1e-4);
        }
        let fused_here = models::nn::lstm_cuda::available();
        println!("{kind}: fused CUDA kernel {}", if fused_here { "runs" } else { "not available, Fused runs as the compiled wavefront" });
        for (hidden, batch, steps, with_state) in [(1024, 1, 250, false), (100, 3, 7, true), (6, 2, 1, true), (512, 8, 40, false)] {
            let scale = 1.0 / (hidden as f32).sqrt();
            let layers: Vec<LstmLayer> = (0..2u64)
                .map(|l| {
                    LstmLayer::new(w(10 * l, &[4 * hidden, hidden], scale), w(10 * l + 1, &[4 * hidden, hidden], scale), &w(10 * l + 2, &[4 * hidden], scale), &w(10 * l + 3, &[4 * hidden], scale))
                        .unwrap()
                })
                .collect();
            let x = w(99, &[steps, batch, hidden], 1.0);
            let state: Vec<(Array, Array)> = (0..2u64).map(|l| (w(50 + l, &[batch, hidden], 0.5), w(60 + l, &[batch, hidden], 0.5))).collect();
            let st = with_state.then_some(&state[..]);
            let (ya, sa) = forward_stack(&layers, &x, st, Recurrence::Ops).unwrap();
            let (yb, sb) = forward_stack(&layers, &x, st, Recurrence::Fused).unwrap();
            let what = format!("{hidden} units x {batch} rows x {steps} steps on {kind}");
            assert_close(&format!("fused y, {what}"), &yb, &ya, 1e-5, 1e-4);
            for (l, ((ha, ca), (hb, cb))) in sa.iter().zip(&sb).enumerate() {
                assert_close(&format!("fused h of layer {l}, {what}"), hb, ha, 1e-5, 1e-4);
                assert_close(&format!("fused c of layer {l}, {what}"), cb, ca, 1e-5, 1e-4);
            }
        }
    }
    mlx_rs::Device::set_default(&before.device());
}

/// A decoder layer for one position as one CUDA kernel (`nn::layer_cuda`, issue 21) against
/// the same layers op by op, through a decode's state: a 3-position prompt op by op, then single
/// positions without evaluating between them (as the GPU's eval-every-8 decode does), for a
/// MusicGen-like stack (no biases, guidance's 2 rows, with and without a padding mask over the
/// text), a Whisper-like one (biases, 5 beams over 150 encoder positions), a stack without
/// cross-attention (MusicGen Melody), one as small as the fixtures' (rows shorter than a warp's
/// reach, 24-wide heads), and a cache too small for the steps (the kernel hands the
/// steps past its capacity back to the layers, which grow it). Where the kernel cannot run
/// (the CPU) both paths are the layers op by op and must agree exactly.
#[test]
fn decoder_layer_kernel_matches_the_layers_on_every_device() {
    use models::nn::attention::{Mask, MultiHeadAttention};
    use models::nn::decoder::{DecodeOptions, DecodeState, DecoderLayer};
    use models::nn::layer_cuda;
    use models::nn::linear::Linear;
    let before = models::runtime::default_device_kind().unwrap();
    let w = |seed: u64, shape: &[i32], scale: f32| random::normal::<f32>(shape, None, None, &random::key(seed).unwrap()).unwrap().multiply(mlx_rs::array!(scale)).unwrap();
    // The GPU first: on the CUDA machine's image MLX's CPU compiler (g++ JIT) may be unusable.
    for kind in devices().into_iter().rev() {
        mlx_rs::Device::set_default(&kind.device());
        let kernel_here = layer_cuda::available();
        println!("{kind}: decoder layer kernel {}", if kernel_here { "runs" } else { "not available, every step runs op by op" });
        // (width, heads, ffn, batch, encoder positions (0: no cross-attention), biases, mask, cache capacity)
        for (d, heads, ffn, batch, enc, bias, masked, capacity) in [
            (256, 4, 1024, 2, 12, false, false, 16),
            (256, 4, 1024, 2, 12, false, true, 16),
            (384, 6, 1536, 5, 150, true, false, 16),
            (256, 4, 512, 1, 0, false, false, 16),
            (256, 4, 1024, 2, 12, false, false, 6),
            (48, 2, 160, 3, 30, true, true, 16),
            (128, 2, 512, 8, 40, true, false, 16),
        ] {
            let seed = (d + heads + ffn + batch + enc) as u64 * 100 + capacity as u64;
            let lin = |s: u64, out: i32, inp: i32, b: bool| Linear::new(w(s, &[out, inp], 1.0 / (inp as f32).sqrt()), b.then(|| w(s + 1, &[out], 0.1))).unwrap();
            let attn = |s: u64| MultiHeadAttention {
                query: lin(s, d, d, bias),
                key: lin(s + 2, d, d, false),
                value: lin(s + 4, d, d, bias),
                out: lin(s + 6, d, d, bias),
                n_head: heads,
                qkv: None,
            };
            let ln = |s: u64| norm::LayerNorm { weight: w(s, &[d], 0.2).add(mlx_rs::array!(1.0f32)).unwrap(), bias: w(s + 1, &[d], 0.1) };
            let layers: Vec<DecoderLayer> = (0..2u64)
                .map(|l| {
                    let s = seed + 1000 * l;
                    let mut a = attn(s);
                    a.fuse_qkv().unwrap();
                    DecoderLayer {
                        attn: a,
                        attn_ln: ln(s + 10),
                        cross: (enc > 0).then(|| (attn(s + 20), ln(s + 30))),
                        fc1: lin(s + 40, ffn, d, bias),
                        fc2: lin(s + 42, d, ffn, bias),
                        ff_ln: ln(s + 50),
                    }
                })
                .collect();
            let xa = w(seed + 7, &[batch, enc.max(1), d], 1.0);
            // The last row masked over its last third (0 or f32::MIN, as HF's padding mask).
            let mask = ops::concatenate(
                &[ops::zeros::<f32>(&[batch - 1, 1, 1, enc.max(1)]).unwrap(), Array::from_iter((0..enc.max(1)).map(|i| if 3 * i >= 2 * enc { f32::MIN } else { 0.0 }), &[1, 1, 1, enc.max(1)])],
                0,
            )
            .unwrap();
            let mask = if masked { Mask::Additive(&mask) } else { Mask::None };
            let prompt = w(seed + 8, &[batch, 3, d], 1.0);
            let steps: Vec<Array> = (0..7u64).map(|t| w(seed + 9 + t, &[batch, 1, d], 1.0)).collect();
            let run = |fused: bool| -> Vec<Array> {
                let mut state = DecodeState::new(layers.len(), &DecodeOptions { fused_layer: fused, ..DecodeOptions::optimized() }, capacity);
                let mut outs = vec![state.forward_layers(&layers, &prompt, &xa, mask).unwrap()];
                for x in &steps {
                    outs.push(state.forward_layers(&layers, x, &xa, mask).unwrap());
                }
                mlx_rs::transforms::eval(outs.iter()).unwrap();
                outs
            };
            let before_launches = layer_cuda::launches();
            let fused = run(true);
            let launched = layer_cuda::launches() - before_launches;
            let plain = run(false);
            let what = format!("{d} wide, {heads} heads, {batch} rows, {enc} encoder positions, bias {bias}, mask {masked}, capacity {capacity} on {kind}");
            // The prompt's 3 positions run op by op, and so does the step that outgrows the
            // cache (it grows it, by 256 positions); every other step runs the kernel.
            let grows = u64::from(capacity - 3 < steps.len() as i32);
            assert_eq!(launched, if kernel_here { 2 * (steps.len() as u64 - grows) } else { 0 }, "{what}: layer kernels launched");
            for (t, (a, b)) in fused.iter().zip(&plain).enumerate() {
                if kernel_here {
                    assert_close(&format!("step {t}, {what}"), a, b, 1e-4, 1e-4);
                } else {
                    assert_eq!(to_f32(a), to_f32(b), "step {t}, {what}");
                }
            }
        }
    }
    mlx_rs::Device::set_default(&before.device());
}

#[test]
fn take_and_take_along_axis() {
    let f = fixtures();
    let out = get(&f, "take.table").take_axis(get(&f, "take.idx"), 0).unwrap();
    assert_close("embedding take", &out, get(&f, "take.out"), 0.0, 0.0);
    let out = get(&f, "take_along.src").take_along_axis(get(&f, "take_along.idx"), 1).unwrap();
    assert_close("take_along_axis", &out, get(&f, "take_along.out"), 0.0, 0.0);
}

#[test]
fn softmax_and_log_softmax_are_stable() {
    let f = fixtures();
    let x = get(&f, "softmax.x");
    assert_close("softmax", &ops::softmax_axis(x, -1, None).unwrap(), get(&f, "softmax.out"), 1e-6, 1e-4);
    assert_close("log_softmax", &nn::log_softmax(x, -1).unwrap(), get(&f, "log_softmax.out"), 1e-4, 1e-5);
}

#[test]
fn argmax_and_topk() {
    let f = fixtures();
    let x = get(&f, "argmax.x");
    assert_eq!(to_i32(&argmax_axis(x, -1, None).unwrap()), to_i32(get(&f, "argmax.out")));
    // MLX's top-k does not promise an order: sort descending before comparing.
    let top = topk_axis(x, 7, -1).unwrap();
    let sorted = ops::negative(ops::sort_axis(ops::negative(&top).unwrap(), -1).unwrap()).unwrap();
    assert_close("topk", &sorted, get(&f, "topk.out_sorted"), 0.0, 0.0);
}

#[test]
fn slice_update_fills_a_preallocated_cache() {
    let f = fixtures();
    let steps = get(&f, "slice_update.steps");
    let mut cache = ops::zeros::<f32>(&[1, 2, 8, 3]).unwrap();
    for t in 0..4 {
        cache = nnops::slice_update(&cache, &steps.index(t), &[0, 0, t, 0], &[1, 2, t + 1, 3]).unwrap();
    }
    assert_close("slice_update", &cache, get(&f, "slice_update.out"), 0.0, 0.0);
    let err = nnops::slice_update(&cache, &steps.index(0), &[0, 0], &[1, 2]);
    assert!(err.is_err(), "bounds of the wrong rank must be refused");
}

/// Seeded random: same key, same numbers; different keys differ; moments and frequencies match
/// their closed forms within many standard errors.
#[test]
fn seeded_random() {
    let n = 200_000;
    let k = random::key(42).unwrap();
    let a = to_f32(&random::uniform::<_, f32>(0.0, 1.0, &[n], &k).unwrap());
    let b = to_f32(&random::uniform::<_, f32>(0.0, 1.0, &[n], &k).unwrap());
    assert_eq!(a, b, "same key must give the same numbers");
    let c = to_f32(&random::uniform::<_, f32>(0.0, 1.0, &[n], &random::key(43).unwrap()).unwrap());
    assert_ne!(a, c);
    assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
    let nf = n as f64;
    let mean = a.iter().map(|&v| v as f64).sum::<f64>() / nf;
    let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / nf;
    // Standard error of the mean is sqrt(1/12 / n) ~ 6.5e-4; allow 6 of them.
    assert!((mean - 0.5).abs() < 6.0 * (1.0 / 12.0 / nf).sqrt(), "uniform mean {mean}");
    assert!((var - 1.0 / 12.0).abs() < 2e-3, "uniform variance {var}");

    let z = to_f32(&random::normal::<f32>(&[n], None, None, &k).unwrap());
    let zm = z.iter().map(|&v| v as f64).sum::<f64>() / nf;
    let zv = z.iter().map(|&v| (v as f64 - zm).powi(2)).sum::<f64>() / nf;
    assert!(zm.abs() < 6.0 / nf.sqrt(), "normal mean {zm}");
    assert!((zv - 1.0).abs() < 0.02, "normal variance {zv}");

    // Categorical sampling, as the MusicGen sampler uses it: frequencies follow softmax(logits).
    let p = [0.1f64, 0.2, 0.3, 0.4];
    let logits = Array::from_slice(&p.map(|v| v.ln() as f32), &[4]);
    let draws = to_i32(&random::categorical(&logits, -1, random::ShapeOrCount::Count(n), &k).unwrap());
    for (cat, want) in p.iter().enumerate() {
        let got = draws.iter().filter(|&&d| d == cat as i32).count() as f64 / nf;
        let se = (want * (1.0 - want) / nf).sqrt();
        assert!((got - want).abs() < 6.0 * se, "category {cat}: frequency {got}, expected {want}");
    }
}

/// Every test binary must run MLX's CPU matmul on OpenBLAS, not the wheel's reference BLAS.
#[test]
#[cfg(target_os = "linux")]
fn matmul_runs_on_openblas() {
    let blas = models::runtime::blas_info().expect("some BLAS must be loaded");
    assert!(blas.is_openblas(), "BLAS in use: {}", blas.describe());
}

/// Products of 2 to 4 rows against a weight stored as `[n, k]` (MLX's `x @ w.T`, the decode
/// steps' shape): on Linux x86-64 the GEMV shim runs them on its own kernel, which reads each
/// weight row once for all rows. Against a float64 reference: blocks of 4 output columns and
/// the columns left over, inner sizes around the 16-float vector and its tail, products large
/// enough to be split over threads, and `addmm`'s alpha and beta (beta 0 must not read the
/// output).
#[test]
fn few_row_products_against_a_transposed_weight() {
    let data = |n: usize, seed: u64| -> Vec<f32> { (0..n).map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0).collect() };
    for (m, k, n) in [(2, 1, 1), (2, 15, 5), (3, 16, 4), (4, 17, 9), (2, 37, 53), (3, 100, 7), (4, 64, 130), (2, 1027, 515), (3, 131, 2051), (4, 1024, 1024)] {
        let a = data(m * k, 3);
        let w = data(n * k, 4);
        let c0 = data(m * n, 5);
        let dot = |i: usize, j: usize| -> f64 { (0..k).map(|p| f64::from(a[i * k + p]) * f64::from(w[j * k + p])).sum() };
        let (mi, ki, ni) = (m as i32, k as i32, n as i32);
        let a_arr = Array::from_slice(&a, &[mi, ki]);
        let w_arr = Array::from_slice(&w, &[ni, ki]);
        let c_arr = Array::from_slice(&c0, &[mi, ni]);
        // A product's rounding grows with the inner size.
        let tol = 1e-5 * (k as f64).sqrt().max(1.0) * 4.0;
        for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 2.0), (-1.5, 1.0)] {
            let got = if beta == 0.0 { a_arr.matmul(w_arr.t()).unwrap() } else { ops::addmm(&c_arr, &a_arr, w_arr.t(), alpha, beta).unwrap() };
            got.eval().unwrap();
            assert_eq!(got.shape(), &[mi, ni]);
            let alpha = if beta == 0.0 { 1.0 } else { alpha };
            for (ij, g) in got.as_slice::<f32>().iter().enumerate() {
                let want = f64::from(alpha) * dot(ij / n, ij % n) + f64::from(beta) * f64::from(c0[ij]);
                assert!(g.is_finite() && (f64::from(*g) - want).abs() < tol * (1.0 + want.abs()), "{m}x{k} . ({n}x{k})^T, alpha {alpha} beta {beta}, element {ij}: {g} vs {want}");
            }
        }
    }
}

/// Matrix products with a vector operand, every transpose combination, against a float64
/// reference: on Linux these (and products of up to 4 rows) go through the GEMV shim in front
/// of OpenBLAS.
#[test]
fn matrix_vector_products_in_every_layout() {
    let info = models::runtime::blas_info();
    if cfg!(target_os = "linux") {
        let info = info.expect("a BLAS is loaded");
        assert!(info.gemv_shim && info.is_openblas(), "{info:?}");
    }
    let data = |n: usize, seed: u64| -> Vec<f32> { (0..n).map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0).collect() };
    for (m, k, n) in [(1, 37, 53), (53, 37, 1), (1, 1, 9), (9, 1, 1), (1, 64, 1), (2, 37, 53), (3, 64, 7), (4, 5, 6), (5, 9, 11)] {
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let want: Vec<f64> = (0..m * n).map(|ij| (0..k).map(|p| f64::from(a[(ij / n) * k + p]) * f64::from(b[p * n + ij % n])).sum()).collect();
        let (mi, ki, ni) = (m as i32, k as i32, n as i32);
        let a_arr = Array::from_slice(&a, &[mi, ki]);
        let b_arr = Array::from_slice(&b, &[ki, ni]);
        // The same logical operands stored transposed: MLX passes them to BLAS with Trans.
        let a_t = a_arr.t().contiguous().unwrap().t();
        let b_t = b_arr.t().contiguous().unwrap().t();
        for (x, y) in [(&a_arr, &b_arr), (&a_t, &b_arr), (&a_arr, &b_t), (&a_t, &b_t)] {
            let c = x.matmul(y).unwrap();
            c.eval().unwrap();
            let got = c.as_slice::<f32>();
            for (g, w) in got.iter().zip(&want) {
                assert!((f64::from(*g) - w).abs() < 1e-4, "({m}x{k})·({k}x{n}): {g} vs {w}");
            }
        }
    }
}
