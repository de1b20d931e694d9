#!/usr/bin/env python3
"""PyTorch (HF transformers MusicgenForConditionalGeneration) timings at real size with random
weights: classifier-free guidance 3 (batch 2), greedy, a fixed number of steps with HF's KV
cache (`generate` with min_new_tokens = max_new_tokens), from 12 text tokens.

- `musicgen/generate-10s-<size>` (500 steps): end to end, T5 encoding, the decode steps and
  EnCodec decoding to audio, as ours.
- `musicgen/decode-<size>-<steps>` (--decode-only): the decode steps alone; the T5 encoder runs
  once outside the timed loop and EnCodec decoding is skipped.

    python scripts/peers/musicgen_torch.py --size medium --device cuda > musicgen.jsonl

Prints peer lines (scripts/peers/peerlib.py).
"""
import argparse

import torch

import peerlib
from peerlib import add_common, emit, peer_name, setup, timed

SIZES = {"small": (1024, 24, 16), "medium": (1536, 48, 24)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--decode-only", action="store_true", help="time the decode steps alone (musicgen/decode-<size>-<steps>)")
    add_common(ap, repeats=3)
    a = ap.parse_args()
    setup(a)
    import transformers
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration, T5Config

    hidden, layers, heads = SIZES[a.size]
    t5 = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12, feed_forward_proj="relu")
    dec = MusicgenDecoderConfig(vocab_size=2048, max_position_embeddings=2048, num_hidden_layers=layers, ffn_dim=4 * hidden,
                                num_attention_heads=heads, hidden_size=hidden, num_codebooks=4, pad_token_id=2048, bos_token_id=2048)
    enc = EncodecConfig(sampling_rate=32000, target_bandwidths=[2.2], upsampling_ratios=[8, 5, 4, 4], codebook_size=2048,
                        use_causal_conv=False, use_conv_shortcut=False, num_filters=64, hidden_size=128, num_lstm_layers=2)
    cfg = MusicgenConfig(text_encoder=t5.to_dict(), audio_encoder=enc.to_dict(), decoder=dec.to_dict())
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(cfg).eval().to(a.device)
    gc = model.generation_config
    gc.decoder_start_token_id, gc.pad_token_id, gc.bos_token_id = 2048, 2048, 2048
    ids = torch.randint(1, 32000, (1, 12)).to(a.device)
    mask = torch.ones(1, 12, dtype=torch.long, device=a.device)
    kw = dict(do_sample=False, guidance_scale=3.0, max_new_tokens=a.steps, min_new_tokens=a.steps)
    peer = peer_name(a, f"transformers {transformers.__version__} MusicgenForConditionalGeneration.generate")
    with torch.no_grad():
        if a.decode_only:
            from transformers.modeling_outputs import BaseModelOutput
            states = model.text_encoder(input_ids=ids).last_hidden_state
            full_decode = model.audio_encoder.decode
            # Skip EnCodec: time the decode steps only, as ours.
            model.audio_encoder.decode = lambda codes, *x, **k: type("O", (), {"audio_values": codes})()
            run = lambda: model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=mask, **kw)
            emit(f"musicgen/decode-{a.size}-{a.steps}", timed(a, run), peer, f"{a.steps} decode steps, T5 and EnCodec outside")
            if not peerlib.SERVE:
                # Served, the decode runs later: EnCodec stays skipped for it.
                model.audio_encoder.decode = full_decode
        else:
            wid = f"musicgen/generate-10s-{a.size}" if a.steps == 500 else f"musicgen/generate-{a.size}-{a.steps}"
            emit(wid, timed(a, lambda: model.generate(input_ids=ids, attention_mask=mask, **kw)), peer,
                 f"T5, {a.steps} decode steps, EnCodec decode to audio, end to end")


if __name__ == "__main__":
    main()
