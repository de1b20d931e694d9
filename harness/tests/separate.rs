//! `harness separate` end to end on the tiny HTDemucs of the seed-0 fixture: one WAV per
//! source at the model's rate, channels and the track's length, for every chunking; and
//! refusals by name.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::fixture;

fn separate(args: &[&str], input: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness")).arg("separate").arg(input).arg("-o").arg(out).arg("--model-dir").arg(fixture("htdemucs-s0")).args(["--quiet"]).args(args).output().unwrap()
}

fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[f32]) {
    let spec = hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 32, sample_format: hound::SampleFormat::Float };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

fn read(path: &Path) -> (hound::WavSpec, Vec<f32>) {
    let mut r = hound::WavReader::open(path).unwrap();
    (r.spec(), r.samples::<f32>().map(Result::unwrap).collect())
}

#[test]
fn writes_one_wav_per_source_for_every_chunking() {
    let dir = tempfile::tempdir().unwrap();
    // 0.6 s of mono at 22.05 kHz: resampled to 44.1 kHz, duplicated to stereo, and longer than
    // the fixture model's 0.25 s segment, so it takes several chunks.
    let n = 13_230;
    let x: Vec<f32> = (0..n).map(|i| 0.3 * ((i as f32) * 0.05).sin() + 0.1 * ((i as f32) * 0.31).cos()).collect();
    let input = dir.path().join("in.wav");
    write_wav(&input, 22_050, 1, &x);
    let mut outs = Vec::new();
    for chunking in [vec!["--chunking", "demucs"], vec!["--chunking", "overlap", "--chunk-seconds", "0.2"], vec!["--chunking", "whole"]] {
        let out = dir.path().join(chunking[1]);
        let o = separate(&chunking, &input, &out);
        assert!(o.status.success(), "{chunking:?}: {}", String::from_utf8_lossy(&o.stderr));
        let mut sources = Vec::new();
        for name in ["drums", "bass", "other", "vocals"] {
            let (spec, s) = read(&out.join(format!("{name}.wav")));
            assert_eq!((spec.sample_rate, spec.channels), (44_100, 2));
            assert_eq!(s.len(), 2 * 2 * n, "{chunking:?} {name}: the track's length at 44.1 kHz, stereo");
            assert!(s.iter().all(|v| v.is_finite()) && s.iter().any(|v| *v != 0.0));
            sources.push(s);
        }
        assert!(String::from_utf8_lossy(&o.stderr).contains("separated 0.60 s into 4 sources"));
        outs.push(sources);
    }
    // Each source is its own output, not one signal written four times.
    for run in &outs {
        assert_ne!(run[0], run[3]);
        assert_ne!(run[1], run[2]);
    }
    // Three segments per model call: the same separation as one at a time.
    let out = dir.path().join("batched");
    let o = separate(&["--chunking", "demucs", "--batch", "3"], &input, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (i, name) in ["drums", "bass", "other", "vocals"].iter().enumerate() {
        let (_, s) = read(&out.join(format!("{name}.wav")));
        let err = s.iter().zip(&outs[0][i]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "{name}: batched differs by {err}");
    }
}

/// A temporary folder holding a short stereo track, `in.wav`.
fn short_track() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.wav");
    write_wav(&input, 44_100, 2, &[0.1; 2000]);
    (dir, input)
}

