//! `harness parity` on the committed reference fixtures, and its refusals of broken ones.
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::fixture;

fn parity(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness")).args(["parity", "--json", "--fixture"]).arg(dir).output().unwrap()
}

#[test]
fn attention_fixtures_pass_for_both_variants() {
    for name in ["attention-s0", "attention-s1", "attention-alt-s0"] {
        let checks = passing_checks(name);
        assert_eq!(checks.len(), 4, "two outputs x two variants");
        assert!(checks.iter().all(|c| c["pass"] == true && c["max_abs"].as_f64().unwrap() < 1e-5));
    }
}

#[test]
fn encodec_fixtures_pass_for_both_variants() {
    // encodec48k-s0: the encodec_48khz settings (GroupNorm, chunks with overlap, per-chunk
    // normalisation), whose scales are checked too.
    for name in ["encodec24k-s0", "encodec24k-s1", "encodec32k-s0", "encodec32k-s1", "encodec-alt-s0", "encodec48k-s0"] {
        let checks = passing_checks(name);
        if name == "encodec48k-s0" {
            assert!(checks.iter().filter(|c| c["output"].as_str().unwrap().contains(".scales@")).count() >= 14, "{name}: scales of every signal");
        }
        // Every signal (the test audio and six edge cases) is checked for embeddings, codes
        // and decoded audio, in both variants.
        for signal in ["audio", "silence", "clipped", "impulse", "dc", "short", "tiny"] {
            for kind in [".embeddings", ".codes@", ".decoded@"] {
                let prefix = format!("{signal}{kind}");
                let n = checks.iter().filter(|c| c["output"].as_str().unwrap().starts_with(&prefix)).count();
                assert!(n >= 2, "{name}: {prefix} checked {n} times");
            }
        }
        for c in &checks {
            assert_eq!(c["pass"], true, "{name}: {c}");
            if c["output"].as_str().unwrap().contains(".codes@") {
                assert_eq!(c["max_abs"].as_f64().unwrap(), 0.0, "{name}: codes must be exact: {c}");
            }
        }
    }
}

#[test]
fn whisper_fixtures_pass_for_both_variants() {
    for name in ["whisper-s0", "whisper-s1", "whisper-alt-s0"] {
        let checks = passing_checks(name);
        // The 128-bin model's own mel is the 128-bin one: no separate head of it.
        let head128: &[&str] = if name.contains("alt") { &[] } else { &["audio.mel128_head"] };
        for &out in ["audio.mel_head", "encoder", "logits", "audio.greedy", "mel_filters.80", "mel_filters.128"].iter().chain(head128) {
            assert_eq!(checks.iter().filter(|c| c["output"] == out).count(), 2, "{name}: {out} in both variants");
        }
        for signal in ["silence", "clipped", "impulse", "dc", "short"] {
            for kind in ["mel_head", "greedy"] {
                assert_eq!(checks.iter().filter(|c| c["output"] == format!("{signal}.{kind}")).count(), 2, "{name}: {signal}.{kind}");
            }
        }
        for c in &checks {
            assert_eq!(c["pass"], true, "{name}: {c}");
            if c["output"].as_str().unwrap().ends_with("greedy") {
                assert_eq!(c["max_abs"].as_f64().unwrap(), 0.0, "{name}: tokens must be exact: {c}");
            }
        }
    }
}

#[test]
fn musicgen_fixtures_pass_for_both_variants() {
    // musicgen-stereo-s0: 8 codebooks interleaving left and right, decoded channel by channel.
    // musicgen-melody-s0: MusicGen Melody (chroma and text as a prefix, no cross-attention).
    for name in ["musicgen-s0", "musicgen-s1", "musicgen-alt-s0", "musicgen-stereo-s0", "musicgen-melody-s0"] {
        let checks = passing_checks(name);
        let outs: &[&str] =
            if name.contains("melody") { &["text.states", "logits", "generate.codes", "generate.audio", "melody.chroma"] } else { &["text.states", "logits", "generate.codes", "generate.audio"] };
        for out in outs {
            assert_eq!(checks.iter().filter(|c| c["output"] == *out).count(), 2, "{name}: {out} in both variants");
        }
        for c in &checks {
            assert_eq!(c["pass"], true, "{name}: {c}");
        }
    }
}

#[test]
fn htdemucs_fixtures_pass_for_both_variants() {
    for name in ["htdemucs-s0", "htdemucs-s1", "htdemucs-alt-s0"] {
        let checks = passing_checks(name);
        // The alternative configuration runs at the input's own length: no inputs shorter than
        // its STFT window.
        let inputs: &[&str] = if name.contains("alt") { &["audio", "batch"] } else { &["audio", "batch", "silence", "clipped", "impulse", "dc", "short", "tiny"] };
        let mut outs: Vec<String> = inputs.iter().map(|s| format!("{s}.sources")).collect();
        outs.extend(["x_in", "xt_in", "x_out", "xt_out"].iter().map(|s| format!("audio.transformer.{s}")));
        outs.push("mix.apply_model".into());
        for out in &outs {
            assert_eq!(checks.iter().filter(|c| c["output"] == out.as_str()).count(), 2, "{name}: {out} in both variants");
        }
        assert_eq!(checks.len(), 2 * outs.len());
        for c in &checks {
            assert_eq!(c["pass"], true, "{name}: {c}");
        }
    }
}

