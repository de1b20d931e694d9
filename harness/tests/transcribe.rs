//! `harness transcribe` end to end on the tiny random Whisper of the seed-0 fixture (vocabulary
//! 600) with a made-up byte-level tokenizer: long audio goes through overlapping windows with
//! timestamps, any rate and channel count is accepted, and bad requests are refused by name.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::audio::{write_wav, Audio};

mod common;
use common::whisper_model_dir as model_dir;

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness")).args(args).env("HF_HUB_OFFLINE", "1").output().unwrap()
}

/// A stereo chirp-and-pause signal of `secs` seconds at `rate`.
fn wav(dir: &Path, name: &str, secs: f64, rate: u32, f: impl Fn(f64) -> f32) -> PathBuf {
    let n = (secs * f64::from(rate)) as usize;
    let ch: Vec<f32> = (0..n).map(|i| f(i as f64 / f64::from(rate))).collect();
    let p = dir.join(name);
    write_wav(&p, &Audio { sample_rate: rate, channels: vec![ch.clone(), ch] }, false).unwrap();
    p
}

fn speechlike(t: f64) -> f32 {
    // Bursts of a wobbling tone, 2 s on and 1 s off, so windows have pauses to start in.
    if t % 3.0 < 2.0 {
        (0.3 * (2.0 * std::f64::consts::PI * (220.0 + 80.0 * (3.0 * t).sin()) * t).sin()) as f32
    } else {
        0.0
    }
}

