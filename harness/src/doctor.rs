//! `harness doctor`: what MLX runs on here, and how fast a plain matmul is.
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use mlx_rs::{random, Array};
use models::runtime::{self, DeviceKind};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object (keys: mlx_version, device, blas, matmul_gflops, ...).
    #[arg(long)]
    json: bool,
    /// Device to measure on; default: MLX's default (the GPU when the library has one).
    #[arg(long, value_parser = ["cpu", "gpu"])]
    device: Option<String>,
    /// Timed matmul runs (the median is reported; at least 10).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(10..))]
    runs: u32,
}

#[derive(Serialize)]
struct Device {
    kind: &'static str,
    name: String,
}

#[derive(Serialize)]
struct Report {
    mlx_version: String,
    device: Device,
    blas: String,
    blas_is_openblas: bool,
    gpu_available: bool,
    /// Multiprocessors of the CUDA GPU that runs this crate's custom kernels (the fused LSTM,
    /// the decoder layer kernel), when the device is one; `None` elsewhere, where those steps
    /// take their other paths.
    cuda_kernels_sms: Option<i32>,
    matmul_gflops: f64,
    matmul: MatmulDetail,
    cpu_model: String,
    cores: usize,
}

#[derive(Serialize)]
struct MatmulDetail {
    n: i32,
    dtype: &'static str,
    warmup: u32,
    runs: u32,
    median_ms: f64,
    min_ms: f64,
}

const N: i32 = 1024;
const WARMUP: u32 = 3;

pub fn run(args: &Args) -> Result<ExitCode> {
    if let Some(d) = &args.device {
        runtime::select_device(d.parse()?)?;
    }
    let kind = runtime::default_device_kind()?;
    let name = runtime::device_label(kind);
    let blas = runtime::blas_info();
    let samples = time_matmul(args.runs).context("timing the 1024x1024 matmul")?;
    let median = crate::stats::median(&samples);
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let flops = 2.0 * f64::from(N).powi(3);
    let report = Report {
        mlx_version: runtime::mlx_version()?,
        device: Device { kind: kind.as_str(), name },
        blas: blas.as_ref().map_or_else(|| "none loaded".into(), |b| b.describe()),
        blas_is_openblas: blas.as_ref().is_some_and(|b| b.is_openblas()),
        gpu_available: runtime::gpu_available(),
        cuda_kernels_sms: runtime::cuda_sm_count().filter(|_| models::nn::layer_cuda::available()),
        matmul_gflops: flops / median / 1e9,
        matmul: MatmulDetail { n: N, dtype: "float32", warmup: WARMUP, runs: args.runs, median_ms: median * 1e3, min_ms: min * 1e3 },
        cpu_model: runtime::cpu_model(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("MLX          {}", report.mlx_version);
        println!("device       {} ({})", report.device.kind, report.device.name);
        println!("GPU backend  {}", if report.gpu_available { "available" } else { "none" });
        match report.cuda_kernels_sms {
            Some(sms) => println!("CUDA kernels the fused LSTM and the decoder layer kernel ({sms} multiprocessors)"),
            None => println!("CUDA kernels none (the device is not a CUDA GPU: LSTMs and decoder layers take their other paths)"),
        }
        println!("BLAS         {}", report.blas);
        println!("CPU          {} ({} cores)", report.cpu_model, report.cores);
        println!("matmul       {:.1} GFLOP/s  ({N}x{N} f32, median {:.3} ms of {} runs after {WARMUP} warm-up)", report.matmul_gflops, report.matmul.median_ms, args.runs);
    }
    // MKL counts too: preloaded (LD_PRELOAD of its libmkl_rt) it takes MLX's products itself.
    if kind == DeviceKind::Cpu && !report.blas_is_openblas && !report.blas.contains("libmkl") && cfg!(target_os = "linux") {
        eprintln!("warning: MLX's CPU matmul is not on OpenBLAS or MKL ({}); expect ~35x slower matmuls", report.blas);
    }
    Ok(ExitCode::SUCCESS)
}

/// Seconds per evaluated 1024x1024 f32 matmul, one sample per run.
fn time_matmul(runs: u32) -> Result<Vec<f64>> {
    let key = random::key(0)?;
    let a = random::normal::<f32>(&[N, N], None, None, &key)?;
    let b = random::normal::<f32>(&[N, N], None, None, &random::key(1)?)?;
    mlx_rs::transforms::eval([&a, &b])?;
    let step = |a: &Array, b: &Array| -> Result<f64> {
        let t = Instant::now();
        let c = a.matmul(b)?;
        c.eval()?;
        Ok(t.elapsed().as_secs_f64())
    };
    for _ in 0..WARMUP {
        step(&a, &b)?;
    }
    (0..runs).map(|_| step(&a, &b)).collect()
}
