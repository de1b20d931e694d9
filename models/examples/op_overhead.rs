//! What one MLX primitive costs when the work is tiny: a chain of N dependent elementwise adds
//! on 1024 floats, and a chain of N dependent [1, 1024] x [1024, 1024] products, each built
//! then evaluated once; microseconds per op, median of 5. The step functions of MusicGen,
//! Whisper and EnCodec's LSTM are chains like these. `scripts/peers/op_overhead_torch.py` is
//! PyTorch's side.
//!
//!     cargo run --release -p models --example op_overhead [-- N]
use std::time::Instant;

use mlx_rs::{random, Array};

fn main() -> anyhow::Result<()> {
    // The BLAS settings the harness runs with (OpenBLAS reads them at load: restarts once).
    models::runtime::tune_blas_environment();
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let x = random::normal::<f32>(&[1, 1024], None, None, &random::key(0)?)?;
    let w = random::normal::<f32>(&[1024, 1024], None, None, &random::key(1)?)?.multiply(mlx_rs::array!(0.03f32))?;
    let one = mlx_rs::array!(1e-3f32);
    mlx_rs::transforms::eval([&x, &w])?;
    let time = |f: &dyn Fn() -> anyhow::Result<Array>| -> anyhow::Result<f64> {
        f()?.eval()?;
        let mut ts = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            f()?.eval()?;
            ts.push(t.elapsed().as_secs_f64());
        }
        ts.sort_by(f64::total_cmp);
        Ok(ts[2] / n as f64 * 1e6)
    };
    let add = time(&|| {
        let mut y = x.clone();
        for _ in 0..n {
            y = y.add(&one)?;
        }
        Ok(y)
    })?;
    let mv = time(&|| {
        let mut y = x.clone();
        for _ in 0..n {
            y = y.matmul(&w)?;
        }
        Ok(y)
    })?;
    println!("MLX {n} dependent ops: add on 1024 floats {add:.1} us/op; [1,1024]x[1024,1024] matmul {mv:.1} us/op");
    Ok(())
}
