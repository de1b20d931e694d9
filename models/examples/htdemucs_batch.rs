//! HTDemucs at the released size with random weights: a separation with demucs' chunking at
//! 1, 2, 4 and 8 segments per model call (optimized execution), median wall time of ROUNDS
//! runs each and MLX peak memory.
//!
//!     cargo run --release -p models --example htdemucs_batch [-- SECONDS ROUNDS]
use std::time::Instant;

use models::checkpoint::Checkpointed;
use models::chunked::DemucsChunking;
use models::htdemucs::{Chunking, HtDemucs, HtDemucsConfig};
use models::Variant;

fn main() -> anyhow::Result<()> {
    let seconds: f64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(60.0);
    let rounds: usize = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let model = HtDemucs::random(HtDemucsConfig::htdemucs(), 1)?;
    let n = (seconds * 44_100.0) as i32;
    let mix = mlx_rs::random::normal::<f32>(&[1, 2, n], None, None, &mlx_rs::random::key(4)?)?.multiply(mlx_rs::array!(0.2f32))?;
    mix.eval()?;
    for batch in [1, 2, 4, 8] {
        let chunking = Chunking::Demucs(DemucsChunking { batch, ..model.demucs_chunking() });
        model.separate(&mix, Variant::Optimized, chunking, |_, _| {})?.eval()?;
        let mut ts = Vec::new();
        mlx_rs::memory::reset_peak_memory()?;
        for _ in 0..rounds {
            let t = Instant::now();
            model.separate(&mix, Variant::Optimized, chunking, |_, _| {})?.eval()?;
            ts.push(t.elapsed().as_secs_f64());
        }
        ts.sort_by(f64::total_cmp);
        let peak = mlx_rs::memory::peak_memory()? as f64 / (1u64 << 30) as f64;
        println!("{seconds} s, {batch} segment(s) per call: median {:.3} s over {rounds}, peak {peak:.2} GiB", ts[ts.len() / 2]);
    }
    Ok(())
}
