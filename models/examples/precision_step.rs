//! A quick CPU figure for issue 11: milliseconds per guided decode step of MusicGen medium at
//! real size (random weights) and MLX peak memory, by weight precision, over a few steps (the
//! `musicgen/decode-medium-50-*` workloads take minutes per round on a CPU at int8/int4).
//!
//!     cargo run --release -p models --example precision_step -- [STEPS]
use std::time::Instant;

use models::checkpoint::Checkpointed;
use models::musicgen::{Conditioning, DecodeOptions, MusicGen, MusicgenConfig, Sampler};

fn main() -> models::Result<()> {
    // The BLAS settings the harness runs with (OpenBLAS reads them at load: restarts once).
    models::runtime::tune_blas_environment();
    let steps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(8);
    for name in ["fp32", "fp16", "int8", "int4"] {
        let model = MusicGen::random_as(MusicgenConfig::preset("medium")?, 41, Some(name.parse()?))?;
        let d = model.config.decoder.hidden_size;
        let states = mlx_rs::random::normal::<f32>(&[2, 12, d], None, None, &mlx_rs::random::key(31)?)?;
        let mask = mlx_rs::ops::concatenate(&[mlx_rs::ops::zeros::<f32>(&[1, 1, 1, 12])?, mlx_rs::ops::full::<f32>(&[1, 1, 1, 12], mlx_rs::array!(f32::MIN))?], 0)?;
        let cond = Conditioning::new(states, mask, false)?;
        mlx_rs::memory::reset_peak_memory()?;
        // One warm-up run of 7 steps (the shortest the delay pattern allows), then the timed one.
        model.generate_from(&cond, 7, 3.0, &Sampler::Greedy, &DecodeOptions::optimized(), |_, _| {})?;
        let t = Instant::now();
        model.generate_from(&cond, steps, 3.0, &Sampler::Greedy, &DecodeOptions::optimized(), |_, _| {})?;
        let ms = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
        println!("musicgen medium {name}: {ms:.0} ms/step over {steps} steps, MLX peak {:.0} MiB", mlx_rs::memory::peak_memory()? as f64 / 1048576.0);
    }
    Ok(())
}