/// demucs' own `.th` files (a weighted bag of two, a 6-source model) against its `Separator`.
#[test]
fn htdemucs_checkpoint_fixtures_pass_for_both_variants() {
    let checks = passing_checks("htdemucs-th-s0");
    for out in ["bag.separated", "six.separated"] {
        assert_eq!(checks.iter().filter(|c| c["output"] == out).count(), 2, "{out} in both variants");
    }
    assert_eq!(checks.len(), 4);
    for c in &checks {
        assert_eq!(c["pass"], true, "{c}");
    }
}

#[test]
fn clap_fixtures_pass_for_both_variants() {
    // clap-pad-s0: windows of 6, which tile no stage (HF pads each to whole windows).
    for name in ["clap-s0", "clap-s1", "clap-alt-s0", "clap-pad-s0"] {
        let checks = passing_checks(name);
        let mut outs: Vec<String> = ["audio.embeds", "audio.pooled", "audio.patch_embeds", "text.embeds", "text.pooled", "logits_per_audio"].map(String::from).to_vec();
        let clips: &[&str] = if name.contains("pad") { &["tone", "long", "short"] } else { &["tone", "noise", "long", "silence", "clipped", "impulse", "dc", "short", "sine", "sweep", "short_tone"] };
        for clip in clips {
            outs.push(format!("{clip}.features"));
            outs.push(format!("{clip}.is_longer"));
        }
        outs.extend(["tone", "long", "short"].map(|c| format!("{c}.fusion_features")));
        for out in &outs {
            assert_eq!(checks.iter().filter(|c| c["output"] == out.as_str()).count(), 2, "{name}: {out} in both variants");
        }
        for c in &checks {
            assert_eq!(c["pass"], true, "{name}: {c}");
            if c["output"].as_str().unwrap().ends_with("embeds") && !c["output"].as_str().unwrap().contains("patch") {
                assert!(c["cosine"].as_f64().unwrap() >= 0.99999, "{name}: {c}");
            }
        }
    }
}

#[test]
fn clap_fused_fixture_passes_for_both_variants() {
    let checks = passing_checks("clap-fused-s0");
    for out in ["audio.embeds", "audio.pooled", "audio.patch_embeds"] {
        assert_eq!(checks.iter().filter(|c| c["output"] == out).count(), 2, "{out} in both variants");
    }
    assert!(checks.iter().all(|c| c["pass"] == true));
}

/// Silero VAD against the `silero-vad` package: the chunk probabilities within 1e-4, and the
/// speech segments of four option sets exact, both from our probabilities and (`logic.*`) from
/// the package's, in both variants.
#[test]
fn silero_vad_fixtures_pass_for_both_variants() {
    for name in ["silero-vad-s0", "silero-vad-s1"] {
        let checks = passing_checks(name);
        let mut outs = vec!["probs".to_string()];
        for opts in ["default", "loose", "max1.5s-last-silence", "max2s"] {
            outs.push(format!("segments.{opts}"));
            outs.push(format!("logic.segments.{opts}"));
        }
        for out in &outs {
            assert_eq!(checks.iter().filter(|c| c["output"] == out.as_str()).count(), 2, "{name}: {out} in both variants");
        }
        for c in &checks {
            assert_eq!(c["pass"], true, "{name}: {c}");
            if c["output"] == "probs" {
                assert!(c["max_abs"].as_f64().unwrap() < 1e-4, "{name}: {c}");
            }
        }
    }
}

