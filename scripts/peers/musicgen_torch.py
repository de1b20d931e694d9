#!/usr/bin/env python3
"""PyTorch (HF transformers MusicgenForConditionalGeneration) timing of `musicgen/<size>-<steps>`:
the decoder at real size with random weights, classifier-free guidance 3 (batch 2), greedy,
a fixed number of steps with HF's KV cache (`generate` with min_new_tokens = max_new_tokens),
from 12 text tokens. The T5 encoder runs once outside the timed loop; EnCodec decoding is not
timed (ours times the decode steps only). Reports milliseconds per step.

    OPENBLAS_NUM_THREADS=1 target/release/harness bench -m musicgen/small-50
    python scripts/peers/musicgen_torch.py --size small --steps 50 --threads 1
"""
import argparse
import json
import statistics
import time

import torch

SIZES = {"small": (1024, 24, 16), "medium": (1536, 48, 24)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration, T5Config

    hidden, layers, heads = SIZES[a.size]
    t5 = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12, feed_forward_proj="relu")
    dec = MusicgenDecoderConfig(vocab_size=2048, max_position_embeddings=2048, num_hidden_layers=layers, ffn_dim=4 * hidden,
                                num_attention_heads=heads, hidden_size=hidden, num_codebooks=4, pad_token_id=2048, bos_token_id=2048)
    enc = EncodecConfig(sampling_rate=32000, target_bandwidths=[2.2], upsampling_ratios=[8, 5, 4, 4], codebook_size=2048,
                        use_causal_conv=False, use_conv_shortcut=False, num_filters=64, hidden_size=128, num_lstm_layers=2)
    cfg = MusicgenConfig(text_encoder=t5.to_dict(), audio_encoder=enc.to_dict(), decoder=dec.to_dict())
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(cfg).eval()
    gc = model.generation_config
    gc.decoder_start_token_id, gc.pad_token_id, gc.bos_token_id = 2048, 2048, 2048
    ids = torch.randint(1, 32000, (1, 12))
    with torch.no_grad():
        states = model.text_encoder(input_ids=ids).last_hidden_state

    def run():
        from transformers.modeling_outputs import BaseModelOutput
        with torch.no_grad():
            # Skip EnCodec: time the decode steps only, as ours.
            model.audio_encoder.decode = lambda codes, *x, **k: type("O", (), {"audio_values": codes})()
            t0 = time.perf_counter()
            model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=torch.ones(1, 12, dtype=torch.long),
                           do_sample=False, guidance_scale=3.0, max_new_tokens=a.steps, min_new_tokens=a.steps)
            return time.perf_counter() - t0

    run()  # warm-up
    runs = [run() for _ in range(a.iterations)]
    med = statistics.median(runs)
    print(json.dumps({"workload": f"musicgen/{a.size}-{a.steps}", "threads": a.threads, "torch": torch.__version__, "iterations": a.iterations,
                      "median_s": med, "ms_per_step": 1e3 * med / a.steps, "runs": runs}))


if __name__ == "__main__":
    main()
