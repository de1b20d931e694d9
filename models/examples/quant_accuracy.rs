//! The accuracy cost of weight precision. Whisper fixtures: greedy token agreement (64 tokens
//! from the start token) with the float32 model, at fp16, int8 and int4 (groups of 64).
//! MusicGen fixtures: greedy code agreement with
//! the float32 model (60 guided steps) and the mean KL divergence of the next-code
//! distributions (teacher-forced on the fp32 codes), for fp16, int8 and int4 (groups of 32,
//! the fixture's decoder being 32 wide).
//!
//!     cargo run --release -p models --example quant_accuracy
use std::path::Path;

use models::checkpoint::Checkpointed;
use models::musicgen::{DecodeOptions, MusicGen};
use models::nn::quant::Precision;
use models::weights;

fn main() -> models::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    for seed in ["whisper-s0", "whisper-s1"] {
        use models::whisper::{audio::LogMel, Whisper};
        let dir = root.join(seed);
        let inputs = weights::read_safetensors(&dir.join("inputs.safetensors"))?;
        let mel = LogMel::new(80)?.compute(&inputs["audio"])?;
        let fp32 = Whisper::load_dir(&dir)?;
        let start = [fp32.config.decoder_start_token_id];
        let opts = models::whisper::DecodeOptions::optimized();
        let want = fp32.greedy(&fp32.encode(&mel, opts.kernel)?, &start, 64, None, &opts)?.remove(0);
        for name in ["fp16", "int8", "int4"] {
            let m = Whisper::load_dir_as(&dir, Some(name.parse()?))?;
            let got = m.greedy(&m.encode(&mel, opts.kernel)?, &start, 64, None, &opts)?.remove(0);
            let agree = want.iter().zip(&got).filter(|(a, b)| a == b).count();
            let first = want.iter().zip(&got).position(|(a, b)| a != b).unwrap_or(want.len());
            println!("{seed} {name}: greedy token agreement {agree}/{} (first difference at token {first})", want.len());
        }
    }
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
            let m = MusicGen::load_dir_as(&dir, Some(p))?;
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
