//! EnCodec's LSTM at the 32 kHz model's size (2 layers of 1024, 250 steps = 5 s of frames):
//! the recurrence as separate MLX ops, layer after layer, against the compiled wavefront and (with
//! MLX's CUDA backend) the fused kernel per layer, median of ROUNDS runs each, interleaved, with
//! the largest difference from the separate ops.
//!
//!     cargo run --release -p models --example lstm_recurrence [-- ROUNDS STEPS DIM]
use std::time::Instant;

use mlx_rs::{random, Array};
use models::nn::lstm::{forward_stack, LstmLayer, Recurrence};

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, d: i32| -> anyhow::Result<i32> { Ok(std::env::args().nth(i).map(|s| s.parse()).transpose()?.unwrap_or(d)) };
    let (rounds, steps, dim) = (arg(1, 5)?, arg(2, 250)?, arg(3, 1024)?);
    let w = |seed: u64, shape: &[i32]| -> anyhow::Result<Array> { Ok(random::normal::<f32>(shape, None, None, &random::key(seed)?)?.multiply(mlx_rs::array!(1.0 / (dim as f32).sqrt()))?) };
    let layers = [
        LstmLayer::new(w(0, &[4 * dim, dim])?, w(1, &[4 * dim, dim])?, &w(2, &[4 * dim])?, &w(3, &[4 * dim])?)?,
        LstmLayer::new(w(1, &[4 * dim, dim])?, w(0, &[4 * dim, dim])?, &w(3, &[4 * dim])?, &w(2, &[4 * dim])?)?,
    ];
    let x = random::normal::<f32>(&[steps, 1, dim], None, None, &random::key(4)?)?;
    x.eval()?;
    let run = |rec: Recurrence| -> anyhow::Result<(f64, Array)> {
        let t = Instant::now();
        let h = forward_stack(&layers, &x, None, rec)?.0;
        h.eval()?;
        Ok((t.elapsed().as_secs_f64() * 1e3, h))
    };
    let recs = [Recurrence::Ops, Recurrence::Compiled, Recurrence::Fused];
    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); recs.len()];
    let mut diff = [0f32; 3];
    for r in 0..=rounds {
        let mut reference = None;
        for (i, &rec) in recs.iter().enumerate() {
            let (t, y) = run(rec)?;
            let base = reference.get_or_insert_with(|| y.clone());
            diff[i] = diff[i].max(base.subtract(&y)?.abs()?.max(None)?.item_cast::<f32>());
            if r > 0 {
                ms[i].push(t);
            }
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let m: Vec<f64> = ms.iter_mut().map(med).collect();
    let fused = if models::nn::lstm_cuda::fits(dim, 1) { "fused kernel per layer" } else { "fused (not available here: runs as the wavefront)" };
    println!("lstm 2x{dim}, {steps} steps, median of {rounds}, device {}:", models::runtime::default_device_kind()?);
    println!("  ops, layer after layer {:.2} ms", m[0]);
    println!("  compiled wavefront     {:.2} ms  {:.2}x  max |diff| {:.2e}", m[1], m[0] / m[1], diff[1]);
    println!("  {fused} {:.2} ms  {:.2}x  max |diff| {:.2e}", m[2], m[0] / m[2], diff[2]);
    if models::nn::lstm_cuda::fits(dim, 1) {
        // Where the fused kernel's time goes: one layer, the whole kernel and with parts left out.
        use models::nn::lstm_cuda::{layer_probe, Probe};
        let xg = random::normal::<f32>(&[steps, 1, 4 * dim], None, None, &random::key(5)?)?;
        let z = mlx_rs::ops::zeros::<f32>(&[1, dim])?;
        let w_hh_t = w(1, &[dim, 4 * dim])?;
        mlx_rs::transforms::eval([&xg, &z, &w_hh_t])?;
        for probe in [Probe::Full, Probe::NoBarrier, Probe::NoProduct, Probe::WeightsFromMemory] {
            let mut v = Vec::new();
            for r in 0..=rounds {
                let t = Instant::now();
                let (y, _, _) = layer_probe(&xg, &w_hh_t, &z, &z, probe)?.ok_or_else(|| anyhow::anyhow!("the layer does not fit"))?;
                y.eval()?;
                if r > 0 {
                    v.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            let t = med(&mut v);
            println!("  one layer, {probe:?}: {t:.3} ms, {:.2} us per step", t * 1e3 / steps as f64);
        }
    }
    Ok(())
}
