//! `harness generate` end to end on the tiny MusicGen of the seed-0 fixture with a made-up
//! T5-style (Unigram, Metaspace, `</s>` appended) tokenizer: WAV out at the codec's rate and the
//! asked length, seeded sampling, greedy equal to the library's, and refusals by name.
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::fixture;

fn model_dir() -> tempfile::TempDir {
    model_dir_of("musicgen-s0")
}

fn model_dir_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(name).join(f), dir.path().join(f)).unwrap();
    }
    let special = |id: u32, content: &str| serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    let mut vocab = vec![serde_json::json!(["<pad>", 0.0]), serde_json::json!(["</s>", 0.0]), serde_json::json!(["<unk>", 0.0]), serde_json::json!(["▁", -2.0])];
    for c in 'a'..='z' {
        vocab.push(serde_json::json!([c.to_string(), -3.0]));
    }
    for w in ["▁jazz", "▁piano", "▁slow", "▁drums"] {
        vocab.push(serde_json::json!([w, -1.0]));
    }
    let metaspace = serde_json::json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true});
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "</s>"), special(2, "<unk>")],
        "normalizer": null,
        "pre_tokenizer": metaspace,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": false},
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness")).arg("generate").args(args).env("HF_HUB_OFFLINE", "1").output().unwrap()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn err(o: &Output) -> String {
    assert!(!o.status.success());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn generates_wav_of_the_asked_length_with_seeded_sampling() {
    let model = model_dir();
    let m = model.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    let base = ["--model-dir", m, "--prompt", "slow jazz piano", "--seconds", "0.3", "--quiet"];
    ok(&harness(&[&base[..], &["-o", &out("a.wav"), "--seed", "1"]].concat()));
    ok(&harness(&[&base[..], &["-o", &out("b.wav"), "--seed", "1", "--variant", "naive"]].concat()));
    ok(&harness(&[&base[..], &["-o", &out("c.wav"), "--seed", "2"]].concat()));
    ok(&harness(&[&base[..], &["-o", &out("g.wav"), "--greedy"]].concat()));
    let read = |n: &str| harness::audio::read_wav(Path::new(&out(n))).unwrap();
    let a = read("a.wav");
    assert_eq!(a.sample_rate, 32_000);
    assert_eq!(a.channels.len(), 1);
    assert_eq!(a.len(), 9_600, "0.3 s at 32 kHz");
    assert!(a.channels[0].iter().all(|v| v.is_finite()) && a.channels[0].iter().any(|&v| v != 0.0));
    // Same seed, same music (in both variants, within float noise); another seed, other music.
    let b = read("b.wav");
    assert!(a.channels[0].iter().zip(&b.channels[0]).all(|(x, y)| (x - y).abs() < 1e-4));
    assert_ne!(a.channels[0], read("c.wav").channels[0]);
    assert_ne!(a.channels[0], read("g.wav").channels[0]);
}

#[test]
fn bad_requests_are_refused_by_name() {
    let model = model_dir();
    let m = model.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("x.wav");
    let o = o.to_str().unwrap();
    let e = err(&harness(&["--model-dir", m, "--prompt", "jazz", "--seconds", "100", "-o", o]));
    assert!(e.contains("exceed the decoder's 2048 positions"), "{e}");
    let e = err(&harness(&["--model-dir", m, "--prompt", "jazz", "--seconds", "0", "-o", o]));
    assert!(e.contains("--seconds"), "{e}");
    let e = err(&harness(&["--model-dir", m, "--prompt", "jazz", "--guidance", "0.5", "-o", o]));
    assert!(e.contains("--guidance"), "{e}");
    let e = err(&harness(&["--model-dir", m, "--prompt", "jazz", "--temperature", "0", "-o", o, "--seconds", "0.2"]));
    assert!(e.contains("temperature"), "{e}");
    std::fs::remove_file(model.path().join("tokenizer.json")).unwrap();
    let e = err(&harness(&["--model-dir", m, "--prompt", "jazz", "-o", o]));
    assert!(e.contains("tokenizer.json"), "{e}");
    assert!(!Path::new(o).exists(), "no half-written output");
}

