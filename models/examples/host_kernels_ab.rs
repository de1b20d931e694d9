//! The CPU host kernels against MLX's own composition of the same operation, at the sizes that
//! dominate HTDemucs' and EnCodec's forward passes: median wall time of each, side by side in
//! alternating rounds, and the largest difference between the two results.
//!
//!     OPENBLAS_NUM_THREADS=1 taskset -c 0 cargo run --release -p models --example host_kernels_ab [-- ROUNDS]
use std::time::Instant;

use mlx_rs::{ops, Array};
use models::nn::quant::{Precision, QuantWeight};
use models::nn::{host, host_attention, host_quant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(f: &dyn Fn() -> anyhow::Result<Array>) -> anyhow::Result<(f64, Array)> {
    let t = Instant::now();
    let y = f()?;
    y.eval()?;
    Ok((t.elapsed().as_secs_f64() * 1e3, y))
}

fn main() -> anyhow::Result<()> {
    // The BLAS settings the harness runs with (OpenBLAS reads them at load: restarts once).
    models::runtime::tune_blas_environment();
    models::runtime::retain_freed_memory();
    let rounds: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let key = |i| mlx_rs::random::key(i).unwrap();
    let x4 = mlx_rs::random::normal::<f32>(&[1, 336, 512, 96], None, None, &key(1))?;
    let w = mlx_rs::random::normal::<f32>(&[96], None, None, &key(2))?;
    let b = mlx_rs::random::normal::<f32>(&[96], None, None, &key(3))?;
    let (q, k, v) = (
        mlx_rs::random::normal::<f32>(&[1, 2688, 512], None, None, &key(4))?,
        mlx_rs::random::normal::<f32>(&[1, 2688, 512], None, None, &key(5))?,
        mlx_rs::random::normal::<f32>(&[1, 2688, 512], None, None, &key(6))?,
    );
    let e = mlx_rs::random::normal::<f32>(&[1, 120_000, 64], None, None, &key(7))?;
    // Whisper turbo's logits: one token against the [51866, 1280] embedding.
    let xv = mlx_rs::random::normal::<f32>(&[1, 1, 1280], None, None, &key(8))?;
    // Two rows: a guided (CFG) decode step.
    let xv2 = mlx_rs::random::normal::<f32>(&[2, 1, 1280], None, None, &key(10))?;
    let wv = mlx_rs::random::normal::<f32>(&[51866, 1280], None, None, &key(9))?;
    mlx_rs::transforms::eval([&x4, &w, &b, &q, &k, &v, &e, &xv, &xv2, &wv])?;
    let q8 = QuantWeight::quantize(&wv, Precision::int(8, 64)?)?;
    let q4 = QuantWeight::quantize(&wv, Precision::int(4, 64)?)?;
    let mlx_q = |w: &QuantWeight| -> anyhow::Result<Array> { Ok(ops::quantized_matmul(&xv, &w.packed, &w.scales, &w.biases, true, w.group_size, w.bits)?) };
    let heads = |a: &Array| a.reshape(&[1, 2688, 8, 64]).and_then(|a| a.transpose_axes(&[0, 2, 1, 3]));
    type Case<'a> = (&'a str, Box<dyn Fn() -> anyhow::Result<Array> + 'a>, Box<dyn Fn() -> anyhow::Result<Array> + 'a>);
    let cases: Vec<Case> = vec![
        (
            "GroupNorm(1) per bin [1,336,512,96]",
            Box::new(|| {
                let y = models::nn::ops::standardize(&x4, &[1, 3], 1e-5)?;
                Ok(y.multiply(&w)?.add(&b)?)
            }),
            Box::new(|| Ok(host::group_norm_bafc(&x4, [1, 336, 512, 96], Some(&w), Some(&b), 1e-5)?)),
        ),
        (
            "GLU [1,336,512,96]",
            Box::new(|| {
                let p = x4.split_equal(2, -1)?;
                Ok(p[0].multiply(ops::sigmoid(&p[1])?)?)
            }),
            Box::new(|| Ok(host::glu_last_axis(&x4)?)),
        ),
        (
            "ELU [1,120000,64]",
            Box::new(|| {
                let zero = mlx_rs::array!(0.0f32);
                Ok(ops::maximum(&e, &zero)?.add(ops::exp(&ops::minimum(&e, &zero)?)?.subtract(mlx_rs::array!(1.0f32))?)?)
            }),
            Box::new(|| Ok(host::elu(&e)?)),
        ),
        (
            "attention 8 x 2688 x 2688, d 64",
            Box::new(|| {
                let o = mlx_rs::fast::scaled_dot_product_attention(heads(&q)?, heads(&k)?, heads(&v)?, 0.125, None, None)?;
                Ok(o.transpose_axes(&[0, 2, 1, 3])?.reshape(&[1, 2688, 512])?)
            }),
            Box::new(|| Ok(host_attention::attention(&q, &k, &v, 8, 0.125, false)?)),
        ),
        ("int8/g64 [1,1280] x [51866,1280]^T", Box::new(|| mlx_q(&q8)), Box::new(|| Ok(host_quant::matmul_t(&xv, &q8)?))),
        ("int4/g64 [1,1280] x [51866,1280]^T", Box::new(|| mlx_q(&q4)), Box::new(|| Ok(host_quant::matmul_t(&xv, &q4)?))),
        ("int8/g64 [2,1280] x [51866,1280]^T", Box::new(|| Ok(ops::quantized_matmul(&xv2, &q8.packed, &q8.scales, &q8.biases, true, 64, 8)?)), Box::new(|| Ok(host_quant::matmul_t(&xv2, &q8)?))),
        ("fp32 MLX against int8 host, 2 rows", Box::new(|| Ok(xv2.matmul(wv.t())?)), Box::new(|| Ok(host_quant::matmul_t(&xv2, &q8)?))),
        // Not the same product: MLX's float32 matrix-vector product against the host's int8 one
        // (their difference is the quantization error).
        ("fp32 MLX against int8 host, same shape", Box::new(|| Ok(xv.matmul(wv.t())?)), Box::new(|| Ok(host_quant::matmul_t(&xv, &q8)?))),
    ];
    println!("{:40} {:>12} {:>12} {:>8} {:>10}", "operation", "MLX ms", "host ms", "ratio", "max diff");
    for (name, mlx, hostk) in &cases {
        let (mut a, mut h) = (Vec::new(), Vec::new());
        let mut diff = 0f32;
        for r in 0..=rounds {
            // Alternate which goes first; round 0 is the warm-up.
            let ((ta, ya), (th, yh)) = if r % 2 == 0 {
                let x = time(mlx.as_ref())?;
                (x, time(hostk.as_ref())?)
            } else {
                let y = time(hostk.as_ref())?;
                (time(mlx.as_ref())?, y)
            };
            if r > 0 {
                a.push(ta);
                h.push(th);
            }
            diff = diff.max(ya.subtract(&yh)?.abs()?.max(None)?.item_cast::<f32>());
        }
        let (ma, mh) = (median(a), median(h));
        println!("{name:40} {ma:12.1} {mh:12.1} {:8.2} {diff:10.2e}", ma / mh);
    }
    Ok(())
}
