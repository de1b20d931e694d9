//! A bounded mutation fuzz of every parser that reads a user's file (run by `cargo test`, so
//! CI runs it): WAV headers, codes files, each model's config.json, fixture manifests, reports,
//! peer lines and targets tables. Each case must give Ok or an error, never a panic.
//! `HARNESS_FUZZ_CASES` raises the number of cases per input (default 200) for a longer run.
#![cfg(test)]
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use models::config::ModelConfig;

use crate::stats::Rng;

fn cases() -> usize {
    std::env::var("HARNESS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
}

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(p)
}

/// Byte-level mutations: flips, overwrites with boundary bytes, truncation, duplication.
fn mutate_bytes(rng: &mut Rng, src: &[u8]) -> Vec<u8> {
    let mut b = src.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            b.push(rng.below(256) as u8);
            continue;
        }
        let i = rng.below(b.len());
        match rng.below(5) {
            0 => b[i] ^= 1 << rng.below(8),
            1 => b[i] = [0u8, 0xff, 0x7f, 0x80, b'0', b'9', b'"', b'{'][rng.below(8)],
            2 => b.truncate(i),
            3 => {
                let j = (i + 1 + rng.below(16)).min(b.len());
                let chunk = b[i..j].to_vec();
                b.splice(i..i, chunk);
            }
            _ => {
                b.remove(i);
            }
        }
    }
    b
}

/// JSON-aware mutations: numbers replaced by extremes, strings by hostile ones, keys dropped,
/// types changed.
fn mutate_json(rng: &mut Rng, v: &mut serde_json::Value) {
    use serde_json::Value;
    let extremes = || -> Vec<Value> {
        vec![
            Value::from(0),
            Value::from(-1),
            Value::from(1_000_000_000i64),
            Value::from(i64::from(i32::MAX)),
            Value::from(u64::MAX),
            Value::from(1e308),
            Value::from(-0.0),
            Value::from(""),
            Value::from("../../x"),
            Value::Null,
            Value::Bool(true),
            serde_json::json!([]),
            serde_json::json!({}),
        ]
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[rng.below(keys.len())];
            match rng.below(4) {
                0 => {
                    m.remove(k);
                }
                1 => {
                    let e = extremes();
                    m.insert(k.clone(), e[rng.below(e.len())].clone());
                }
                _ => mutate_json(rng, m.get_mut(k).expect("key listed above")),
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.below(a.len());
            if rng.below(3) == 0 {
                a.remove(i);
            } else {
                mutate_json(rng, &mut a[i]);
            }
        }
        _ => {
            let e = extremes();
            *v = e[rng.below(e.len())].clone();
        }
    }
}

/// Run `f` on mutations of `seed_text`, JSON-aware and byte-level, asserting no panic.
fn fuzz_text(name: &str, seed_text: &str, seed: u64, f: impl Fn(&str)) {
    let mut rng = Rng::new(seed);
    let base: Option<serde_json::Value> = serde_json::from_str(seed_text).ok();
    for case in 0..cases() {
        let text = match (&base, case % 2) {
            (Some(b), 0) => {
                let mut v = b.clone();
                for _ in 0..1 + rng.below(3) {
                    mutate_json(&mut rng, &mut v);
                }
                v.to_string()
            }
            _ => String::from_utf8_lossy(&mutate_bytes(&mut rng, seed_text.as_bytes())).into_owned(),
        };
        if catch_unwind(AssertUnwindSafe(|| f(&text))).is_err() {
            panic!("{name}: case {case} panicked on input:\n{text}");
        }
    }
}

#[test]
fn model_configs_never_panic() {
    let read = |p: &str| std::fs::read_to_string(fixture(p)).unwrap();
    fuzz_text("whisper config", &read("whisper-s0/config.json"), 1, |t| {
        let _ = models::whisper::WhisperConfig::from_json(t, "c");
    });
    fuzz_text("musicgen config", &read("musicgen-s0/config.json"), 2, |t| {
        let _ = models::musicgen::MusicgenConfig::from_json(t, "c");
    });
    fuzz_text("encodec config", &read("encodec32k-s0/config.json"), 3, |t| {
        if let Ok(c) = models::encodec::EncodecConfig::from_json(t, "c") {
            // What the codec derives from a valid config must not overflow either.
            let _ = (c.hop_length(), c.frame_rate(), c.num_quantizers());
        }
    });
    fuzz_text("htdemucs config", &read("htdemucs-s0/config.json"), 4, |t| {
        let _ = models::htdemucs::HtDemucsConfig::from_json(t, "c");
    });
    fuzz_text("clap config", &read("clap-s0/config.json"), 5, |t| {
        let _ = models::clap::ClapConfig::from_json(t, "c");
    });
}

#[test]
fn reports_peer_lines_targets_and_manifests_never_panic() {
    let report = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../baselines/cuda-h200.json")).unwrap();
    fuzz_text("report", &report, 6, |t| {
        if let Ok(r) = crate::report::json::parse(t) {
            // A report that parses must also render and compare.
            let _ = crate::report::text::render(&r);
            let _ = crate::report::html::render(&r);
            let _ = crate::report::compare::compare(&r, "r", &r, 10.0);
        }
    });
    let peers = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../baselines/cuda-h200-peers.jsonl")).unwrap();
    let first = peers.lines().find(|l| l.starts_with('{')).unwrap().to_string();
    fuzz_text("peer line", &first, 7, |t| {
        let _ = crate::peers::parse(t, "p");
    });
    fuzz_text("targets table", include_str!("../data/targets.json"), 8, |t| {
        let _ = crate::targets::Table::parse(t);
    });
    let manifest = std::fs::read_to_string(fixture("encodec24k-s0/manifest.json")).unwrap();
    fuzz_text("fixture manifest", &manifest, 9, |t| {
        if let Ok(m) = serde_json::from_str::<crate::parity::Manifest>(t) {
            for (k, tol) in &m.tolerances {
                let _ = tol.check(k);
            }
        }
    });
}

#[test]
fn wav_headers_and_codes_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A small valid WAV and codes file to mutate.
    let wav = dir.path().join("seed.wav");
    crate::audio::write_wav(&wav, &crate::audio::Audio { sample_rate: 16_000, channels: vec![vec![0.25; 64]] }, true).unwrap();
    let wav_bytes = std::fs::read(&wav).unwrap();
    let codes = dir.path().join("seed.codes");
    let meta = std::collections::BTreeMap::from([("samples", "640".to_string()), ("model", "m".to_string())]);
    crate::codec::write_codes_for_tests(&codes, &mlx_rs::Array::from_slice(&[1i32, 2, 3, 4, 5, 6, 7, 8], &[1, 2, 4]), &meta).unwrap();
    let codes_bytes = std::fs::read(&codes).unwrap();
    let mut rng = Rng::new(10);
    let probe = dir.path().join("probe");
    for case in 0..cases() {
        let (bytes, is_wav) = if case % 2 == 0 { (mutate_bytes(&mut rng, &wav_bytes), true) } else { (mutate_bytes(&mut rng, &codes_bytes), false) };
        std::fs::write(&probe, &bytes).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            if is_wav {
                let _ = crate::audio::read_wav(&probe);
            } else {
                let _ = crate::codec::read_codes_for_tests(&probe);
            }
        }));
        assert!(r.is_ok(), "case {case} ({}) panicked on {:?}", if is_wav { "WAV" } else { "codes" }, bytes);
    }
    // Nothing but the seeds and the probe was written.
    let mut names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["probe", "seed.codes", "seed.wav"]);
}
