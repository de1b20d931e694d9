//! HTDemucs against demucs 4.1.0 on the committed fixtures (both seeds, both variants): the
//! forward pass on a segment, a batch and edge-case inputs, the transformer's inputs and
//! outputs, and `apply_model`'s chunked separation; plus clear refusals of bad input.
use std::path::{Path, PathBuf};

use mlx_rs::Array;
use models::htdemucs::{exec, Chunking, HtDemucs, Taps};
use models::{weights, Variant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(name)
}

/// Max absolute error beyond `atol + rtol * |reference|` (0 when within tolerance), and the
/// max absolute error.
fn excess(got: &Array, want: &Array) -> (f32, f32) {
    assert_eq!(got.shape(), want.shape());
    let err = got.subtract(want).unwrap().abs().unwrap();
    let bound = want.abs().unwrap().multiply(mlx_rs::array!(1e-3f32)).unwrap().add(mlx_rs::array!(1e-4f32)).unwrap();
    let over = mlx_rs::ops::maximum(&err.subtract(&bound).unwrap(), mlx_rs::array!(0.0f32)).unwrap();
    (over.max(None).unwrap().item_cast::<f32>(), err.max(None).unwrap().item_cast::<f32>())
}

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
                eprintln!("{seed} {variant:?} {key}: max error {err:.2e}");
                assert_eq!(over, 0.0, "{seed} {variant:?} {key}: max error {err}");
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
    }
}
