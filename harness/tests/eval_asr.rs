//! `harness eval asr`: openai-whisper's normalisers reproduced on its own outputs
//! (`fixtures/whisper-normalizer/cases.json`, made by `fixtures/make_normalizer_reference.py`),
//! and the command end to end on the tiny random Whisper: a report whose WER is the clips'
//! pooled errors, its page beside it, the gate on a worse WER, and bad manifests refused by
//! name before any model loads.
use std::path::Path;
use std::process::{Command, Output};

use harness::audio::{write_wav, Audio};
use harness::eval::normalize::{normalize_basic, normalize_english};
use harness::eval::AsrReport;

mod common;
use common::{fixture, whisper_model_dir};

#[test]
fn normalizers_equal_openai_whispers() {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("whisper-normalizer/cases.json")).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() > 100);
    let mut wrong = Vec::new();
    for c in cases {
        let input = c["input"].as_str().unwrap();
        let (e, b) = (normalize_english(input), normalize_basic(input));
        if e != c["english"].as_str().unwrap() {
            wrong.push(format!("english {input:?}: {e:?}, openai-whisper {:?}", c["english"]));
        }
        // BasicTextNormalizer keeps leading and trailing spaces; ours trims them.
        if b != c["basic"].as_str().unwrap().trim() {
            wrong.push(format!("basic {input:?}: {b:?}, openai-whisper {:?}", c["basic"]));
        }
    }
    assert!(wrong.is_empty(), "{} of {} differ:\n{}", wrong.len(), 2 * cases.len(), wrong.join("\n"));
}

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness")).args(args).env("HF_HUB_OFFLINE", "1").output().unwrap()
}

fn tone(dir: &Path, name: &str, secs: f64, f: f64) {
    let n = (secs * 16_000.0) as usize;
    let x: Vec<f32> = (0..n).map(|i| (0.3 * (2.0 * std::f64::consts::PI * f * i as f64 / 16_000.0).sin()) as f32).collect();
    write_wav(&dir.join(name), &Audio { sample_rate: 16_000, channels: vec![x] }, false).unwrap();
}

#[test]
fn eval_asr_reports_wer_speed_and_gates_a_worse_wer() {
    let model = whisper_model_dir();
    let m = model.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("clips")).unwrap();
    for (i, f) in [220.0, 330.0, 440.0].iter().enumerate() {
        tone(&d.join("clips"), &format!("{i}.wav"), 1.0 + i as f64, *f);
    }
    let manifest = d.join("manifest.jsonl");
    std::fs::write(
        &manifest,
        "{\"audio\": \"clips/0.wav\", \"text\": \"Fifty colours\"}\n\n{\"audio\": \"clips/1.wav\", \"text\": \"one two three\"}\n{\"audio\": \"clips/2.wav\", \"text\": \"It's done.\"}\n",
    )
    .unwrap();
    let out = d.join("run.json");
    let o = harness(&["eval", "asr", "--manifest", manifest.to_str().unwrap(), "--model-dir", m, "--batch", "2", "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: AsrReport = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(out.with_extension("html").is_file());
    assert_eq!((r.kind.as_str(), r.clips, r.batch), ("asr-eval", 3, 2));
    // References are normalised as openai-whisper does, and the WER pools the clips' errors.
    let refs: Vec<&str> = r.utterances.iter().map(|u| u.reference.as_str()).collect();
    assert_eq!(refs, ["50 colors", "123", "it is done"]);
    let (errors, words): (usize, usize) = r.utterances.iter().fold((0, 0), |(e, w), u| (e + u.counts.errors(), w + u.counts.reference_words));
    assert_eq!(words, 6);
    assert!((r.wer - errors as f64 / 6.0).abs() < 1e-12, "{} vs {errors}/6", r.wer);
    assert!(r.wer_ci.low <= r.wer && r.wer <= r.wer_ci.high, "{:?}", r.wer_ci);
    assert!((r.audio_seconds - 6.0).abs() < 1e-6 && r.seconds > 0.0 && (r.real_time_factor - r.seconds / 6.0).abs() < 1e-9);
    assert!(r.mlx_peak_mib > 0.0);
    // The same run against itself passes; against a base that made no errors it regresses,
    // unless the random model happened to be perfect (it is not: its text is noise).
    let again = d.join("again.json");
    let o = harness(&["eval", "asr", "--manifest", manifest.to_str().unwrap(), "--model-dir", m, "--batch", "2", "--out", again.to_str().unwrap(), "--compare", out.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("+0.00 points"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(errors > 0);
    let mut perfect = r.clone();
    for u in &mut perfect.utterances {
        u.hypothesis = u.reference.clone();
        u.counts = harness::eval::wer::count(&u.reference, &u.reference);
    }
    perfect.wer = 0.0;
    let base = d.join("perfect.json");
    std::fs::write(&base, serde_json::to_string(&perfect).unwrap()).unwrap();
    let o = harness(&["eval", "asr", "--manifest", manifest.to_str().unwrap(), "--model-dir", m, "--batch", "1", "--compare", base.to_str().unwrap(), "--quiet"]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("REGRESSION"));
    // Batch 1 gives the same transcripts as batch 2.
    let b1: AsrReport = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b1.utterances, r.utterances);
    // Refused by name, before any model loads, and no report replaced.
    let bad = |body: &str, says: &str| {
        std::fs::write(&manifest, body).unwrap();
        let o = harness(&["eval", "asr", "--manifest", manifest.to_str().unwrap(), "--model-dir", "/nonexistent-model"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{body}: {err}");
    };
    bad("{\"audio\": \"/etc/passwd\", \"text\": \"x\"}\n", "relative path inside");
    bad("{\"audio\": \"../x.wav\", \"text\": \"x\"}\n", "relative path inside");
    bad("{\"audio\": \"clips/9.wav\", \"text\": \"x\"}\n", "does not exist");
    bad("{\"audio\": \"clips/0.wav\"}\n", "no string \"text\"");
    bad("not json\n", "manifest.jsonl:1");
    bad("\n", "no clips");
    std::fs::write(&manifest, "{\"audio\": \"clips/0.wav\", \"text\": \"x\"}\n").unwrap();
    let before = std::fs::read(&out).unwrap();
    let o = harness(&["eval", "asr", "--manifest", manifest.to_str().unwrap(), "--model-dir", m, "--out", out.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("never replaced"));
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let o = harness(&["eval", "asr", "--manifest", manifest.to_str().unwrap(), "--model-dir", m, "--compare", out.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not comparable"), "{}", String::from_utf8_lossy(&o.stderr));
}
