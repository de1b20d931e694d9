//! EnCodec beyond the reference fixtures' outputs: streaming decode against the full decode,
//! naive against optimized, and clear refusals of bad input and bad weights.

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};
use models::checkpoint::Checkpointed;
use models::config::ModelConfig;
use models::encodec::{Encodec, EncodecConfig};
use models::{weights, Variant};

mod common;
use common::fixture;

fn max_abs_diff(a: &Array, b: &Array) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>()
}

fn reference_codes(name: &str) -> Array {
    let inputs = weights::read_safetensors(&fixture(name).join("inputs.safetensors")).unwrap();
    let key = inputs.keys().filter(|k| k.starts_with("audio.codes@")).max_by_key(|k| inputs[*k].shape()[1]).unwrap().clone();
    inputs[&key].clone()
}

/// Stream `codes` through in chunks of `chunk` frames.
fn stream(model: &Encodec, codes: &Array, chunk: i32, variant: Variant) -> Array {
    let mut pushed = 0;
    let audio = model.streaming_decoder(variant).decode_in_chunks(codes, chunk, |_| pushed += 1).unwrap();
    assert_eq!(pushed, (codes.shape()[2] + chunk - 1) / chunk, "one callback per chunk");
    audio
}

#[test]
fn streaming_decode_equals_full_decode() {
    for name in ["encodec24k-s0", "encodec32k-s1"] {
        let model = Encodec::load_dir(&fixture(name)).unwrap();
        let codes = reference_codes(name);
        let full = model.decode(&codes, Variant::Optimized).unwrap();
        for chunk in [1, 2, 5, 64] {
            for variant in [Variant::Naive, Variant::Optimized] {
                let s = stream(&model, &codes, chunk, variant);
                let err = max_abs_diff(&s, &full);
                assert!(err < 1e-4, "{name} chunk {chunk} {variant:?}: streaming differs from full decode by {err}");
            }
        }
    }
}

#[test]
fn causal_model_streams_without_lookahead_and_noncausal_holds_back_frames() {
    let causal = Encodec::load_dir(&fixture("encodec24k-s0")).unwrap();
    let dec = causal.streaming_decoder(Variant::Optimized);
    assert_eq!(dec.latency_frames(), 0);
    let codes = reference_codes("encodec24k-s0");
    let mut dec = causal.streaming_decoder(Variant::Optimized);
    let hop = causal.config.hop_length();
    let got: Vec<i32> = (0..codes.shape()[2]).map(|t| dec.push(&codes.index((.., .., t..t + 1))).unwrap().shape()[2]).collect();
    // Reflect padding makes the first frames wait for a few more; after that every frame
    // in gives one hop of audio out at once.
    let start = got.iter().position(|&n| n > 0).unwrap();
    assert!(start as i64 <= dec.startup_frames(), "{got:?}");
    assert!(got[start + 1..].iter().all(|&n| n == hop), "{got:?}");

    let noncausal = Encodec::load_dir(&fixture("encodec32k-s0")).unwrap();
    let dec = noncausal.streaming_decoder(Variant::Optimized);
    assert!(dec.latency_frames() > 0 && dec.latency_frames() <= 6, "{}", dec.latency_frames());
}

#[test]
fn naive_and_optimized_agree() {
    let model = Encodec::load_dir(&fixture("encodec24k-s1")).unwrap();
    let audio = mlx_rs::random::normal::<f32>(&[1, 1, 3333], None, None, &mlx_rs::random::key(3).unwrap()).unwrap();
    let a = model.encode(&audio, Some(24.0), Variant::Naive).unwrap();
    let b = model.encode(&audio, Some(24.0), Variant::Optimized).unwrap();
    assert_eq!(a.shape(), &[1, 32, 11]);
    assert_eq!(max_abs_diff(&a.as_dtype(mlx_rs::Dtype::Float32).unwrap(), &b.as_dtype(mlx_rs::Dtype::Float32).unwrap()), 0.0);
    let x = model.decode(&a, Variant::Naive).unwrap();
    let y = model.decode(&a, Variant::Optimized).unwrap();
    assert_eq!(x.shape(), &[1, 1, 11 * 320]);
    assert!(max_abs_diff(&x, &y) < 1e-5);
    // A lower bandwidth uses a prefix of the codebooks.
    let low = model.encode(&audio, Some(6.0), Variant::Optimized).unwrap();
    assert_eq!(low.shape(), &[1, 8, 11]);
    assert_eq!(max_abs_diff(&low.as_dtype(mlx_rs::Dtype::Float32).unwrap(), &b.index((.., 0..8, ..)).as_dtype(mlx_rs::Dtype::Float32).unwrap()), 0.0);
}

