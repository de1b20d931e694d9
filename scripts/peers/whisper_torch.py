#!/usr/bin/env python3
"""PyTorch (HF transformers WhisperForConditionalGeneration) timing of `whisper/transcribe-30s`:
large-v3-turbo at real size with random weights, 30 s of noise, log-mel (HF's feature
extractor, 128 bins), the encoder, and 224 greedy tokens decoded with HF's KV cache (fixed
length, as ours: random weights would stop anywhere). Phases are timed separately.

    OPENBLAS_NUM_THREADS=1 target/release/harness bench -m whisper/transcribe-30s --variant optimized
    python scripts/peers/whisper_torch.py --threads 1 > whisper.jsonl

Prints peer lines (scripts/peers/peerlib.py), and a comment line with the phases' medians.
"""
import argparse
import statistics
import time

import numpy as np
import torch

from peerlib import add_common, emit, peer_name, setup, sync


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(ap, repeats=3)
    ap.add_argument("--tokens", type=int, default=224)
    a = ap.parse_args()
    setup(a)
    import transformers
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    cfg = WhisperConfig(vocab_size=51866, num_mel_bins=128, d_model=1280, encoder_layers=32, decoder_layers=4,
                        encoder_attention_heads=20, decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval().to(a.device)
    fe = WhisperFeatureExtractor(feature_size=128)
    audio = (0.1 * np.random.default_rng(0).standard_normal(480_000)).astype(np.float32)
    sot = torch.tensor([[50258, 50259, 50360, 50364]], device=a.device)

    def run():
        sync(a.device)
        t0 = time.perf_counter()
        feats = fe(audio, sampling_rate=16000, return_tensors="pt").input_features.to(a.device)
        sync(a.device)
        t1 = time.perf_counter()
        with torch.no_grad():
            enc = model.model.encoder(feats).last_hidden_state
            sync(a.device)
            t2 = time.perf_counter()
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            ids = sot
            for _ in range(a.tokens):
                out = model(encoder_outputs=(enc,), decoder_input_ids=ids, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                ids = out.logits[:, -1].argmax(-1, keepdim=True)
        sync(a.device)
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t3 - t0

    run()  # warm-up
    runs = [run() for _ in range(a.repeats)]
    med = lambda i: 1e3 * statistics.median(r[i] for r in runs)
    emit("whisper/transcribe-30s", [r[3] for r in runs], peer_name(a, f"transformers {transformers.__version__} WhisperForConditionalGeneration"),
         f"HF log-mel (numpy, CPU), encoder, {a.tokens} greedy tokens with HF's KV cache")
    print(f"# phases (median ms): mel {med(0):.1f}, encoder {med(1):.1f}, decode {med(2):.1f}")


if __name__ == "__main__":
    main()
