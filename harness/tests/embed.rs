//! `harness embed` end to end on the tiny CLAP of the seed-0 fixture, with a made-up
//! word-level tokenizer whose words are the fixture's token ids: the audio embedding of a WAV
//! equals HF's for the same clip, the text embedding HF's for the same ids, and the
//! similarities are their dot products; refusals by name.
use std::path::Path;
use std::process::{Command, Output};

use models::weights;

mod common;
use common::fixture;

fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "preprocessor_config.json"] {
        std::fs::copy(fixture("clap-s0").join(f), dir.path().join(f)).unwrap();
    }
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["<s>", "<pad>", "</s>", "<unk>"].iter().enumerate() {
        vocab.insert(w.to_string(), serde_json::json!(i));
    }
    for i in 4..100 {
        vocab.insert(format!("w{i}"), serde_json::json!(i));
    }
    let special = |id: u32, content: &str| serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<s>"), special(1, "<pad>"), special(2, "</s>"), special(3, "<unk>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

fn embed(model: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness")).arg("embed").arg("--model-dir").arg(model).args(args).output().unwrap()
}

fn write_wav(path: &Path, rate: u32, samples: &[f32]) {
    let spec = hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 32, sample_format: hound::SampleFormat::Float };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

#[test]
fn embeddings_equal_hf_and_similarities_are_dot_products() {
    let model = model_dir();
    let inputs = weights::read_safetensors(&fixture("clap-s0").join("inputs.safetensors")).unwrap();
    let outputs = weights::read_safetensors(&fixture("clap-s0").join("outputs.safetensors")).unwrap();
    let wav = model.path().join("noise.wav");
    write_wav(&wav, 48_000, inputs["noise.audio"].as_slice::<f32>());
    // The fixture's first text: <s> then ids 1..7 of row 0 (no padding in that row).
    let ids = inputs["text.input_ids"].as_slice::<i64>()[..7].to_vec();
    assert_eq!(ids[0], 0);
    let text: String = ids[1..].iter().map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    let o = embed(model.path(), &["--json", "--audio", wav.to_str().unwrap(), "--text", &text, "w5 w6"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let audio: Vec<f64> = v["audio"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let want_audio = &outputs["audio.embeds"].as_slice::<f32>()[16..32]; // "noise" is the second clip
    let text0: Vec<f64> = v["text"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let want_text = &outputs["text.embeds"].as_slice::<f32>()[..16];
    for (got, want, what) in [(&audio, want_audio, "audio"), (&text0, want_text, "text")] {
        let err = got.iter().zip(want.iter()).map(|(a, b)| (a - f64::from(*b)).abs()).fold(0.0, f64::max);
        assert!(err < 1e-4, "{what} embedding differs from HF's by {err}");
    }
    let text1: Vec<f64> = v["text"][1]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let cos = &v["cosine"][0];
    assert!((cos[0].as_f64().unwrap() - dot(&audio, &text0)).abs() < 1e-5);
    assert!((cos[1].as_f64().unwrap() - dot(&audio, &text1)).abs() < 1e-5);
    assert!((dot(&audio, &audio) - 1.0).abs() < 1e-5, "embeddings are unit vectors");
    // The human-readable form names the best text for each clip.
    let o = embed(model.path(), &["--audio", wav.to_str().unwrap(), "--text", &text, "w5 w6"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("best:"));
}

#[test]
fn refusals_name_the_problem() {
    let model = model_dir();
    let err = |o: Output| {
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(err(embed(model.path(), &[])).contains("nothing to embed"));
    let empty = model.path().join("empty.wav");
    write_wav(&empty, 48_000, &[]);
    assert!(err(embed(model.path(), &["--audio", empty.to_str().unwrap()])).contains("holds no samples"));
    let e = err(embed(&fixture("htdemucs-s0"), &["--text", "w5"]));
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn a_checkpoint_that_gives_nan_prints_no_embedding() {
    let model = model_dir();
    // Poison one projection bias with NaN, in place in the safetensors data.
    let p = model.path().join("model.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let off = &header["text_projection.linear2.bias"]["data_offsets"];
    let (lo, hi) = (8 + n + off[0].as_u64().unwrap() as usize, 8 + n + off[1].as_u64().unwrap() as usize);
    for c in b[lo..hi].chunks_exact_mut(4) {
        c.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(&p, b).unwrap();
    let o = embed(model.path(), &["--text", "w5 w6", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("NaN or infinite"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty(), "nothing printed");
}
