//! `harness codec` end to end: the hub path (offline, on a local cache laid out as the hub's),
//! WAV encode and decode, streaming decode, and refusals of bad input.
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::fixture;

const COMMIT: &str = "5e2c7b1f9a0d4c3b8e6f1a2b3c4d5e6f7a8b9c0d";

/// A hub cache holding `facebook/encodec_32khz` (tiny random weights from the seed-0 fixture):
/// content-addressed blobs, a snapshot of symlinks, and `refs/main`.
fn hub_cache() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("models--facebook--encodec_32khz");
    let snap = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    for (i, f) in ["config.json", "model.safetensors"].iter().enumerate() {
        let blob = format!("blob{i}");
        std::fs::copy(fixture("encodec32k-s0").join(f), repo.join("blobs").join(&blob)).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(f)).unwrap();
    }
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    dir
}

fn harness(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness")).args(args).env("HF_HUB_CACHE", cache).env("HF_HUB_OFFLINE", "1").output().unwrap()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{}{err}", String::from_utf8_lossy(&o.stdout));
    err
}

fn fail(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[f32]) {
    let spec = hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample((s * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

fn read_wav(path: &Path) -> (u32, Vec<f32>) {
    let mut r = hound::WavReader::open(path).unwrap();
    (r.spec().sample_rate, r.samples::<f32>().map(Result::unwrap).collect())
}

#[test]
fn encode_and_decode_through_the_offline_hub_cache() {
    let cache = hub_cache();
    let c = cache.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let tone: Vec<f32> = (0..7000).map(|i| (i as f32 * 0.05).sin() * 0.4).collect();
    write_wav(Path::new(&d("in.wav")), 32_000, 1, &tone);

    let args = ["--model", "facebook/encodec_32khz", "--cache-dir", c];
    let log = ok(&harness(&[&["codec", "encode", &d("in.wav"), "-o", &d("codes.safetensors")][..], &args].concat(), cache.path()));
    assert!(log.contains("4 codebooks x 11 frames at 2.2 kbps"), "{log}");

    // Decoding finds the model and its commit from the codes file.
    ok(&harness(&["codec", "decode", &d("codes.safetensors"), "-o", &d("full.wav"), "--cache-dir", c], cache.path()));
    let log = ok(&harness(&["codec", "decode", &d("codes.safetensors"), "-o", &d("stream.wav"), "--stream-chunk", "3", "--cache-dir", c], cache.path()));
    assert!(log.contains("streaming: 4 chunks of 3 frames"), "{log}");
    let (rate, full) = read_wav(Path::new(&d("full.wav")));
    let (_, streamed) = read_wav(Path::new(&d("stream.wav")));
    assert_eq!((rate, full.len()), (32_000, 7000), "decoded audio is trimmed to the input length");
    let err = full.iter().zip(&streamed).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(err < 1e-4, "streaming decode differs from the full decode by {err}");
    assert!(full.iter().any(|v| v.abs() > 1e-3));

    // The naive path gives the same codes.
    ok(&harness(&[&["codec", "encode", &d("in.wav"), "-o", &d("naive.safetensors"), "--variant", "naive"][..], &args].concat(), cache.path()));
    assert_eq!(std::fs::read(d("naive.safetensors")).unwrap(), std::fs::read(d("codes.safetensors")).unwrap());
}

#[test]
fn bad_input_gets_a_clear_error() {
    let cache = hub_cache();
    let c = cache.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let args = ["--model", "facebook/encodec_32khz", "--cache-dir", c];
    let encode = |input: &str, extra: &[&str]| harness(&[&["codec", "encode", input, "-o", &d("c.safetensors")][..], &args, extra].concat(), cache.path());

    let tone: Vec<f32> = (0..4800).map(|i| (i as f32 * 0.05).sin() * 0.4).collect();
    write_wav(Path::new(&d("48k.wav")), 48_000, 1, &tone);
    let e = fail(&encode(&d("48k.wav"), &[]));
    assert!(e.contains("48000 Hz") && e.contains("32000 Hz") && e.contains("--resample"), "{e}");
    let log = ok(&encode(&d("48k.wav"), &["--resample"]));
    assert!(log.contains("0.10 s of audio"), "{log}");
    std::fs::remove_file(d("c.safetensors")).unwrap();

    write_wav(Path::new(&d("stereo.wav")), 32_000, 2, &tone);
    assert!(fail(&encode(&d("stereo.wav"), &[])).contains("2 channel(s)"));
    write_wav(Path::new(&d("empty.wav")), 32_000, 1, &[]);
    assert!(fail(&encode(&d("empty.wav"), &[])).contains("holds no samples"));
    std::fs::write(d("junk.wav"), b"not audio at all").unwrap();
    assert!(fail(&encode(&d("junk.wav"), &[])).contains("cannot read"));
    assert!(fail(&encode(&d("missing.wav"), &[])).contains("missing.wav"));
    write_wav(Path::new(&d("ok.wav")), 32_000, 1, &tone);
    assert!(fail(&encode(&d("ok.wav"), &["--bandwidth", "6"])).contains("bandwidth 6 kbps"));
    assert!(!Path::new(&d("c.safetensors")).exists(), "no output is written on failure");

    // Not in the cache, offline: the error says what is missing.
    let e = fail(&harness(&["codec", "encode", &d("ok.wav"), "-o", &d("c.safetensors"), "--model", "facebook/encodec_24khz", "--cache-dir", c], cache.path()));
    assert!(e.contains("facebook/encodec_24khz") && e.contains("offline"), "{e}");

    // A truncated codes file.
    ok(&encode(&d("ok.wav"), &[]));
    let bytes = std::fs::read(d("c.safetensors")).unwrap();
    std::fs::write(d("cut.safetensors"), &bytes[..bytes.len() - 9]).unwrap();
    let e = fail(&harness(&["codec", "decode", &d("cut.safetensors"), "-o", &d("o.wav"), "--cache-dir", c], cache.path()));
    assert!(e.contains("truncated"), "{e}");
    assert!(!Path::new(&d("o.wav")).exists());
}

#[test]
fn codes_files_read_back_from_anywhere_and_inputs_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("encodec32k-s0").join(f), model.join(f)).unwrap();
    }
    let tone: Vec<f32> = (0..4800).map(|i| (i as f32 * 0.05).sin() * 0.4).collect();
    write_wav(&dir.path().join("in.wav"), 32_000, 1, &tone);
    let before = std::fs::read(dir.path().join("in.wav")).unwrap();
    let run = |cwd: &Path, args: &[&str]| Command::new(env!("CARGO_BIN_EXE_harness")).current_dir(cwd).args(args).env("HF_HUB_OFFLINE", "1").output().unwrap();

    // -o naming the input, however spelled, is refused and the input kept.
    let e = fail(&run(dir.path(), &["codec", "encode", "in.wav", "-o", "./in.wav", "--model", "model"]));
    assert!(e.contains("same file as the input"), "{e}");
    assert_eq!(std::fs::read(dir.path().join("in.wav")).unwrap(), before);

    // A relative --model and a codes file named without .safetensors: decoded from elsewhere.
    ok(&run(dir.path(), &["codec", "encode", "in.wav", "-o", "codes.bin", "--model", "model"]));
    let elsewhere = tempfile::tempdir().unwrap();
    let codes = dir.path().join("codes.bin");
    let out = elsewhere.path().join("out.wav");
    ok(&run(elsewhere.path(), &["codec", "decode", codes.to_str().unwrap(), "-o", out.to_str().unwrap()]));
    assert_eq!(read_wav(&out).1.len(), 4800);

    // Sizes and codes read from the file are checked: a zero length, a code past the codebook.
    let bytes = std::fs::read(&codes).unwrap();
    let at = bytes.windows(11).position(|w| w == b"\"samples\":\"").unwrap() + 11;
    let mut zero = bytes.clone();
    for b in zero[at..].iter_mut().take_while(|b| b.is_ascii_digit()) {
        *b = b'0';
    }
    std::fs::write(dir.path().join("zero.bin"), &zero).unwrap();
    let e = fail(&run(dir.path(), &["codec", "decode", "zero.bin", "-o", "z.wav"]));
    assert!(e.contains("metadata 'samples'"), "{e}");
    let mut wild = bytes;
    let n = wild.len();
    wild[n - 4..].copy_from_slice(&99_999i32.to_le_bytes());
    std::fs::write(dir.path().join("wild.bin"), &wild).unwrap();
    let e = fail(&run(dir.path(), &["codec", "decode", "wild.bin", "-o", "w.wav"]));
    assert!(e.contains("code 99999 is outside"), "{e}");
    assert!(!dir.path().join("z.wav").exists() && !dir.path().join("w.wav").exists());
}

