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
use models::checkpoint::Checkpointed;
use models::whisper::audio::LogMel;
use models::whisper::longform::{self, LongForm};
use models::whisper::{BeamSearch, DecodeOptions, LogitFilters, Timestamps, Whisper};
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
    let enc = model.encode(&mel, models::nn::attention::AttentionKernel::Fused).unwrap();
    let filters = LogitFilters { always: ints("suppress_tokens"), at_begin: ints("suppress_blank"), timestamps: None };
    let eot = reference["eot"].as_i64().unwrap() as i32;
    let want = ints("tokens");
    for v in [Variant::Naive, Variant::Optimized] {
        let mut got = model.greedy_with(&enc, &ints("sot_sequence"), 224, Some(eot), &DecodeOptions::for_variant(v), &filters).unwrap().remove(0);
        assert_eq!(got.pop(), Some(eot), "{v:?}: decoding ends at end-of-transcript");
        assert_eq!(got, want, "{v:?}: tokens differ from openai-whisper's");
    }
    // Beam search (beam 5) finds a different, likelier transcript than greedy here.
    let beam = ints("beam5_tokens");
    assert_ne!(beam, want);
    for v in [Variant::Naive, Variant::Optimized] {
        let got = model.beam_search(&enc, &ints("sot_sequence"), &BeamSearch { beam: 5, max_new: 224, eot }, &DecodeOptions::for_variant(v), &filters).unwrap();
        assert_eq!(got.tokens, beam, "{v:?}: beam-search tokens differ from openai-whisper's");
        let avg = got.sum_logprob / (got.tokens.len() + 1) as f64;
        assert!((avg - reference["beam5_avg_logprob"].as_f64().unwrap()).abs() < 1e-3, "{v:?}: average log-probability {avg}");
    }
    let tok = models::whisper::tokenizer::Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    assert_eq!(tok.decode(&want).trim(), reference["text"].as_str().unwrap());
    // The encoder side of the tokenizer: openai-whisper's blank suppression is encode(" ") + eot,
    // and the reference text encodes back to the greedy tokens.
    assert_eq!([tok.encode(" ").unwrap(), vec![eot]].concat(), ints("suppress_blank"));
    assert_eq!(tok.encode(reference["speech"]["text"].as_str().unwrap()).unwrap(), ints("text_tokens"));
    // Greedy with timestamps (one window) equals openai-whisper's, timestamps included.
    let filters = LogitFilters { timestamps: Some(Timestamps::new(50362, eot)), ..filters };
    for v in [Variant::Naive, Variant::Optimized] {
        let got = model.greedy_with(&enc, &ints("timestamps_sot_sequence"), 224, Some(eot), &DecodeOptions::for_variant(v), &filters).unwrap().remove(0);
        assert_eq!(got, [ints("timestamps_tokens"), vec![eot]].concat(), "{v:?}: timestamped tokens differ from openai-whisper's");
    }
    let (segs, unfinished) = models::whisper::segments(&ints("timestamps_tokens"), 50363, 30.0);
    assert!(!unfinished);
    assert_eq!(segs.iter().map(|s| tok.decode(&s.tokens)).collect::<String>().trim(), reference["timestamps_text"].as_str().unwrap());
}

