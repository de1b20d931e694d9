//! The accuracy cost of weight precision on the MusicGen fixtures: greedy code agreement with
//! the float32 model (60 guided steps) and the mean KL divergence of the next-code
//! distributions (teacher-forced on the fp32 codes), for fp16, int8 and int4 (groups of 32,
//! the fixture's decoder being 32 wide).
//!
//!     cargo run --release -p models --example quant_accuracy
use std::path::Path;

use models::musicgen::{DecodeOptions, MusicGen};
use models::nn::quant::Precision;
use models::weights;

fn main() -> models::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    for seed in ["musicgen-s0", "musicgen-s1"] {
        let dir = root.join(seed);
        let inputs = weights::read_safetensors(&dir.join("inputs.safetensors"))?;
        let ids = inputs["input_ids"].as_dtype(mlx_rs::Dtype::Int32)?;
        let mask = &inputs["attention_mask"];
        let opts = DecodeOptions::optimized();
        let steps = 60;
        let fp32 = MusicGen::load_dir(&dir)?;
        let codes = fp32.generate_greedy(&ids, mask, steps, 3.0, &opts)?;
        // Teacher forcing on the fp32 codes (delay undone, so frame-aligned): logits per frame.
        let logp = |m: &MusicGen| -> models::Result<mlx_rs::Array> {
            let cond = m.condition(&ids, mask, false)?;
            let mut st = m.new_state(&opts, codes.shape()[2] as usize);
            let l = m.decode_step(&codes, &cond, &mut st)?;
            Ok(l.subtract(mlx_rs::ops::logsumexp_axis(&l, -1, true)?)?)
        };
        let p32 = logp(&fp32)?;
        for name in ["fp16", "int8/g32", "int4/g32"] {
            let p: Precision = name.parse()?;
            let mut m = MusicGen::load_dir(&dir)?;
            m.set_precision(p)?;
            let got = m.generate_greedy(&ids, mask, steps, 3.0, &opts)?;
            let (a, b) = (codes.as_slice::<i32>(), got.as_slice::<i32>());
            let agree = a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
            let pq = logp(&m)?;
            // KL(fp32 || q) per position, averaged.
            let kl = p32.exp()?.multiply(p32.subtract(&pq)?)?.sum_axis(-1, false)?.mean(None)?.item_cast::<f32>();
            println!("{seed} {p}: greedy code agreement {:.3} ({} codes), mean KL {kl:.2e} nats", agree, a.len());
        }
    }
    Ok(())
}
