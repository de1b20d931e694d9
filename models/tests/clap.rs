//! CLAP against HF transformers on the committed fixtures (both seeds, both variants): the
//! feature extractor in both truncation modes, audio and text embeddings, their pooled
//! features, the patch embeddings and the logits.
mod common;

use common::{excess, fixture};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{ops, Array};
use models::checkpoint::Checkpointed;
use models::clap::features::{Crops, FeatureExtractor, Truncation};
use models::clap::{Clap, FeatureConfig};
use models::config::ModelConfig;
use models::{weights, Variant};

fn min_cosine(a: &Array, b: &Array) -> f32 {
    let dot = a.multiply(b).unwrap().sum_axis(-1, false).unwrap();
    let na = a.square().unwrap().sum_axis(-1, false).unwrap().sqrt().unwrap();
    let nb = b.square().unwrap().sum_axis(-1, false).unwrap().sqrt().unwrap();
    dot.divide(na.multiply(nb).unwrap()).unwrap().min(None).unwrap().item_cast::<f32>()
}

const CLIPS: [&str; 11] = ["tone", "noise", "long", "silence", "clipped", "impulse", "dc", "short", "sine", "sweep", "short_tone"];

#[test]
fn features_match_the_hf_extractor_in_both_modes() {
    for seed in ["clap-s0", "clap-s1"] {
        let dir = fixture(seed);
        let fe = FeatureExtractor::new(FeatureConfig::from_file(&dir.join("preprocessor_config.json")).unwrap()).unwrap();
        let inputs = weights::read_safetensors(&dir.join("inputs.safetensors")).unwrap();
        let outputs = weights::read_safetensors(&dir.join("outputs.safetensors")).unwrap();
        for clip in CLIPS {
            let wave = inputs[&format!("{clip}.audio")].as_slice::<f32>().to_vec();
            let offset = inputs[&format!("{clip}.crop")].as_slice::<i32>()[0] as usize;
            let (feats, longer) = fe.extract(&wave, Truncation::RandTrunc, Crops { offset: Some(offset), ..Crops::default() }).unwrap();
            let (over, err) = excess(&feats, &outputs[&format!("{clip}.features")]);
            assert_eq!(over, 0.0, "{seed} {clip} rand_trunc features: max error {err}");
            assert_eq!(i32::from(longer), outputs[&format!("{clip}.is_longer")].as_slice::<i32>()[0], "{seed} {clip}");
            if let Some(starts) = inputs.get(&format!("{clip}.fusion_starts")) {
                let s = starts.as_slice::<i32>();
                let crops = Crops { starts: Some([s[0] as usize, s[1] as usize, s[2] as usize]), ..Crops::default() };
                let (feats, _) = fe.extract(&wave, Truncation::Fusion, crops).unwrap();
                let (over, err) = excess(&feats, &outputs[&format!("{clip}.fusion_features")]);
                assert_eq!(over, 0.0, "{seed} {clip} fusion features: max error {err}");
            }
        }
    }
}

#[test]
fn embeddings_and_logits_match_hf_for_both_variants() {
    for seed in ["clap-s0", "clap-s1"] {
        let dir = fixture(seed);
        let model = Clap::load_dir(&dir).unwrap();
        let inputs = weights::read_safetensors(&dir.join("inputs.safetensors")).unwrap();
        let outputs = weights::read_safetensors(&dir.join("outputs.safetensors")).unwrap();
        // The reference features, so that the model is checked on its own.
        let feats: Vec<Array> = CLIPS.iter().map(|c| outputs[&format!("{c}.features")].clone()).collect();
        let batch = ops::stack(&feats, 0).unwrap();
        let (ids, mask) = (&inputs["text.input_ids"], &inputs["text.attention_mask"]);
        for v in [Variant::Naive, Variant::Optimized] {
            let a = model.embed_audio(&batch, v).unwrap();
            let (tp, te) = model.embed_text(ids, mask, v).unwrap();
            let batched = model.embed_audio_batch(&batch, &[false; CLIPS.len()], v).unwrap();
            let logits = model.logits_per_audio(&a.embeds, &te).unwrap();
            for (name, got) in [("audio.pooled", &a.pooled), ("audio.embeds", &a.embeds), ("text.pooled", &tp), ("text.embeds", &te), ("logits_per_audio", &logits), ("audio.embeds", &batched)] {
                let (over, err) = excess(got, &outputs[name]);
                assert_eq!(over, 0.0, "{seed} {v:?} {name}: max error {err}");
            }
            let (over, err) = excess(&a.patch_embeds.index((0..1, ..512)), &outputs["audio.patch_embeds"]);
            assert_eq!(over, 0.0, "{seed} {v:?} patch embeddings: max error {err}");
            for (name, got) in [("audio.embeds", &a.embeds), ("text.embeds", &te)] {
                let c = min_cosine(got, &outputs[name]);
                assert!(c >= 0.99999, "{seed} {v:?} {name}: cosine {c}");
            }
        }
    }
}

#[test]
fn fused_htsat_matches_hf_on_a_long_and_a_short_clip() {
    let dir = fixture("clap-fused-s0");
    let model = Clap::load_dir(&dir).unwrap();
    assert!(model.config.audio_config.enable_fusion);
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors")).unwrap();
    let outputs = weights::read_safetensors(&dir.join("outputs.safetensors")).unwrap();
    let longer: Vec<bool> = inputs["is_longer"].as_slice::<i32>().iter().map(|&v| v != 0).collect();
    assert_eq!(longer, [true, false]);
    for v in [Variant::Naive, Variant::Optimized] {
        let a = model.embed_audio_with(&inputs["features"], &longer, v).unwrap();
        for (name, got) in [("audio.pooled", &a.pooled), ("audio.embeds", &a.embeds)] {
            let (over, err) = excess(got, &outputs[name]);
            assert_eq!(over, 0.0, "{v:?} {name}: max error {err}");
        }
        let (over, err) = excess(&a.patch_embeds.index((0..1, ..1024)), &outputs["audio.patch_embeds"]);
        assert_eq!(over, 0.0, "{v:?} patch embeddings (fused): max error {err}");
        assert!(min_cosine(&a.embeds, &outputs["audio.embeds"]) >= 0.99999);
        let batched = model.embed_audio_batch(&inputs["features"], &longer, v).unwrap();
        assert_eq!(excess(&batched, &outputs["audio.embeds"]).0, 0.0);
        // Without the flag the long clip's chunks are ignored, and the embedding differs.
        let plain = model.embed_audio(&inputs["features"], v).unwrap().embeds;
        assert!(excess(&plain.index(0..1), &outputs["audio.embeds"].index(0..1)).1 > 1e-3);
    }
    // The unfused model refuses 4-channel features by name.
    let unfused = Clap::load_dir(&fixture("clap-s0")).unwrap();
    let e = unfused.embed_audio(&inputs["features"], Variant::Optimized).err().unwrap().to_string();
    assert!(e.contains("expected [batch, 1, frames"), "{e}");
}