/// `--model HUB_ID` reads a hub-layout cache offline (blobs, a snapshot of symlinks, refs/main).
#[test]
fn loads_from_a_hub_cache_offline() {
    let model = model_dir();
    let cache = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.path().join("models--facebook--musicgen-small");
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    for (i, f) in ["config.json", "model.safetensors", "tokenizer.json"].iter().enumerate() {
        std::fs::copy(model.path().join(f), repo.join("blobs").join(format!("b{i}"))).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/b{i}"), snap.join(f)).unwrap();
    }
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hub.wav");
    let o = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "generate",
            "--model",
            "facebook/musicgen-small",
            "--offline",
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "--prompt",
            "jazz",
            "--seconds",
            "0.2",
            "--greedy",
            "--quiet",
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(harness::audio::read_wav(&out).unwrap().len(), 6_400);
    let o = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["generate", "--model", "facebook/musicgen-large", "--offline", "--cache-dir", cache.path().to_str().unwrap(), "--prompt", "jazz", "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    let e = err(&o);
    assert!(e.contains("musicgen-large"), "{e}");
}

/// `harness quantize` saves an 8-bit copy that `generate` loads as saved; `--quantize` at load
/// gives the same music as the saved copy; bad settings are refused by name.
#[test]
fn quantize_saves_a_copy_that_loads_as_saved() {
    let model = model_dir();
    let m = model.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q8");
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_harness")).args(args).output().unwrap();
    ok(&run(&["quantize", "--model", "musicgen", "--model-dir", m, "-o", q.to_str().unwrap(), "--quantize", "8", "--group-size", "32"]));
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(q.join(f).exists(), "{f}");
    }
    assert!(std::fs::metadata(q.join("model.safetensors")).unwrap().len() < std::fs::metadata(model.path().join("model.safetensors")).unwrap().len());
    let a = tmp.path().join("a.wav");
    let b = tmp.path().join("b.wav");
    let common = ["--prompt", "slow jazz", "--seconds", "0.2", "--greedy", "--quiet"];
    ok(&harness(&[&["--model-dir", q.to_str().unwrap(), "-o", a.to_str().unwrap()], &common[..]].concat()));
    ok(&harness(&[&["--model-dir", m, "--quantize", "8", "--group-size", "32", "-o", b.to_str().unwrap()], &common[..]].concat()));
    let read = |p: &Path| harness::audio::read_wav(p).unwrap().channels.remove(0);
    assert_eq!(read(&a), read(&b), "saved and load-time quantization must agree");
    let e = err(&run(&["quantize", "--model", "musicgen", "--model-dir", m, "-o", tmp.path().join("x").to_str().unwrap(), "--quantize", "4"]));
    assert!(e.contains("groups of 64"), "{e}");
    let e = err(&run(&["quantize", "--model", "musicgen", "--model-dir", m, "-o", tmp.path().join("y").to_str().unwrap()]));
    assert!(e.contains("--quantize"), "{e}");
    assert!(!tmp.path().join("x").exists() && !tmp.path().join("y").exists(), "refused runs leave no folder");

    // The model's own folder, however spelled, and a folder with files are refused; the float
    // checkpoint stays as it was.
    let float = std::fs::read(model.path().join("model.safetensors")).unwrap();
    let name = model.path().file_name().unwrap().to_str().unwrap();
    let spelled = model.path().join("..").join(name);
    let e = err(&run(&["quantize", "--model", "musicgen", "--model-dir", m, "-o", spelled.to_str().unwrap(), "--quantize", "8", "--group-size", "32"]));
    assert!(e.contains("is the folder of --model-dir"), "{e}");
    let e = err(&run(&["quantize", "--model", "musicgen", "--model-dir", m, "-o", q.to_str().unwrap(), "--quantize", "8", "--group-size", "32"]));
    assert!(e.contains("not an empty folder"), "{e}");
    assert_eq!(std::fs::read(model.path().join("model.safetensors")).unwrap(), float);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .chain(std::fs::read_dir(model.path()).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp") || n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn contradictory_or_oversized_requests_are_refused_before_work() {
    let model = model_dir();
    let m = model.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.wav");
    let o = out.to_str().unwrap();
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_harness")).arg("generate").args(args).output().unwrap();
    // --greedy with a sampler setting: clap refuses (exit 2) instead of ignoring it.
    for extra in [["--top-k", "5"], ["--temperature", "0.5"], ["--seed", "3"]] {
        let r = run(&[&["--model-dir", m, "--prompt", "x", "--seconds", "0.1", "--greedy", "-o", o][..], &extra[..]].concat());
        assert_eq!(r.status.code(), Some(2), "{extra:?}");
        assert!(String::from_utf8_lossy(&r.stderr).contains("cannot be used with"), "{extra:?}");
    }
    let long = "word ".repeat(20_000);
    let e = err(&run(&["--model-dir", m, "--prompt", &long, "--seconds", "0.1", "--greedy", "-o", o, "--quiet"]));
    assert!(e.contains("tokens long"), "{e}");
    let e = err(&run(&["--model-dir", m, "--prompt", "x", "--seconds", "0.1", "-o", model.path().join("config.json").to_str().unwrap(), "--quiet"]));
    assert!(e.contains("same file as config.json"), "{e}");
    let e = err(&run(&["--model-dir", m, "--prompt", "x", "--seconds", "0.1", "-o", "/nonexistent-dir/o.wav", "--quiet"]));
    assert!(e.contains("does not exist"), "{e}");
    assert!(!out.exists());
}

/// A stereo MusicGen (the musicgen-stereo-s0 fixture) writes a two-channel WAV, its left and
/// right channels decoded from their own codebooks.
#[test]
fn stereo_models_write_two_channels() {
    let model = model_dir_of("musicgen-stereo-s0");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s.wav");
    ok(&harness(&["--model-dir", model.path().to_str().unwrap(), "--prompt", "slow jazz", "--seconds", "0.2", "--greedy", "--quiet", "-o", out.to_str().unwrap()]));
    let mut r = hound::WavReader::open(&out).unwrap();
    assert_eq!((r.spec().channels, r.spec().sample_rate), (2, 32_000));
    let s: Vec<f32> = r.samples::<f32>().map(Result::unwrap).collect();
    assert_eq!(s.len(), 2 * 6400);
    let (left, right): (Vec<f32>, Vec<f32>) = (s.iter().step_by(2).copied().collect(), s.iter().skip(1).step_by(2).copied().collect());
    assert!(left.iter().all(|v| v.is_finite()) && left != right, "two different channels");
}

/// MusicGen Melody (the musicgen-melody-s0 fixture) follows `--melody`: a different melody
/// gives different music; a model without melody conditioning refuses one by name.
#[test]
fn melody_models_follow_the_melody() {
    let model = model_dir_of("musicgen-melody-s0");
    std::fs::copy(fixture("musicgen-melody-s0").join("preprocessor_config.json"), model.path().join("preprocessor_config.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    for (name, freq) in [("a.wav", 261.63f32), ("b.wav", 440.0)] {
        let spec = hound::WavSpec { channels: 1, sample_rate: 16_000, bits_per_sample: 32, sample_format: hound::SampleFormat::Float };
        let mut w = hound::WavWriter::create(p(name), spec).unwrap();
        for i in 0..16_000 {
            w.write_sample((2.0 * std::f32::consts::PI * freq * i as f32 / 16_000.0).sin() * 0.5).unwrap();
        }
        w.finalize().unwrap();
    }
    let m = model.path().to_str().unwrap();
    let run = |melody: &str, out: &str| harness(&["--model-dir", m, "--prompt", "slow jazz", "--seconds", "0.2", "--greedy", "--quiet", "--melody", &p(melody), "-o", &p(out)]);
    ok(&run("a.wav", "out_a.wav"));
    ok(&run("b.wav", "out_b.wav"));
    let read = |f: &str| hound::WavReader::open(p(f)).unwrap().samples::<f32>().map(Result::unwrap).collect::<Vec<f32>>();
    let (a, b) = (read("out_a.wav"), read("out_b.wav"));
    assert_eq!(a.len(), 6400);
    assert!(a.iter().all(|v| v.is_finite()) && a != b, "the melody changes the music");
    let plain = model_dir();
    let e = err(&harness(&["--model-dir", plain.path().to_str().unwrap(), "--prompt", "jazz", "--seconds", "0.2", "--melody", &p("a.wav"), "-o", &p("x.wav")]));
    assert!(e.contains("no melody conditioning"), "{e}");
}
