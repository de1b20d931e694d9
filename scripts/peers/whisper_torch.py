#!/usr/bin/env python3
"""PyTorch (HF transformers WhisperForConditionalGeneration) timing of Whisper's workloads:
large-v3-turbo at real size with random weights, 30 s of noise, log-mel (HF's feature
extractor, 128 bins), the encoder, and greedy tokens decoded with HF's KV cache (fixed length,
as ours: random weights would stop anywhere). Phases are timed separately and each is the peer
of its own workload: `whisper/transcribe-30s` (all three), `whisper/encode-30s` (log-mel and
encoder), `whisper/decode-N` for --tokens N (the decode phase) and `whisper/decode-64` (64
tokens decoded from the same encoder output, timed on their own).

    OPENBLAS_NUM_THREADS=1 target/release/harness bench -m whisper/transcribe-30s --variant optimized
    python scripts/peers/whisper_torch.py --threads 1 > whisper.jsonl

Prints peer lines (scripts/peers/peerlib.py), and a comment line with the phases' medians.
"""
import argparse
import statistics
import time

import numpy as np
import torch

import peerlib
from peerlib import add_common, emit, peer_name, setup, sync, timed


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

    def decode(enc, tokens):
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        ids = sot
        for _ in range(tokens):
            out = model(encoder_outputs=(enc,), decoder_input_ids=ids, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            ids = out.logits[:, -1].argmax(-1, keepdim=True)

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
            decode(enc, a.tokens)
        sync(a.device)
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t3 - t0, enc

    name = peer_name(a, f"transformers {transformers.__version__} WhisperForConditionalGeneration")
    if peerlib.SERVE:
        # One call per workload, run on request: the decode workloads from random encoder
        # states of the real shape, as ours decode from 1500 random frames.
        enc0 = 0.5 * torch.randn(1, 1500, cfg.d_model, device=a.device)

        def mel_encode():
            feats = fe(audio, sampling_rate=16000, return_tensors="pt").input_features.to(a.device)
            return model.model.encoder(feats).last_hidden_state

        emit("whisper/transcribe-30s", timed(a, lambda: decode(mel_encode(), a.tokens)), name, f"HF log-mel (numpy, CPU), encoder, {a.tokens} greedy tokens with HF's KV cache")
        emit("whisper/encode-30s", timed(a, mel_encode), name, "HF log-mel (numpy, CPU) and the 32-layer encoder")
        for n in sorted({a.tokens, 64}):
            emit(f"whisper/decode-{n}", timed(a, lambda n=n: decode(enc0, n)), name, f"{n} greedy tokens with HF's KV cache after the 4-token start sequence")
        return
    run()  # warm-up
    runs = [run() for _ in range(a.repeats)]
    med = lambda i: 1e3 * statistics.median(r[i] for r in runs)
    emit("whisper/transcribe-30s", [r[3] for r in runs], name, f"HF log-mel (numpy, CPU), encoder, {a.tokens} greedy tokens with HF's KV cache")
    emit("whisper/encode-30s", [r[0] + r[1] for r in runs], name, "HF log-mel (numpy, CPU) and the 32-layer encoder")
    emit(f"whisper/decode-{a.tokens}", [r[2] for r in runs], name, f"{a.tokens} greedy tokens with HF's KV cache after the 4-token start sequence")
    if a.tokens != 64:
        enc = runs[-1][4]

        def decode64():
            with torch.no_grad():
                decode(enc, 64)

        emit("whisper/decode-64", timed(a, decode64), name, "64 greedy tokens with HF's KV cache after the 4-token start sequence")
    print(f"# phases (median ms): mel {med(0):.1f}, encoder {med(1):.1f}, decode {med(2):.1f}")


if __name__ == "__main__":
    main()
