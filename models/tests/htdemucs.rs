//! HTDemucs against demucs 4.1.0 on the committed fixtures (both seeds, both variants): the
//! forward pass on a segment, a batch and edge-case inputs, the transformer's inputs and
//! outputs, and `apply_model`'s chunked separation; plus clear refusals of bad input.
mod common;

use common::{excess, fixture};
use models::checkpoint::Checkpointed;
use models::chunked::DemucsChunking;
use models::htdemucs::{exec, Chunking, HtDemucs, Taps};
use models::{weights, Variant};

#[test]
fn forward_matches_demucs_on_every_input() {
    for seed in ["htdemucs-s0", "htdemucs-s1"] {
        let dir = fixture(seed);
        let model = HtDemucs::load_dir(&dir).unwrap();
        let inputs = weights::read_safetensors(&dir.join("inputs.safetensors")).unwrap();
        let outputs = weights::read_safetensors(&dir.join("outputs.safetensors")).unwrap();
        for variant in [Variant::Naive, Variant::Optimized] {
            for key in ["audio", "batch", "silence", "clipped", "impulse", "dc", "short", "tiny"] {
                let mut taps = Taps::default();
                let got = model.forward_with(&inputs[key], exec(variant), Some(&mut taps)).unwrap();
                let (over, err) = excess(&got, &outputs[&format!("{key}.sources")]);
                assert_eq!(over, 0.0, "{seed} {variant:?} {key}: max error {err}");
                // demucs' float32 output is within 2e-6 of its float64 one here; with MLX's
                // one-at-a-time float32 reductions in the normalisations ours was 1e-4 off on
                // the DC and clipped inputs, with cascaded sums 1e-5.
                assert!(err < 5e-5, "{seed} {variant:?} {key}: max error {err}");
                if key == "audio" {
                    for (name, t) in [("x_in", &taps.x_in), ("xt_in", &taps.xt_in), ("x_out", &taps.x_out), ("xt_out", &taps.xt_out)] {
                        let (over, err) = excess(t.as_ref().unwrap(), &outputs[&format!("audio.transformer.{name}")]);
                        assert_eq!(over, 0.0, "{seed} {variant:?} transformer {name}: max error {err}");
                    }
                }
            }
        }
    }
}

/// The CPU host kernels (softmax, GELU) normally start at sizes the tiny fixture never reaches;
/// with them forced on, the forward pass still matches demucs.
#[test]
fn forward_matches_demucs_with_host_kernels_forced() {
    models::nn::host::set_min_elements(0);
    let dir = fixture("htdemucs-s1");
    let model = HtDemucs::load_dir(&dir).unwrap();
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors")).unwrap();
    let outputs = weights::read_safetensors(&dir.join("outputs.safetensors")).unwrap();
    for variant in [Variant::Naive, Variant::Optimized] {
        for key in ["audio", "batch", "clipped"] {
            let got = model.forward(&inputs[key], variant).unwrap();
            let (over, err) = excess(&got, &outputs[&format!("{key}.sources")]);
            assert_eq!(over, 0.0, "{variant:?} {key}: max error {err}");
        }
    }
    models::nn::host::set_min_elements(models::nn::host::MIN_ELEMENTS);
}

