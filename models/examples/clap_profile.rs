//! CLAP at the `laion/clap-htsat-unfused` size with random weights, optimized path: the text
//! embedding of 8 x 16 tokens and the audio encoder over a batch of BATCH 10 s clips, each timed
//! whole (median of 5) and then as a per-phase profile (evaluated at every boundary, so the
//! phases add up to more than a whole run).
//!
//!     cargo run --release -p models --example clap_profile [-- BATCH]
use std::time::Instant;

use mlx_rs::{ops, random, Array};
use models::checkpoint::Checkpointed;
use models::clap::config::{ClapConfig, FeatureConfig};
use models::clap::features::{Crops, FeatureExtractor, Truncation};
use models::clap::Clap;
use models::Variant;

fn median_ms(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut ts = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[2])
}

fn print(rows: &[(String, f64)]) {
    let total: f64 = rows.iter().map(|r| r.1).sum();
    for (name, ms) in rows {
        println!("  {name:44} {ms:8.3} ms");
    }
    println!("  {:44} {total:8.3} ms", "sum of phases");
}

fn main() -> anyhow::Result<()> {
    // The BLAS settings the harness runs with (OpenBLAS reads them at load: restarts once).
    models::runtime::tune_blas_environment();
    models::runtime::retain_freed_memory();
    let batch: i32 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let cfg = ClapConfig::htsat_unfused();
    let model = Clap::random(cfg.clone(), 1)?;
    let v = Variant::Optimized;

    let ids = random::randint::<_, i32>(3, cfg.text_config.vocab_size, &[8, 16], &random::key(7)?)?;
    let mask = ops::ones::<i32>(&[8, 16])?;
    let whole = median_ms(|| Ok(model.embed_text(&ids, &mask, v)?.1.eval()?))?;
    println!("text, 8 x 16 tokens: {whole:.3} ms whole");
    model.profile_text(&ids, &mask, v)?;
    print(&model.profile_text(&ids, &mask, v)?);

    let fe = FeatureExtractor::new(FeatureConfig::htsat_unfused())?;
    let wave = random::normal::<f32>(&[fe.config.max_samples() as i32], None, None, &random::key(6)?)?.multiply(mlx_rs::array!(0.1f32))?;
    wave.eval()?;
    let (f, _) = fe.extract(wave.as_slice::<f32>(), Truncation::RandTrunc, Crops::default())?;
    let features: Array = ops::broadcast_to(f.expand_dims(0)?, &[batch, 1, f.shape()[1], f.shape()[2]])?.contiguous()?;
    features.eval()?;
    let longer = vec![false; batch as usize];
    let whole = median_ms(|| Ok(model.embed_audio_batch(&features, &longer, v)?.eval()?))?;
    println!("audio, batch {batch}: {whole:.3} ms whole");
    model.profile_audio(&features, &longer, v)?;
    print(&model.profile_audio(&features, &longer, v)?);
    Ok(())
}