/// The stderr of a run that must fail.
fn err(o: Output) -> String {
    assert!(!o.status.success());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn refusals_name_the_problem() {
    let (dir, input) = short_track();
    let e = err(separate(&["--chunking", "overlap", "--chunk-seconds", "1.0"], &input, &dir.path().join("o")));
    assert!(e.contains("--chunk-seconds 1: must be positive and at most the model's segment (0.25 s)"), "{e}");
    let e = err(separate(&["--overlap", "1.5"], &input, &dir.path().join("o")));
    assert!(e.contains("--overlap 1.5"), "{e}");
    let empty = dir.path().join("empty.wav");
    write_wav(&empty, 44_100, 2, &[]);
    let e = err(separate(&[], &empty, &dir.path().join("o")));
    assert!(e.contains("holds no samples"), "{e}");
    let nan = dir.path().join("nan.wav");
    write_wav(&nan, 44_100, 2, &[0.0, f32::NAN]);
    let e = err(separate(&[], &nan, &dir.path().join("o")));
    assert!(e.contains("NaN"), "{e}");
    let three = dir.path().join("three.wav");
    write_wav(&three, 44_100, 3, &[0.1; 300]);
    assert!(separate(&[], &three, &dir.path().join("o3")).status.success(), "extra channels are dropped, as demucs does");
    assert!(!dir.path().join("o").exists(), "no output folder after a refusal");
}

#[test]
fn outputs_never_replace_files_nor_leave_the_output_folder() {
    let (dir, input) = short_track();
    // A folder with files in it is refused before any work, and left as it was.
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("drums.wav"), b"mine").unwrap();
    let e = err(separate(&[], &input, &full));
    assert!(e.contains("not an empty folder"), "{e}");
    assert_eq!(std::fs::read(full.join("drums.wav")).unwrap(), b"mine");
    // -o naming the input, however spelled.
    let e = err(separate(&[], &input, &dir.path().join(".").join("in.wav")));
    assert!(e.contains("same file as the input"), "{e}");

    // Source names come from config.json and become file names: one that leaves the output
    // folder, or two alike, is refused when the model is read, and nothing is written.
    let with_sources = |sources: &str| {
        let m = dir.path().join(format!("model-{}", sources.len()));
        std::fs::create_dir(&m).unwrap();
        for f in std::fs::read_dir(fixture("htdemucs-s0")).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), m.join(f.file_name())).unwrap();
        }
        let cfg = std::fs::read_to_string(m.join("config.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
        v["sources"] = serde_json::from_str(sources).unwrap();
        std::fs::write(m.join("config.json"), v.to_string()).unwrap();
        m
    };
    for (sources, want) in [
        (r#"["../escape", "bass", "other", "vocals"]"#, "not usable as a file name"),
        (r#"["/tmp/abs", "bass", "other", "vocals"]"#, "not usable as a file name"),
        (r#"["drums", "bass", "Drums", "vocals"]"#, "named twice"),
    ] {
        let m = with_sources(sources);
        let out = dir.path().join("o");
        let o = Command::new(env!("CARGO_BIN_EXE_harness")).arg("separate").arg(&input).arg("-o").arg(&out).arg("--model-dir").arg(&m).arg("--quiet").output().unwrap();
        let e = err(o);
        assert!(e.contains(want), "{sources}: {e}");
        assert!(!out.exists() && !dir.path().join("escape.wav").exists(), "{sources}: nothing written");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().contains("partial")).collect();
    assert!(leftovers.is_empty(), "no staging folder left behind: {leftovers:?}");
}

/// `separate` on demucs' own checkpoints: a bag by name from a repo folder, a single `.th` file
/// by path, and a released name that is not cached with downloads off.
#[test]
fn demucs_checkpoints_by_name_path_and_bag() {
    let (dir, input) = short_track();
    let repo = fixture("htdemucs-th-s0").join("repo");
    let run = |args: &[&str], out: &Path| Command::new(env!("CARGO_BIN_EXE_harness")).arg("separate").arg(&input).arg("-o").arg(out).arg("--quiet").args(args).output().unwrap();
    let out = dir.path().join("bag");
    let o = run(&["--model", "bag", "--repo", repo.to_str().unwrap()], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for s in ["drums", "bass", "other", "vocals"] {
        let (spec, x) = read(&out.join(format!("{s}.wav")));
        assert_eq!((spec.channels, x.len()), (2, 2000));
    }
    let out = dir.path().join("six");
    let th = repo.join("sixx0002-fa72d13a.th");
    let o = run(&["--model", th.to_str().unwrap()], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 6);
    assert!(out.join("guitar.wav").is_file() && out.join("piano.wav").is_file());
    let cache = dir.path().join("cache");
    let e = err(run(&["--model", "htdemucs_ft", "--offline", "--cache-dir", cache.to_str().unwrap()], &dir.path().join("ft")));
    assert!(e.contains("f7e0c4bc-ba3fe64a.th") && e.contains("downloads are off") && e.contains("https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/"), "{e}");
    let e = err(run(&["--model", "nope", "--repo", repo.to_str().unwrap()], &dir.path().join("nope")));
    assert!(e.contains("nope is neither a checkpoint signature nor a bag"), "{e}");
    assert!(!dir.path().join("ft").exists() && !dir.path().join("nope").exists(), "no output on failure");
}
