//! A decoder stack's one-position steps with the CUDA layer kernel and op by op, interleaved in
//! one process: where a step's time goes (the host building the step against the whole step,
//! evaluation included). Random weights at MusicGen's sizes (`small` 24 x 1024, `medium`
//! 48 x 1536, guidance's 2 rows, 12 text positions) or Whisper turbo's decoder (`turbo`:
//! 4 x 1280 with biases, 1 row, 1500 encoder positions); each step's input is the previous
//! step's output, evaluated every 8 steps as the optimized decode does on a GPU.
//!
//! `musicgen`: MusicGen medium's whole guided generation (embeddings, the stack, the four heads,
//! guidance, greedy picks) at `DecodeOptions::optimized()`'s interval of 8 steps: the layer
//! kernel with overlapped evaluation, the kernel evaluating synchronously, and op by op (the
//! bench's `musicgen/decode-medium-500` overlaps every step: `MusicGen::decode_options`).
//!
//! With `LAYER_TRACE` set, one run first records each layer launch's stage times on the device's
//! clock and prints their medians and how much of the run the launches kept the GPU busy.
//!
//!     cargo run --release -p models --example layer_kernel_ab -- [small|medium|turbo|musicgen] [STEPS] [ROUNDS]
use std::time::{Duration, Instant};

use mlx_rs::{random, Array};
use models::nn::attention::{Mask, MultiHeadAttention};
use models::nn::decoder::{DecodeOptions, DecodeState, DecoderLayer};
use models::nn::linear::Linear;
use models::nn::norm::LayerNorm;

fn w(seed: u64, shape: &[i32], scale: f32) -> models::Result<Array> {
    Ok(random::normal::<f32>(shape, None, None, &random::key(seed)?)?.multiply(mlx_rs::array!(scale))?)
}

fn main() -> models::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let size = args.get(1).map_or("medium", String::as_str);
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    if size == "musicgen" {
        return musicgen(steps, rounds);
    }
    let (layers_n, d, heads, ffn, batch, enc, bias) = match size {
        "small" => (24, 1024, 16, 4096, 2, 12, false),
        "medium" => (48, 1536, 24, 6144, 2, 12, false),
        "turbo" => (4, 1280, 20, 5120, 1, 1500, true),
        other => return Err(models::Error::InvalidArgument(format!("size {other:?}: small, medium, turbo or musicgen"))),
    };
    let lin = |s: u64, out: i32, inp: i32| Linear::new(w(s, &[out, inp], 1.0 / (inp as f32).sqrt())?, if bias { Some(w(s + 1, &[out], 0.02)?) } else { None });
    let attn = |s: u64| -> models::Result<MultiHeadAttention> {
        Ok(MultiHeadAttention {
            query: lin(s, d, d)?,
            key: Linear::new(w(s + 2, &[d, d], 1.0 / (d as f32).sqrt())?, None)?,
            value: lin(s + 4, d, d)?,
            out: lin(s + 6, d, d)?,
            n_head: heads,
            qkv: None,
        })
    };
    let ln = |s: u64| -> models::Result<LayerNorm> { Ok(LayerNorm { weight: w(s, &[d], 0.1)?.add(mlx_rs::array!(1.0f32))?, bias: w(s + 1, &[d], 0.1)? }) };
    let mut layers = Vec::new();
    for l in 0..layers_n as u64 {
        let s = 100 * l;
        let mut a = attn(s)?;
        a.fuse_qkv()?;
        let layer = DecoderLayer {
            attn: a,
            attn_ln: ln(s + 10)?,
            cross: Some((attn(s + 20)?, ln(s + 30)?)),
            fc1: lin(s + 40, ffn, d)?,
            fc2: lin(s + 42, d, ffn)?,
            ff_ln: ln(s + 50)?,
        };
        let mut arrays: Vec<&Array> = vec![&layer.fc1.weight.arrays()[0], &layer.fc2.weight.arrays()[0]];
        arrays.extend(layer.attn.qkv.iter().map(|q| q.weight.arrays()[0]));
        mlx_rs::transforms::eval(arrays)?;
        layers.push(layer);
    }
    let xa = w(7, &[batch, enc, d], 1.0)?;
    let x0 = w(8, &[batch, 1, d], 1.0)?;
    mlx_rs::transforms::eval([&xa, &x0])?;
    println!("device {}, {size}: {layers_n} layers of {d}, {batch} rows, {enc} encoder positions, {steps} steps", models::runtime::default_device_kind()?);
    let run = |fused: bool| -> models::Result<(Duration, Duration, u64)> {
        let opts = DecodeOptions { fused_layer: fused, ..DecodeOptions::optimized() };
        let mut state = DecodeState::new(layers.len(), &opts, steps as i32 + 1);
        let launches = models::nn::layer_cuda::launches();
        let start = Instant::now();
        let mut build = Duration::ZERO;
        let mut x = x0.clone();
        for t in 0..steps {
            let b = Instant::now();
            x = state.forward_layers(&layers, &x, &xa, Mask::None)?;
            // Keep the values in range step after step (a layer norm would; this is cheaper).
            x = x.multiply(mlx_rs::array!(0.5f32))?;
            build += b.elapsed();
            if (t + 1) % opts.eval_every.max(1) as usize == 0 || t + 1 == steps {
                x.eval()?;
                state.commit()?;
            }
        }
        Ok((start.elapsed(), build, models::nn::layer_cuda::launches() - launches))
    };
    if std::env::var_os("LAYER_TRACE").is_some() {
        models::nn::layer_cuda::Trace::begin(steps * layers.len())?;
        run(true)?;
        mlx_rs::transforms::eval(Vec::<&Array>::new())?;
        print_trace(&models::nn::layer_cuda::Trace::end()?);
    }
    for r in 0..=rounds {
        for fused in [true, false] {
            let (total, build, launches) = run(fused)?;
            if r > 0 {
                let per = |t: Duration| t.as_secs_f64() * 1e3 / steps as f64;
                println!("{:<11} {:>8.3} ms a step, of which building the graph {:.3} ms; {launches} layer kernels", if fused { "kernel" } else { "op by op" }, per(total), per(build));
            }
        }
    }
    Ok(())
}

