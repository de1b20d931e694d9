//! HTDemucs at the released size with random weights: one 7.8 s segment's forward pass per
//! variant (and per convolution formulation), wall time and MLX peak memory; then the
//! optimized path's per-phase profile (evaluating at each phase boundary).
//!
//!     cargo run --release -p models --example htdemucs_profile [-- ROUNDS]
use std::time::Instant;

use models::checkpoint::Checkpointed;
use models::htdemucs::{HtDemucs, HtDemucsConfig, Taps};
use models::nn::conv::{Exec, Kernels, Layout};
use models::nn::lstm::Recurrence;

fn main() -> anyhow::Result<()> {
    // The BLAS settings the harness runs with (OpenBLAS reads them at load: restarts once).
    models::runtime::tune_blas_environment();
    models::runtime::retain_freed_memory();
    let rounds: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let cfg = HtDemucsConfig::htdemucs();
    let model = HtDemucs::random(cfg.clone(), 1)?;
    let x = mlx_rs::random::normal::<f32>(&[1, 2, cfg.training_length()], None, None, &mlx_rs::random::key(2)?)?.multiply(mlx_rs::array!(0.2f32))?;
    x.eval()?;
    let execs = [
        ("naive (NCHW, MLX conv)", Exec { layout: Layout::ChannelsFirst, kernels: Kernels::Mlx, recurrence: Recurrence::Ops }),
        ("channels-last, MLX conv", Exec { layout: Layout::ChannelsLast, kernels: Kernels::Mlx, recurrence: Recurrence::Ops }),
        ("NCHW, GEMM conv", Exec { layout: Layout::ChannelsFirst, kernels: Kernels::Gemm, recurrence: Recurrence::Ops }),
        ("optimized (channels-last, GEMM conv)", Exec { layout: Layout::ChannelsLast, kernels: Kernels::Gemm, recurrence: Recurrence::Ops }),
    ];
    for r in 0..rounds {
        for (name, e) in execs {
            mlx_rs::memory::reset_peak_memory()?;
            let t = Instant::now();
            model.forward_with(&x, e, None)?.eval()?;
            let peak = mlx_rs::memory::peak_memory()? as f64 / 1048576.0;
            println!("round {r} {name:40} {:8.1} ms  peak {peak:7.0} MiB", t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut taps = Taps::profiling();
    model.forward_with(&x, execs[3].1, Some(&mut taps))?;
    for (name, ms) in taps.phases.map(|p| p.rows).unwrap_or_default() {
        println!("phase {name:24} {ms:8.1} ms");
    }
    Ok(())
}