/// A chunked, normalised codec (the encodec_48khz settings of the encodec48k-s0 fixture): the
/// codes file holds each chunk's codes and scale; decoding overlap-adds the chunks back to the
/// input's length; streaming is refused by name.
#[test]
fn chunked_codecs_round_trip_with_their_scales() {
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let model = fixture("encodec48k-s0");
    let m = model.to_str().unwrap();
    // 5000 stereo samples: three 1920-sample chunks every 1900 samples.
    let x: Vec<f32> = (0..10_000).map(|i| ((i / 2) as f32 * if i % 2 == 0 { 0.03 } else { 0.07 }).sin() * 0.3).collect();
    write_wav(Path::new(&d("in.wav")), 48_000, 2, &x);
    let log = ok(&harness(&["codec", "encode", &d("in.wav"), "-o", &d("codes.safetensors"), "--model", m, "--bandwidth", "6"], dir.path()));
    assert!(log.contains("4 codebooks x 18 frames at 6 kbps"), "{log}");
    ok(&harness(&["codec", "decode", &d("codes.safetensors"), "-o", &d("out.wav"), "--model", m], dir.path()));
    let (rate, y) = read_wav(Path::new(&d("out.wav")));
    assert_eq!((rate, y.len()), (48_000, 10_000));
    assert!(y.iter().all(|v| v.is_finite()) && y.iter().any(|v| v.abs() > 1e-3));
    let e = fail(&harness(&["codec", "decode", &d("codes.safetensors"), "-o", &d("s.wav"), "--model", m, "--stream-chunk", "2"], dir.path()));
    assert!(e.contains("cannot stream"), "{e}");
    // A codes file of an unchunked codec is not decoded by a chunked one.
    let e = fail(&harness(&["codec", "decode", &d("codes.safetensors"), "-o", &d("w.wav"), "--model", fixture("encodec32k-s0").to_str().unwrap()], dir.path()));
    assert!(e.contains("48000 Hz") || e.contains("chunked"), "{e}");
}
