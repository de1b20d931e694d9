//! `harness`: the benchmark-and-conformance tool for the audio model zoo on MLX.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use harness::{bench, codec, doctor, embed_cmd, musicgen_cmd, parity, quant_args, separate_cmd, whisper_cmd};
use models::runtime;

#[derive(Parser)]
#[command(name = "harness", version, about = "Benchmark and conformance harness for audio models on MLX", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Precision of float32 matrix products and convolutions: fp32 (full float32, the mode in
    /// which parity passes) or tf32 (MLX's own default on CUDA: faster, errors near 1e-3). The
    /// CPU always computes in fp32. Recorded in every report; overrides MLX_ENABLE_TF32.
    #[arg(long, global = true, value_parser = ["fp32", "tf32"], default_value = "fp32")]
    precision: String,
}

#[derive(Subcommand)]
enum Command {
    /// Report the MLX version, device, BLAS and a 1024x1024 f32 matmul speed.
    Doctor(doctor::Args),
    /// Run the benchmarks (what ./run-benchmarks.sh runs): naive vs optimized, targets, reports.
    Bench(bench::Args),
    /// Check our outputs against a reference fixture (fixtures/make_fixtures.py); exit 0 only
    /// when every output is within its tolerance.
    Parity(parity::Args),
    /// EnCodec as a tool: encode WAV to codes, decode codes to WAV (optionally streaming).
    Codec(codec::Args),
    /// Merge reports of one machine (e.g. one per model from a GPU lease) into one, attach the
    /// peers' times (scripts/peers/) and judge the targets over all of them.
    Merge(harness::merge::Args),
    /// How far one run's saved outputs (bench --save-outputs) are from another's: token and code
    /// agreement, SNR and cosine (e.g. --precision tf32 against fp32).
    Accuracy(harness::accuracy::Args),
    /// Compare two saved reports (the baseline first) as `bench -c` does, without running
    /// anything; exits 3 on a regression.
    Compare(harness::bench::CompareArgs),
    /// Speech segments of a WAV by Silero VAD (the silero-vad package's 16 kHz model and its
    /// get_speech_timestamps), in seconds.
    Vad(harness::vad_cmd::Args),
    /// Time a base build and the current build side by side on this machine, their bench
    /// runs interleaved round by round, and judge the change as --compare does; exits 3 on a
    /// regression (what `run-benchmarks.sh --ab BASE_REF` runs).
    Ab(harness::ab::Args),
    /// Trends over many recorded reports: a chart per workload and machine with its intervals,
    /// the commits where a step happened, and a summary for CI logs.
    History(harness::history::Args),
    /// File bench reports into a history folder under their machine and commit (as `bench
    /// --record` does).
    Record(harness::history::RecordArgs),
    /// Transcribe a WAV with Whisper (greedy or beam search; language detection on
    /// multilingual models; overlapping 30 s windows with segment timestamps for long audio).
    Transcribe(whisper_cmd::TranscribeArgs),
    /// Generate music from a text prompt with MusicGen (T5 conditioning, classifier-free
    /// guidance, top-k sampling or greedy) and write it as WAV.
    Generate(musicgen_cmd::Args),
    /// Separate a music track into drums, bass, other and vocals with HTDemucs (demucs'
    /// chunking or the seed's overlap-add) and write one WAV per source.
    Separate(separate_cmd::Args),
    /// CLAP audio and text embeddings and their similarities (zero-shot audio tagging).
    Embed(embed_cmd::Args),
    /// Save a Whisper or MusicGen checkpoint at float16, 8 or 4 bits, so later loads skip the
    /// quantization.
    Quantize(quant_args::Args),
    /// Whisper weights: convert a CTranslate2 checkpoint into a folder `transcribe` loads.
    Whisper(whisper_cmd::Args),
    /// Accuracy beside speed: `eval asr` scores Whisper's transcripts of a manifest of
    /// (audio, reference text) by word error rate (openai-whisper's English normaliser, a
    /// bootstrap interval) with its real-time factor and peak memory, in a JSON and HTML
    /// report; --compare gates on the WER.
    Eval(harness::eval::Args),
}

fn main() -> ExitCode {
    // OpenBLAS' idle workers spin for about 0.1 s by default, stealing a core from the host
    // kernels on small machines; the setting is read when the library loads, so the program is
    // run again with it set (once; a value in the environment is kept).
    runtime::tune_blas_environment();
    let cli = Cli::parse();
    // Before anything touches MLX: it reads its TF32 switch once, at the first product.
    let precision: runtime::Precision = match cli.precision.parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Ok(v) = std::env::var(runtime::TF32_VAR) {
        let env_tf32 = v.trim() != "0";
        if env_tf32 != (precision == runtime::Precision::Tf32) {
            eprintln!("note: {}={v} in the environment is overridden by --precision {precision}", runtime::TF32_VAR);
        }
    }
    precision.apply();
    // Before the first array: MLX's CPU build mallocs and frees every array, and glibc's default
    // maps and unmaps the large ones, zeroing fresh pages each time (see the function).
    runtime::retain_freed_memory();
    let result = match cli.command {
        Command::Doctor(args) => doctor::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Parity(args) => parity::run(&args),
        Command::Codec(args) => codec::run(&args),
        Command::Whisper(args) => whisper_cmd::run(&args),
        Command::Transcribe(args) => whisper_cmd::transcribe(&args),
        Command::Generate(args) => musicgen_cmd::run(&args),
        Command::Separate(args) => separate_cmd::run(&args),
        Command::Embed(args) => embed_cmd::run(&args),
        Command::Quantize(args) => quant_args::run(&args),
        Command::Merge(args) => harness::merge::run(&args),
        Command::Compare(args) => bench::compare_reports(&args),
        Command::Ab(args) => harness::ab::run(&args),
        Command::Vad(args) => harness::vad_cmd::run(&args),
        Command::Accuracy(args) => harness::accuracy::run(&args),
        Command::History(args) => harness::history::run(&args),
        Command::Record(args) => harness::history::run_record(&args),
        Command::Eval(args) => harness::eval::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
