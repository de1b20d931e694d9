//! Streaming decode against the full decode at the real sizes (random weights): the largest
//! absolute difference for several chunk sizes, and the stream's latency in frames.
//!
//!     cargo run --release -p models --example encodec_stream_check
use mlx_rs::random;
use models::checkpoint::Checkpointed;
use models::encodec::{Encodec, EncodecConfig};
use models::Variant;

fn main() -> anyhow::Result<()> {
    for (name, cfg) in [("encodec_32khz", EncodecConfig::encodec_32khz()), ("encodec_24khz", EncodecConfig::encodec_24khz())] {
        let model = Encodec::random(cfg.clone(), 7)?;
        let frames = 2 * cfg.frame_rate();
        let codes = random::randint::<_, i32>(0, cfg.codebook_size, &[1, cfg.num_quantizers().min(8), frames], &random::key(3)?)?;
        let full = model.decode(&codes, Variant::Optimized)?;
        let peak = full.abs()?.max(None)?.item_cast::<f32>();
        for chunk in [1, 5, 10, 50] {
            let mut dec = model.streaming_decoder(Variant::Optimized);
            let s = dec.decode_in_chunks(&codes, chunk, |_| {})?;
            let err = s.subtract(&full)?.abs()?.max(None)?.item_cast::<f32>();
            println!(
                "{name}: 2 s, chunks of {chunk:>2} frames: max |stream - full| = {err:.2e} (signal peak {peak:.2}); look-ahead {} frame(s), first audio after {} frame(s)",
                dec.latency_frames(),
                dec.startup_frames()
            );
        }
    }
    Ok(())
}
