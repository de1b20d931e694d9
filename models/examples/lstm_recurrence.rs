//! EnCodec's LSTM at the 32 kHz model's size (2 layers of 1024, 250 steps = 5 s of frames):
//! the recurrence as separate MLX ops, layer after layer, against the compiled wavefront, median of ROUNDS
//! runs each, interleaved, with the largest difference between the two outputs.
//!
//!     cargo run --release -p models --example lstm_recurrence [-- ROUNDS STEPS DIM]
use std::time::Instant;

use mlx_rs::{random, Array};
use models::nn::lstm::{forward_stack, set_async_eval_every, LstmLayer, Recurrence, DEFAULT_ASYNC_EVAL_EVERY};

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, d: i32| -> anyhow::Result<i32> { Ok(std::env::args().nth(i).map(|s| s.parse()).transpose()?.unwrap_or(d)) };
    let (rounds, steps, dim) = (arg(1, 5)?, arg(2, 250)?, arg(3, 1024)?);
    let w = |seed: u64, shape: &[i32]| -> anyhow::Result<Array> {
        Ok(random::normal::<f32>(shape, None, None, &random::key(seed)?)?.multiply(mlx_rs::array!(1.0 / (dim as f32).sqrt()))?)
    };
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
    // Compiled with async evaluation every N waves (0: none), interleaved with the ops.
    let settings = [0, 8, DEFAULT_ASYNC_EVAL_EVERY, 128];
    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); settings.len() + 1];
    let mut diff = 0f32;
    for r in 0..=rounds {
        let (a, ya) = run(Recurrence::Ops)?;
        if r > 0 {
            ms[0].push(a);
        }
        for (k, &every) in settings.iter().enumerate() {
            set_async_eval_every(every);
            let (b, yb) = run(Recurrence::Compiled)?;
            diff = diff.max(ya.subtract(&yb)?.abs()?.max(None)?.item_cast::<f32>());
            if r > 0 {
                ms[k + 1].push(b);
            }
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ops = med(&mut ms[0]);
    println!("lstm 2x{dim}, {steps} steps, median of {rounds}: ops, layer after layer {ops:.2} ms");
    for (k, every) in settings.iter().enumerate() {
        let t = med(&mut ms[k + 1]);
        println!("  compiled wavefront, async eval every {every:>3} waves (0: none): {t:.2} ms, {:.2}x", ops / t);
    }
    println!("  max |ops - compiled| {diff:.2e}");
    Ok(())
}
