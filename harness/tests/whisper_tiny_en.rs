//! Real tiny.en weights on real (synthesized) speech: our greedy tokens must equal
//! openai-whisper's on the same weights and audio (`fixtures/whisper-tiny-en/reference.json`,
//! made by `fixtures/make_tiny_en_reference.py`).
//!
//! Ignored by default: it needs the 70 MB weights, which the tests may not download. Run:
//!
//!     fixtures/fetch_tiny_en.sh target/whisper-tiny-en
//!     cargo test -p harness --test whisper_tiny_en -- --ignored
//!
//! (`WHISPER_TINY_EN_DIR` points elsewhere.)
use std::path::{Path, PathBuf};

use mlx_rs::Array;
use models::whisper::audio::LogMel;
use models::whisper::{BeamSearch, DecodeOptions, Suppress, Whisper};
use models::Variant;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
#[ignore = "needs the tiny.en weights: fixtures/fetch_tiny_en.sh target/whisper-tiny-en"]
fn tiny_en_transcript_equals_openai_whisper() {
    let dir = std::env::var_os("WHISPER_TINY_EN_DIR").map_or_else(|| root().join("target/whisper-tiny-en"), PathBuf::from);
    let refdir = root().join("fixtures/whisper-tiny-en");
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(refdir.join("reference.json")).unwrap()).unwrap();
    let ints = |k: &str| -> Vec<i32> { reference[k].as_array().unwrap().iter().map(|t| t.as_i64().unwrap() as i32).collect() };
    let model = Whisper::load_dir(&dir).unwrap_or_else(|e| panic!("{e}\nfetch the weights first: fixtures/fetch_tiny_en.sh {}", dir.display()));
    let wav = harness::audio::read_wav(&refdir.join("speech.wav")).unwrap();
    assert_eq!(wav.sample_rate, 16_000);
    let samples = &wav.channels[0];
    let mel = LogMel::new(80).unwrap().compute(&Array::from_slice(samples, &[samples.len() as i32])).unwrap();
    let enc = model.encode(&mel).unwrap();
    let suppress = Suppress { always: ints("suppress_tokens"), at_begin: ints("suppress_blank") };
    let eot = reference["eot"].as_i64().unwrap() as i32;
    let want = ints("tokens");
    for v in [Variant::Naive, Variant::Optimized] {
        let mut got = model.greedy_with(&enc, &ints("sot_sequence"), 224, Some(eot), &DecodeOptions::for_variant(v), &suppress).unwrap().remove(0);
        assert_eq!(got.pop(), Some(eot), "{v:?}: decoding ends at end-of-transcript");
        assert_eq!(got, want, "{v:?}: tokens differ from openai-whisper's");
    }
    // Beam search (beam 5) finds a different, likelier transcript than greedy here.
    let beam = ints("beam5_tokens");
    assert_ne!(beam, want);
    for v in [Variant::Naive, Variant::Optimized] {
        let got = model.beam_search(&enc, &ints("sot_sequence"), &BeamSearch { beam: 5, max_new: 224, eot }, &DecodeOptions::for_variant(v), &suppress).unwrap();
        assert_eq!(got.tokens, beam, "{v:?}: beam-search tokens differ from openai-whisper's");
        let avg = got.sum_logprob / (got.tokens.len() + 1) as f64;
        assert!((avg - reference["beam5_avg_logprob"].as_f64().unwrap()).abs() < 1e-3, "{v:?}: average log-probability {avg}");
    }
    let tok = models::whisper::tokenizer::Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    assert_eq!(tok.decode(&want).trim(), reference["text"].as_str().unwrap());
}
