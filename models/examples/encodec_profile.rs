//! Where EnCodec's time goes: every SEANet layer timed on its own (evaluated before and
//! after), at the real size with random weights, channels-last: MLX's convolution kernels with
//! the compiled LSTM wavefront, and the CPU's optimized path (convolutions as BLAS products,
//! the LSTM's recurrence on the host).
//!
//!     cargo run --release -p models --example encodec_profile -- [24|32] [seconds]
use std::time::Instant;

use mlx_rs::{random, Array};
use models::checkpoint::Checkpointed;
use models::encodec::seanet::{Exec, Kernels, Layer, Layout};
use models::encodec::{Encodec, EncodecConfig};
use models::nn::lstm::Recurrence;

fn describe(l: &Layer) -> String {
    match l {
        Layer::Conv(c) => format!("conv k{} s{} d{} {}->{}", c.conv.kernel, c.conv.stride, c.conv.dilation, c.conv.weight.shape()[2], c.conv.weight.shape()[0]),
        Layer::ConvTranspose(c) => format!("convT k{} s{} {}->{}", c.conv.kernel, c.conv.stride, c.conv.weight.shape()[2], c.conv.weight.shape()[0]),
        Layer::Res(r) => format!("resblock {}ch", r.convs[0].conv.weight.shape()[2]),
        Layer::Lstm(l) => format!("lstm {}x{}", l.layers.len(), l.layers[0].hidden_size()),
        Layer::Elu => "elu".into(),
    }
}

/// Median of 3 timed runs of one layer (after one warm-up).
fn time(l: &Layer, x: &Array, kernels: Kernels, recurrence: Recurrence) -> anyhow::Result<(f64, Array)> {
    let exec = Exec { layout: Layout::ChannelsLast, kernels, recurrence };
    let mut ts = Vec::new();
    let mut y = l.forward(x, exec)?;
    y.eval()?;
    for _ in 0..3 {
        let t0 = Instant::now();
        y = l.forward(x, exec)?;
        y.eval()?;
        ts.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ts.sort_by(f64::total_cmp);
    Ok((ts[1], y))
}

fn time_layers(name: &str, layers: &[Layer], mut x: Array) -> anyhow::Result<()> {
    let (mut total_mlx, mut total_gemm) = (0.0, 0.0);
    println!("{name} layer {:<28} {:>22} {:>12} {:>12}", "", "output", "MLX conv", "optimized");
    for (i, l) in layers.iter().enumerate() {
        x.eval()?;
        let (mlx, _) = time(l, &x, Kernels::Mlx, Recurrence::Compiled)?;
        let (gemm, y) = time(l, &x, Kernels::Gemm, Recurrence::Host)?;
        total_mlx += mlx;
        total_gemm += gemm;
        println!("{name} {i:>5} {:<28} {:>22} {mlx:9.2} ms {gemm:9.2} ms", describe(l), format!("{:?}", y.shape()));
        x = y;
    }
    println!("{name} total {:<28} {:>22} {total_mlx:9.1} ms {total_gemm:9.1} ms", "", "");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // The BLAS settings the harness runs with (OpenBLAS reads them at load: restarts once).
    models::runtime::tune_blas_environment();
    models::runtime::retain_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let cfg = match args.get(1).map(String::as_str) {
        Some("24") => EncodecConfig::encodec_24khz(),
        _ => EncodecConfig::encodec_32khz(),
    };
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let model = Encodec::random(cfg.clone(), 7)?;
    let n = (secs * f64::from(cfg.sampling_rate)) as i32;
    let audio = random::normal::<f32>(&[1, n, 1], None, None, &random::key(1)?)?;
    time_layers("enc", model.encoder_layers(), audio)?;
    let t = (secs * f64::from(cfg.frame_rate())) as i32;
    let emb = random::normal::<f32>(&[1, t, cfg.hidden_size], None, None, &random::key(2)?)?;
    time_layers("dec", model.decoder_layers(), emb)?;
    Ok(())
}