fn musicgen(steps: usize, rounds: usize) -> models::Result<()> {
    use models::checkpoint::Checkpointed;
    use models::musicgen::{Conditioning, MusicGen, MusicgenConfig, Sampler};
    let model = MusicGen::random(MusicgenConfig::preset("medium")?, 41)?;
    let d = model.config.decoder.hidden_size;
    let text = w(31, &[1, 12, d], 1.0)?;
    let states = mlx_rs::ops::concatenate(&[text, mlx_rs::ops::zeros::<f32>(&[1, 12, d])?], 0)?;
    let mask = mlx_rs::ops::concatenate(&[mlx_rs::ops::zeros::<f32>(&[1, 1, 1, 12])?, mlx_rs::ops::full::<f32>(&[1, 1, 1, 12], mlx_rs::array!(f32::MIN))?], 0)?;
    let cond = Conditioning::new(states, mask, false)?;
    println!("device {}, musicgen medium, {steps} guided steps, cross mask {}", models::runtime::default_device_kind()?, cond.cross_mask);
    if std::env::var_os("LAYER_TRACE").is_some() {
        for overlap in [false, true] {
            let opts = DecodeOptions { fused_layer: true, overlap, ..DecodeOptions::optimized() };
            model.generate_from(&cond, steps.min(20), 3.0, &Sampler::Greedy, &opts, |_, _| {})?;
            models::nn::layer_cuda::Trace::begin(steps * model.config.decoder.num_hidden_layers as usize)?;
            model.generate_from(&cond, steps, 3.0, &Sampler::Greedy, &opts, |_, _| {})?;
            println!("overlap {overlap}:");
            print_trace(&models::nn::layer_cuda::Trace::end()?);
        }
    }
    // The layer kernel with and without overlapped evaluation, and op by op (overlapped).
    let variants = [("kernel", true, true), ("kernel, sync", true, false), ("op by op", false, true)];
    for r in 0..=rounds {
        for (name, fused_layer, overlap) in variants {
            let opts = DecodeOptions { fused_layer, overlap, ..DecodeOptions::optimized() };
            let launches = models::nn::layer_cuda::launches();
            let start = Instant::now();
            model.generate_from(&cond, steps, 3.0, &Sampler::Greedy, &opts, |_, _| {})?;
            let total = start.elapsed();
            if r > 0 {
                println!("{name:<13} {:>8.3} ms a step; {} layer kernels", total.as_secs_f64() * 1e3 / steps as f64, models::nn::layer_cuda::launches() - launches);
            }
        }
    }
    Ok(())
}

/// Medians over the traced launches, in microseconds: each stage's work (from the previous
/// release to the last block's arrival), each barrier (last arrival to block 0's release), the
/// last stage, the whole launch, and the gap to the next launch's start.
fn print_trace(t: &[models::nn::layer_cuda::TracedLaunch]) {
    let med = |mut v: Vec<f64>| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let us = |a: u64, b: u64| (b as f64 - a as f64) / 1e3;
    let syncs = t.iter().map(|l| l.arrived.iter().take_while(|&&a| a != 0).count()).max().unwrap_or(0);
    if syncs == 0 {
        println!("trace: {} launches recorded, none with a barrier", t.len());
        return;
    }
    let closed: Vec<_> = t.iter().filter(|l| l.end != 0 && l.arrived[..syncs].iter().all(|&a| a != 0)).collect();
    println!("trace: {} launches recorded, {} complete, {syncs} barriers each", t.len(), closed.len());
    let mut line = String::new();
    for i in 0..syncs {
        let work = med(closed.iter().map(|l| us(if i == 0 { l.start } else { l.released[i - 1] }, l.arrived[i])).collect());
        let wait = med(closed.iter().map(|l| us(l.arrived[i], l.released[i])).collect());
        line += &format!("stage {i} {work:.2} + barrier {wait:.2}; ");
    }
    let last = med(closed.iter().map(|l| us(l.released[syncs - 1], l.end)).collect());
    let whole = med(closed.iter().map(|l| us(l.start, l.end)).collect());
    let ramp = med(closed.iter().map(|l| us(l.start, l.last_start)).collect());
    line += &format!("(blocks started within {ramp:.2}) ");
    let gap = med(t.windows(2).filter(|w| w[0].end != 0).map(|w| us(w[0].end, w[1].start)).collect());
    println!("trace (median us): {line}last stage {last:.2}; launch {whole:.2}; gap to the next {gap:.2}");
    let busy: f64 = closed.iter().map(|l| us(l.start, l.end)).sum();
    if let (Some(first), Some(last)) = (t.first(), t.iter().rev().find(|l| l.end != 0)) {
        println!("trace: launches busy {:.1} ms of {:.1} ms from the first start to the last end", busy / 1e3, us(first.start, last.end) / 1e3);
    }
}