/// Lower-case words only, for comparing transcripts.
fn words(s: &str) -> String {
    s.to_lowercase().chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect::<String>().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
#[ignore = "needs the tiny.en weights: fixtures/fetch_tiny_en.sh target/whisper-tiny-en"]
fn tiny_en_long_form_transcribes_every_repeat_once() {
    let dir = std::env::var_os("WHISPER_TINY_EN_DIR").map_or_else(|| root().join("target/whisper-tiny-en"), PathBuf::from);
    let refdir = root().join("fixtures/whisper-tiny-en");
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(refdir.join("reference.json")).unwrap()).unwrap();
    let model = Whisper::load_dir(&dir).unwrap();
    let tok = models::whisper::tokenizer::Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let speech = harness::audio::read_wav(&refdir.join("speech.wav")).unwrap().channels.remove(0);
    let lf_ref = &reference["longform"];
    let (every, repeats) = (lf_ref["layout"]["every_s"].as_u64().unwrap() as usize, lf_ref["layout"]["repeats"].as_u64().unwrap() as usize);
    // The same signal as the reference's: the speech every `every` seconds, silence between.
    let mut long = vec![0f32; every * repeats * 16_000];
    for k in 0..repeats {
        long[k * every * 16_000..k * every * 16_000 + speech.len()].copy_from_slice(&speech);
    }
    let ints = |k: &str| -> Vec<i32> { reference[k].as_array().unwrap().iter().map(|t| t.as_i64().unwrap() as i32).collect() };
    let eot = reference["eot"].as_i64().unwrap() as i32;
    let lf = LongForm {
        decode: DecodeOptions::optimized(),
        beam: None,
        filters: LogitFilters { always: ints("suppress_tokens"), at_begin: ints("suppress_blank"), timestamps: None },
        timestamps: Timestamps::new(50362, eot),
        max_new: 224,
        chunks: models::chunked::ChunkedProcessor::whisper(),
    };
    let mut calls = Vec::new();
    let segs = longform::transcribe(&model, &long, &lf, |_| Ok(vec![50257]), |d, t| calls.push((d, t))).unwrap();
    let n = lf.chunks.quiet_offsets(&long, 3200).len();
    assert!(n >= 3, "{n} windows for {} s", long.len() / 16_000);
    assert_eq!(calls, (1..=n).map(|d| (d, n)).collect::<Vec<_>>());
    for s in &segs {
        eprintln!("[{:7.2} --> {:7.2}] w{} {}", s.start, s.end, s.window, tok.decode(&s.tokens));
    }
    assert!(segs.windows(2).all(|p| p[0].start <= p[1].start), "segments out of order");
    // Every repeat is transcribed exactly once: none lost at a window edge, none doubled by an overlap.
    let text = words(&segs.iter().map(|s| tok.decode(&s.tokens)).collect::<String>());
    let sentence = "machine learning models run fast on modern hardware";
    assert_eq!(text.matches(sentence).count(), repeats, "{text}");
    // openai-whisper's own long-form transcript (seek-based windows) has each repeat once too.
    assert_eq!(words(lf_ref["text"].as_str().unwrap()).matches(sentence).count(), repeats);
    // The timestamps place each repeat's second sentence in time: some segment holding it
    // starts no earlier than 1 s before that repeat's speech and overlaps the sentence.
    for k in 0..repeats {
        let t = (k * every) as f64;
        assert!(
            segs.iter().any(|s| words(&tok.decode(&s.tokens)).contains(sentence) && s.start >= t - 1.0 && s.start < t + 7.0 && s.end > t + 3.3),
            "repeat {k} (speech at {t} s) has no segment at its time"
        );
    }
}