#[test]
fn chunked_separation_matches_apply_model() {
    for seed in ["htdemucs-s0", "htdemucs-s1"] {
        let dir = fixture(seed);
        let model = HtDemucs::load_dir(&dir).unwrap();
        let inputs = weights::read_safetensors(&dir.join("inputs.safetensors")).unwrap();
        let want = &weights::read_safetensors(&dir.join("outputs.safetensors")).unwrap()["mix.apply_model"];
        for variant in [Variant::Naive, Variant::Optimized] {
            let mut calls = Vec::new();
            let got = model.separate(&inputs["mix"], variant, Chunking::Demucs(model.demucs_chunking()), |d, n| calls.push((d, n))).unwrap();
            let (over, err) = excess(&got, want);
            assert_eq!(over, 0.0, "{seed} {variant:?}: apply_model max error {err}");
            // 20000 samples in 11025-sample segments every 8268: three chunks, each reported.
            assert_eq!(calls, vec![(1, 3), (2, 3), (3, 3)]);
        }
        // Chunks two at a time through the model: the same separation.
        let mut calls = Vec::new();
        let batched = Chunking::Demucs(DemucsChunking { batch: 2, ..model.demucs_chunking() });
        let got = model.separate(&inputs["mix"], Variant::Optimized, batched, |d, n| calls.push((d, n))).unwrap();
        let (over, err) = excess(&got, want);
        assert_eq!(over, 0.0, "{seed} batched: apply_model max error {err}");
        assert_eq!(calls, vec![(2, 3), (3, 3)]);
    }
}

#[test]
fn bad_input_and_bad_config_are_refused_by_name() {
    let dir = fixture("htdemucs-s0");
    let model = HtDemucs::load_dir(&dir).unwrap();
    let long = mlx_rs::ops::zeros::<f32>(&[1, 2, 11_026]).unwrap();
    let e = model.forward(&long, Variant::Optimized).unwrap_err().to_string();
    assert!(e.contains("11026 samples is longer than the model's segment (11025 samples"), "{e}");
    let mono = mlx_rs::ops::zeros::<f32>(&[1, 1, 100]).unwrap();
    let e = model.forward(&mono, Variant::Naive).unwrap_err().to_string();
    assert!(e.contains("expected [batch, 2 channels"), "{e}");
    let e = model.separate(&mono, Variant::Naive, Chunking::Whole, |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("expected [batch, 2 channels"), "{e}");

    use models::config::ModelConfig;
    use models::htdemucs::HtDemucsConfig;
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    for (field, value, says) in [
        ("cac", "false", "cac = false"),
        ("t_emb", "\"cape\"", "t_emb \"cape\""),
        ("t_heads", "5", "must split into t_heads 5"),
        ("nfft", "4000", "nfft 4000"),
        ("t_layers", "20000", "t_layers 20000: larger than any HTDemucs"),
    ] {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        let e = HtDemucsConfig::from_json(&v.to_string(), "config.json").unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains(says), "{field}: {e}");
    }
    // A config that disagrees with the weights names the misshaped tensors.
    let mut cfg = HtDemucsConfig::from_json(&text, "config.json").unwrap();
    cfg.channels = 8;
    let tensors = weights::read_safetensors(&dir.join("model.safetensors")).unwrap();
    let e = HtDemucs::from_tensors(cfg, tensors, "model.safetensors").err().unwrap().to_string();
    assert!(e.contains("misshaped: encoder.0.conv.weight is [4, 4, 8, 1], expected [8, 4, 8, 1]"), "{e}");
}

#[test]
fn overlap_chunking_handles_any_length() {
    let model = HtDemucs::load_dir(&fixture("htdemucs-s0")).unwrap();
    let chunk = models::chunked::ChunkedProcessor::new(8000, 0.25).unwrap();
    for len in [1, 5000, 8000, 20_001] {
        let x = mlx_rs::random::normal::<f32>(&[1, 2, len], None, None, &mlx_rs::random::key(len as u64).unwrap()).unwrap();
        let got = model.separate(&x, Variant::Optimized, Chunking::Overlap(chunk), |_, _| {}).unwrap();
        assert_eq!(got.shape(), &[1, 4, 2, len]);
        assert!(models::nn::ops::all_finite(&got).unwrap());
        if len <= 8000 {
            // One chunk: the overlap-add gives the forward pass back.
            let direct = model.forward(&x, Variant::Optimized).unwrap();
            let (over, err) = excess(&got, &direct);
            assert!(over == 0.0 && err < 1e-5, "{len}: {err}");
        }
    }
}
