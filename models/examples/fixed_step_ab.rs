//! The optimized decode with and without the compiled fixed-shape step, interleaved in one
//! process: MusicGen small (50 or more guided steps) and Whisper large-v3-turbo's decoder (64
//! tokens), random weights, median of ROUNDS each. The bench's `*-fixed-step` rows measure the
//! switch alone against the naive path; this measures it on top of the other four.
//!
//!     cargo run --release -p models --example fixed_step_ab -- [ROUNDS] [MUSICGEN_STEPS]
use std::time::Instant;

use models::checkpoint::Checkpointed;
use models::musicgen::{Conditioning, DecodeOptions, MusicGen, MusicgenConfig, Sampler};
use models::whisper::{Whisper, WhisperConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> models::Result<()> {
    // The BLAS settings the harness runs with (OpenBLAS reads them at load: restarts once).
    models::runtime::tune_blas_environment();
    let arg = |i: usize, d: usize| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (rounds, steps) = (arg(1, 5), arg(2, 50));
    let with = DecodeOptions { fixed_step: true, ..DecodeOptions::optimized() };
    let without = DecodeOptions { fixed_step: false, ..DecodeOptions::optimized() };
    println!("device {}, eval every {} steps", models::runtime::default_device_kind()?, with.eval_every);

    let model = MusicGen::random(MusicgenConfig::preset("small")?, 41)?;
    let d = model.config.decoder.hidden_size;
    let states = mlx_rs::random::normal::<f32>(&[2, 12, d], None, None, &mlx_rs::random::key(31)?)?;
    let mask = mlx_rs::ops::concatenate(&[mlx_rs::ops::zeros::<f32>(&[1, 1, 1, 12])?, mlx_rs::ops::full::<f32>(&[1, 1, 1, 12], mlx_rs::array!(f32::MIN))?], 0)?;
    let cond = Conditioning::new(states, mask, false)?;
    let mut times = [Vec::new(), Vec::new()];
    for r in 0..=rounds {
        for (i, o) in [&with, &without].into_iter().enumerate() {
            let t = Instant::now();
            model.generate_from(&cond, steps, 3.0, &Sampler::Greedy, o, |_, _| {})?;
            if r > 0 {
                times[i].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let [a, b] = times.map(median);
    println!("musicgen small, {steps} guided steps: with the fixed step {a:.1} ms, without {b:.1} ms ({:.2}x)", b / a);
    drop(model);

    let mut cfg = WhisperConfig::preset("large-v3-turbo")?;
    cfg.encoder_layers = 1;
    let model = Whisper::random(cfg, 11)?;
    let audio = mlx_rs::random::normal::<f32>(&[1, 1500, 1280], None, None, &mlx_rs::random::key(12)?)?;
    audio.eval()?;
    let sot = [50258, 50259, 50360, 50364];
    let mut times = [Vec::new(), Vec::new()];
    for r in 0..=rounds {
        for (i, o) in [&with, &without].into_iter().enumerate() {
            let t = Instant::now();
            model.greedy(&audio, &sot, 64, None, o)?;
            if r > 0 {
                times[i].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let [a, b] = times.map(median);
    println!("whisper turbo decoder, 64 tokens: with the fixed step {a:.1} ms, without {b:.1} ms ({:.2}x)", b / a);
    Ok(())
}