#[test]
fn bad_audio_and_codes_are_refused_by_name() {
    let model = Encodec::load_dir(&fixture("encodec32k-s0")).unwrap();
    let err = |r: models::Result<Array>| r.expect_err("should fail").to_string();
    let nan = Array::from_slice(&[0.0f32, f32::NAN, 0.1], &[1, 1, 3]);
    assert!(err(model.encode(&nan, None, Variant::Optimized)).contains("NaN"));
    let empty = ops::zeros::<f32>(&[1, 1, 0]).unwrap();
    assert!(err(model.encode(&empty, None, Variant::Optimized)).contains("empty"));
    let stereo = ops::zeros::<f32>(&[1, 2, 100]).unwrap();
    assert!(err(model.encode(&stereo, None, Variant::Optimized)).contains("expected [batch, 1 channel(s), samples]"));
    assert!(err(model.encode(&ops::zeros::<f32>(&[1, 1, 100]).unwrap(), Some(6.0), Variant::Optimized)).contains("bandwidth 6 kbps"));
    let too_big = Array::from_slice(&[5000i32; 4], &[1, 4, 1]);
    assert!(err(model.decode(&too_big, Variant::Optimized)).contains("outside the codebook"));
    let too_many = ops::zeros::<i32>(&[1, 5, 3]).unwrap();
    assert!(err(model.decode(&too_many, Variant::Optimized)).contains("1..=4 codebooks"));
    let floats = ops::zeros::<f32>(&[1, 4, 3]).unwrap();
    assert!(err(model.decode(&floats, Variant::Optimized)).contains("expected integers"));
}

#[test]
fn misshaped_and_extra_weights_are_refused_by_name() {
    let dir = fixture("encodec32k-s0");
    let cfg = EncodecConfig::from_file(&dir.join("config.json")).unwrap();
    let mut w = weights::read_safetensors(&dir.join("model.safetensors")).unwrap();
    let key = "decoder.layers.0.conv.bias";
    let n = w[key].shape()[0];
    w.insert(key.into(), ops::zeros::<f32>(&[n + 1]).unwrap());
    w.insert("decoder.layers.99.conv.bias".into(), ops::zeros::<f32>(&[1]).unwrap());
    let e = Encodec::from_tensors(cfg, w, "m.safetensors").err().unwrap().to_string();
    assert!(e.contains(&format!("misshaped: {key} is [{}], expected [{n}]", n + 1)) && e.contains("unused: decoder.layers.99.conv.bias"), "{e}");
}

#[test]
fn hub_checkpoint_names_load() {
    // The hub's EnCodec checkpoints store weight norm as weight_g / weight_v and may omit
    // the codebooks' training buffers.
    let dir = fixture("encodec32k-s0");
    let cfg = EncodecConfig::from_file(&dir.join("config.json")).unwrap();
    let w = weights::read_safetensors(&dir.join("model.safetensors")).unwrap();
    let renamed = w
        .into_iter()
        .filter(|(k, _)| !k.ends_with("embed_avg") && !k.ends_with("cluster_size") && !k.ends_with("inited"))
        .map(|(k, v)| (k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"), v))
        .collect();
    let model = Encodec::from_tensors(cfg, renamed, "old-names").unwrap();
    let reference = Encodec::load_dir(&dir).unwrap();
    let codes = reference_codes("encodec32k-s0");
    assert_eq!(max_abs_diff(&model.decode(&codes, Variant::Optimized).unwrap(), &reference.decode(&codes, Variant::Optimized).unwrap()), 0.0);
}
