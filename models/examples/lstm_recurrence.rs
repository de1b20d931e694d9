//! EnCodec's LSTM at the 32 kHz model's size (2 layers of 1024, 250 steps = 5 s of frames):
//! the recurrence as separate MLX ops, layer after layer, against the compiled wavefront, median of ROUNDS
//! runs each, interleaved, with the largest difference between the two outputs.
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
    let (mut ops_ms, mut comp_ms) = (Vec::new(), Vec::new());
    let mut diff = 0f32;
    for r in 0..=rounds {
        let (a, ya) = run(Recurrence::Ops)?;
        let (b, yb) = run(Recurrence::Compiled)?;
        diff = diff.max(ya.subtract(&yb)?.abs()?.max(None)?.item_cast::<f32>());
        if r > 0 {
            ops_ms.push(a);
            comp_ms.push(b);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (med(&mut ops_ms), med(&mut comp_ms));
    println!("lstm 2x{dim}, {steps} steps, median of {rounds}: ops, layer after layer {a:.2} ms; compiled wavefront {b:.2} ms; {:.2}x; max |diff| {diff:.2e}", a / b);
    Ok(())
}