#[test]
fn long_audio_is_transcribed_in_overlapping_windows_with_timestamps() {
    let model = model_dir();
    let tmp = tempfile::tempdir().unwrap();
    let audio = wav(tmp.path(), "long.wav", 65.0, 22_050, speechlike);
    let m = model.path().to_str().unwrap();
    let o = harness(&["transcribe", "--model-dir", m, audio.to_str().unwrap(), "--long-form", "windows", "--json", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((v["audio_seconds"].as_f64().unwrap() - 65.0).abs() < 0.01, "{v}");
    assert_eq!(v["windows"], 3, "65 s in 30 s windows overlapping by 3 to 6 s");
    assert!(v["mlx_peak_mib"].as_f64().unwrap() > 0.0);
    let segs = v["segments"].as_array().unwrap();
    let starts: Vec<f64> = segs.iter().map(|s| s["start_s"].as_f64().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "segments out of order: {starts:?}");
    for s in segs {
        let (a, b) = (s["start_s"].as_f64().unwrap(), s["end_s"].as_f64().unwrap());
        assert!((0.0..=65.0).contains(&a) && a <= b, "segment [{a}, {b}]");
        // Timestamp tokens never leak into the text tokens.
        assert!(s["tokens"].as_array().unwrap().iter().all(|t| t.as_i64().unwrap() < 503), "{s}");
    }
    // The text is the segments' text, and with --timestamps each segment prints with its times.
    let o = harness(&["transcribe", "--model-dir", m, audio.to_str().unwrap(), "--long-form", "windows", "--timestamps", "--quiet", "--variant", "naive"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), segs.len(), "{out}");
    assert!(out.lines().all(|l| l.starts_with("[0:") || l.starts_with("[1:")), "{out}");
}

/// The default long form is openai-whisper's seek loop: each window's segments carry its
/// first frame, the temperature it was decoded at and its statistics; with --word-timestamps
/// every word lies inside its segment's window; the same seed gives the same transcript (a
/// random model fails every threshold, so windows are sampled hotter); bad options are refused
/// before any decoding. (Equality with openai-whisper on real weights:
/// `whisper_tiny_en::tiny_en_seek_loop_and_word_timestamps_equal_openai_transcribe`.)
#[test]
fn long_audio_goes_through_the_seek_loop_with_fallback_and_words() {
    let model = model_dir();
    let tmp = tempfile::tempdir().unwrap();
    let audio = wav(tmp.path(), "long.wav", 40.0, 16_000, speechlike);
    let (m, a) = (model.path().to_str().unwrap(), audio.to_str().unwrap());
    let run = |extra: &[&str]| -> serde_json::Value {
        let o = harness(&[&["transcribe", "--model-dir", m, a, "--json", "--quiet", "--word-timestamps", "--best-of", "2"], extra].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let v = run(&[]);
    let segs = v["segments"].as_array().unwrap();
    assert!(!segs.is_empty(), "{v}");
    let temps = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
    let mut last_seek = 0;
    for s in segs {
        let seek = s["seek"].as_u64().unwrap();
        assert!(seek >= last_seek && seek < 4000, "seek {seek} after {last_seek}");
        last_seek = seek;
        let t = s["temperature"].as_f64().unwrap();
        assert!(temps.iter().any(|&x| (x - t).abs() < 1e-6), "temperature {t}");
        for k in ["avg_logprob", "compression_ratio", "no_speech_prob"] {
            assert!(s[k].as_f64().is_some_and(f64::is_finite), "{k}: {s}");
        }
        let (start, end) = (s["start_s"].as_f64().unwrap(), s["end_s"].as_f64().unwrap());
        assert!(start <= end && start >= seek as f64 / 100.0 - 1e-9, "{s}");
        for w in s["words"].as_array().unwrap() {
            let (ws, we) = (w["start_s"].as_f64().unwrap(), w["end_s"].as_f64().unwrap());
            assert!(ws <= we && ws >= seek as f64 / 100.0 - 0.01 && we <= seek as f64 / 100.0 + 30.01, "word {w} of window at {seek}");
            assert!((0.0..=1.0).contains(&w["probability"].as_f64().unwrap()), "{w}");
        }
    }
    // Random weights fail the log-probability threshold, so some window fell back.
    assert!(segs.iter().any(|s| s["temperature"].as_f64().unwrap() > 0.0), "no fallback: {v}");
    // Seeded sampling: the same seed, the same transcript; another seed, another one.
    assert_eq!(run(&[])["segments"], v["segments"]);
    assert_ne!(run(&["--seed", "1"])["segments"], v["segments"]);
    // Without fallback every window is greedy.
    let greedy = run(&["--temperature-increment-on-fallback", "none"]);
    assert!(greedy["segments"].as_array().unwrap().iter().all(|s| s["temperature"] == 0.0), "{greedy}");
    for (bad, says) in [
        (vec!["--temperature", "1.5"], "--temperature"),
        (vec!["--logprob-threshold", "x"], "neither a number nor none"),
        (vec!["--temperature-increment-on-fallback", "0"], "positive step"),
        (vec!["--long-form", "windows"], "--word-timestamps needs --long-form seek"),
    ] {
        let o = harness(&[&["transcribe", "--model-dir", m, a, "--word-timestamps"], bad.as_slice()].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{bad:?}: {err}");
    }
}

/// Several files (a folder and a file) transcribe in batches, greedy and with beams: each
/// file's text equals its own transcription, in the order named; a folder without WAV files and a missing file are
/// refused before any decoding; with --vad a silent file gives no text.
#[test]
fn several_files_transcribe_in_batches_as_one_by_one() {
    let model = model_dir();
    let m = model.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("clips");
    std::fs::create_dir(&folder).unwrap();
    let a = wav(&folder, "a.wav", 3.0, 16_000, speechlike);
    let b = wav(&folder, "b.wav", 7.5, 22_050, |t| speechlike(t + 1.0));
    let c = wav(tmp.path(), "c.wav", 1.2, 16_000, |t| 0.5 * speechlike(2.0 * t));
    let o = harness(&["transcribe", "--model-dir", m, folder.to_str().unwrap(), c.to_str().unwrap(), "--batch", "2", "--json", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files = v["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, [a.to_str().unwrap(), b.to_str().unwrap(), c.to_str().unwrap()]);
    for (f, p) in files.iter().zip([&a, &b, &c]) {
        let one = harness(&["transcribe", "--model-dir", m, p.to_str().unwrap(), "--json", "--quiet"]);
        assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
        let one: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
        assert_eq!(f["segments"][0]["tokens"], one["segments"][0]["tokens"], "{}", p.display());
        assert_eq!(f["text"], one["text"], "{}", p.display());
    }
    // Beams and batch together: each clip's beams chosen among its own candidates.
    let o = harness(&["transcribe", "--model-dir", m, folder.to_str().unwrap(), c.to_str().unwrap(), "--batch", "3", "--beam", "2", "--json", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (f, p) in v["files"].as_array().unwrap().iter().zip([&a, &b, &c]) {
        let one = harness(&["transcribe", "--model-dir", m, p.to_str().unwrap(), "--beam", "2", "--json", "--quiet"]);
        assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
        let one: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
        assert_eq!(f["segments"][0]["tokens"], one["segments"][0]["tokens"], "beam 2, {}", p.display());
    }
    let empty = tmp.path().join("none");
    std::fs::create_dir(&empty).unwrap();
    let o = harness(&["transcribe", "--model-dir", m, a.to_str().unwrap(), empty.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("without .wav files"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = harness(&["transcribe", "--model-dir", m, a.to_str().unwrap(), "/nonexistent/x.wav"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no such file"), "{}", String::from_utf8_lossy(&o.stderr));
    let quiet = wav(tmp.path(), "quiet.wav", 4.0, 16_000, |_| 0.0);
    let o = harness(&["transcribe", "--model-dir", m, quiet.to_str().unwrap(), "--vad", "--json", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["text"].as_str(), v["segments"].as_array().map(Vec::len), v["windows"].as_u64()), (Some(""), Some(0), Some(0)), "{v}");
    assert_eq!(v["vad"]["speech_seconds"], 0.0);
}

#[test]
fn bad_requests_are_refused_by_name() {
    let model = model_dir();
    let tmp = tempfile::tempdir().unwrap();
    let m = model.path().to_str().unwrap();
    let short = wav(tmp.path(), "short.wav", 2.0, 16_000, speechlike);
    let o = harness(&["transcribe", "--model-dir", m, short.to_str().unwrap(), "--language", "de"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("English-only"), "{}", String::from_utf8_lossy(&o.stderr));
    let silent = wav(tmp.path(), "empty.wav", 0.0, 16_000, speechlike);
    let o = harness(&["transcribe", "--model-dir", m, silent.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("empty"), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(model.path().join("tokenizer.json")).unwrap();
    let o = harness(&["transcribe", "--model-dir", m, short.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("tokenizer.json"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// An 8-bit copy saved by `harness quantize` transcribes exactly as quantizing at load does.
#[test]
fn quantized_copy_transcribes_as_load_time_quantization() {
    let model = model_dir();
    let m = model.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q8");
    let o = Command::new(env!("CARGO_BIN_EXE_harness")).args(["quantize", "--model", "whisper", "--model-dir", m, "-o", q.to_str().unwrap(), "--quantize", "8"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let audio = wav(tmp.path(), "a.wav", 4.0, 16_000, speechlike);
    let tokens = |args: &[&str]| -> serde_json::Value {
        let o = harness(&[&["transcribe", audio.to_str().unwrap(), "--json", "--quiet"], args].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["segments"].clone()
    };
    assert_eq!(tokens(&["--model-dir", q.to_str().unwrap()]), tokens(&["--model-dir", m, "--quantize", "8"]));
    let o = harness(&["transcribe", audio.to_str().unwrap(), "--model-dir", m, "--quantize", "4", "--group-size", "48"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("group size 48"), "{}", String::from_utf8_lossy(&o.stderr));
}