#[test]
fn htdemucs_fixture_with_a_renamed_weight_is_refused_by_name() {
    let dir = broken("htdemucs-s0", |b| replace_once(b, "crosstransformer.layers_t.3.linear1.weight", "crosstransformer.layers_t.3.linear9.weight"));
    let o = parity(dir.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing: crosstransformer.layers_t.3.linear1.weight") && err.contains("unused: crosstransformer.layers_t.3.linear9.weight"), "{err}");
}

#[test]
fn musicgen_fixture_with_a_renamed_weight_is_refused_by_name() {
    let dir = broken("musicgen-s0", |b| replace_once(b, "decoder.lm_heads.3.weight", "decoder.lm_heads.7.weight"));
    let err = String::from_utf8_lossy(&parity(dir.path()).stderr).into_owned();
    assert!(err.contains("missing: decoder.lm_heads.3.weight") && err.contains("unused: decoder.lm_heads.7.weight"), "{err}");
    // A codec weight is named with the codec's own prefix.
    let dir = broken("musicgen-s0", |b| replace_once(b, "audio_encoder.quantizer.layers.0.codebook.embed", "audio_encoder.quantizer.layers.0.codebook.embex"));
    let err = String::from_utf8_lossy(&parity(dir.path()).stderr).into_owned();
    assert!(err.contains("audio_encoder.") && err.contains("quantizer.layers.0.codebook.embed"), "{err}");
}

#[test]
fn encodec_fixture_with_a_renamed_weight_is_refused_by_name() {
    let dir = broken("encodec32k-s0", |b| replace_once(b, "decoder.layers.1.lstm.weight_hh_l1", "decoder.layers.1.lstm.weight_hh_l7"));
    let o = parity(dir.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing: decoder.layers.1.lstm.weight_hh_l1") && err.contains("unused: decoder.layers.1.lstm.weight_hh_l7"), "{err}");
}

/// The checks of a committed fixture's parity run, which must exit 0.
fn passing_checks(name: &str) -> Vec<serde_json::Value> {
    let o = parity(&fixture(name));
    assert!(o.status.success(), "{name}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["precision"], "fp32", "{name}: the CPU computes in fp32");
    let runs = v["fixtures"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{name}: one entry per variant");
    let checks: Vec<serde_json::Value> = runs.iter().flat_map(|r| r["checks"].as_array().unwrap().clone()).collect();
    for c in &checks {
        // A passing check used at most its whole tolerance (exact ones report mismatches).
        match c["used"].as_f64() {
            Some(u) => assert!(u <= 1.0, "{name}: {c}"),
            None => assert_eq!(c["mismatches"], 0, "{name}: {c}"),
        }
    }
    checks
}

/// A copy of the fixture `name` with `model.safetensors` passed through `edit`.
fn broken(name: &str, edit: impl Fn(Vec<u8>) -> Vec<u8>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(fixture(name)).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    let p = dir.path().join("model.safetensors");
    std::fs::write(&p, edit(std::fs::read(&p).unwrap())).unwrap();
    dir
}

fn replace_once(bytes: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "header edits keep the length");
    let pos = bytes.windows(from.len()).position(|w| w == from.as_bytes()).expect("pattern in header");
    let mut b = bytes;
    b[pos..pos + from.len()].copy_from_slice(to.as_bytes());
    b
}

#[test]
fn renamed_weight_is_named() {
    let d = broken("attention-s0", |b| replace_once(b, "q_proj.weight", "q_proj.wieght"));
    let o = parity(d.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing: q_proj.weight") && err.contains("unused: q_proj.wieght"), "{err}");
}

#[test]
fn reshaped_weight_is_named() {
    let d = broken("attention-s0", |b| replace_once(b, "\"shape\":[32,32]", "\"shape\":[16,64]"));
    let o = parity(d.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("misshaped:") && err.contains("is [16, 64], expected [32, 32]"), "{err}");
}

#[test]
fn truncated_weights_are_refused() {
    let d = broken("attention-s0", |mut b| {
        b.truncate(b.len() - 100);
        b
    });
    let o = parity(d.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("model.safetensors") && err.contains("truncated"), "{err}");
}

#[test]
fn fixture_inputs_of_the_wrong_rank_or_dtype_are_refused_by_name() {
    // attention's x as rank 2: a named error, exit 1, no panic.
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(fixture("attention-s0")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    let p = dir.path().join("inputs.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let text = String::from_utf8_lossy(&bytes[8..8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize]).into_owned();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let shape = v["x"]["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect::<Vec<_>>();
    let (from, to) = (format!("\"shape\":[{},{},{}]", shape[0], shape[1], shape[2]), format!("\"shape\":[{},{}]", shape[0] * shape[1], shape[2]));
    let pad = " ".repeat(from.len() - to.len());
    std::fs::write(&p, replace_once(bytes, &from, &format!("{to}{pad}"))).unwrap();
    let o = parity(dir.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("'x' has shape") && err.contains("expected 3"), "{err}");
}

/// The CPU host kernels forced on for every array (`--host-kernels always`): the fixtures'
/// tiny models otherwise stay below their size threshold. One fixture per model family whose
/// forward passes go through them (attention, GELU, sigmoid and GLU, ELU, group norm, axis-1
/// convolutions), every check passing within its tolerance.
#[test]
fn fixtures_pass_with_the_host_kernels_forced_on() {
    for name in ["htdemucs-s0", "encodec24k-s0", "whisper-s0", "clap-s0", "musicgen-s0"] {
        let o = Command::new(env!("CARGO_BIN_EXE_harness")).args(["parity", "--json", "--device", "cpu", "--host-kernels", "always", "--fixture"]).arg(fixture(name)).output().unwrap();
        assert!(o.status.success(), "{name}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let checks: Vec<&serde_json::Value> = v["fixtures"].as_array().unwrap().iter().flat_map(|r| r["checks"].as_array().unwrap()).collect();
        assert!(checks.len() >= 4, "{name}: {} checks", checks.len());
        assert!(checks.iter().all(|c| c["pass"] == true), "{name}: {checks:?}");
    }
}