/// openai-whisper's `transcribe` of `fixtures/make_speech.py long` (2.7 minutes of 40 spoken
/// sentences), in the option sets of `fixtures/make_seek_reference.py`: our seek loop gives
/// the same text and segments, and the same words with times within 20 ms.
#[test]
#[ignore = "needs the tiny.en weights and the long recording: fixtures/fetch_tiny_en.sh target/whisper-tiny-en; python3 fixtures/make_speech.py long target/speech-long"]
fn tiny_en_seek_loop_and_word_timestamps_equal_openai_transcribe() {
    use models::whisper::seek::SeekOptions;
    use models::whisper::transcribe::{LongFormMode, TranscribeOptions, Transcriber};
    let dir = std::env::var_os("WHISPER_TINY_EN_DIR").map_or_else(|| root().join("target/whisper-tiny-en"), PathBuf::from);
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root().join("fixtures/whisper-tiny-en/seek-reference.json")).unwrap()).unwrap();
    let wav_path = root().join("target/speech-long/long.wav");
    let bytes = std::fs::read(&wav_path).unwrap_or_else(|e| panic!("{}: {e}\nmake it first: python3 fixtures/make_speech.py long target/speech-long", wav_path.display()));
    let sha = models::htdemucs::pretrained::sha256_hex(&bytes);
    assert_eq!(sha, reference["audio"]["sha256"].as_str().unwrap(), "long.wav is not the recording the reference was made from (espeak-ng or sox versions?)");
    let wav = harness::audio::read_wav(&wav_path).unwrap();
    let audio = &wav.channels[0];
    let t = Transcriber::load(&dir, None).unwrap_or_else(|e| panic!("{e}\nfetch the weights first: fixtures/fetch_tiny_en.sh {}", dir.display()));
    let lead: Vec<f32> = {
        let s = &reference["silence_first"];
        let (silence, lead) = (s["silence_s"].as_u64().unwrap() as usize * 16_000, s["lead_s"].as_u64().unwrap() as usize * 16_000);
        std::iter::repeat_n(0.0, silence).chain(audio[..lead].iter().copied()).collect()
    };
    for (name, run) in reference["runs"].as_object().unwrap() {
        let o = &run["options"];
        let so = SeekOptions {
            word_timestamps: o["word_timestamps"].as_bool().unwrap_or(false),
            condition_on_previous_text: o["condition_on_previous_text"].as_bool().unwrap_or(true),
            initial_prompt: o["initial_prompt"].as_str().map(String::from),
            ..SeekOptions::default()
        };
        let opts = TranscribeOptions {
            beam: o["beam_size"].as_u64().map(|b| b as usize),
            timestamps: true,
            long_form: LongFormMode::Seek(so.clone()),
            ..TranscribeOptions::default()
        };
        let clip: &[f32] = if name == "silence-first" { &lead } else { audio };
        let got = t.transcribe_seek(clip, &opts, &so, |_, _| {}).unwrap();
        let want = run["segments"].as_array().unwrap();
        assert_eq!(got.text.trim(), run["text"].as_str().unwrap().trim(), "{name}: text");
        assert_eq!(got.segments.len(), want.len(), "{name}: segments");
        let mut worst: f64 = 0.0;
        for (g, w) in got.segments.iter().zip(want) {
            assert_eq!(g.text.trim(), w["text"].as_str().unwrap().trim(), "{name}: segment text");
            assert_eq!(g.seek as u64, w["seek"].as_u64().unwrap(), "{name}: seek of {:?}", g.text);
            let toks: Vec<i32> = w["tokens"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap() as i32).collect();
            assert_eq!(g.tokens, toks, "{name}: tokens of {:?}", g.text);
            worst = worst.max((g.start - w["start"].as_f64().unwrap()).abs()).max((g.end - w["end"].as_f64().unwrap()).abs());
            assert!((g.avg_logprob - w["avg_logprob"].as_f64().unwrap()).abs() < 1e-3, "{name}: avg_logprob {} vs {}", g.avg_logprob, w["avg_logprob"]);
            assert!((g.no_speech_prob - w["no_speech_prob"].as_f64().unwrap()).abs() < 1e-3, "{name}: no_speech_prob");
            assert!((g.compression_ratio - w["compression_ratio"].as_f64().unwrap()).abs() < 1e-9, "{name}: compression ratio of {:?}", g.text);
            let ww = w["words"].as_array().cloned().unwrap_or_default();
            assert_eq!(g.words.len(), ww.len(), "{name}: words of {:?}", g.text);
            for (a, b) in g.words.iter().zip(&ww) {
                assert_eq!(a.word, b["word"].as_str().unwrap(), "{name}");
                worst = worst.max((a.start - b["start"].as_f64().unwrap()).abs()).max((a.end - b["end"].as_f64().unwrap()).abs());
                assert!((a.probability - b["probability"].as_f64().unwrap()).abs() < 1e-3, "{name}: probability of {:?}", a.word);
            }
        }
        assert!(worst <= 0.02 + 1e-9, "{name}: a segment or word time differs by {worst} s");
        eprintln!("{name}: {} segments equal, times within {worst:.3} s", got.segments.len());
    }
}
