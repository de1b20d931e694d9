#!/usr/bin/env python3
"""HF ClapModel at the `laion/clap-htsat-unfused` size with random weights: the 10 s audio
embedding (ClapFeatureExtractor included), audio-encoder throughput at batch 1, 8 and 32
(features precomputed), and a text embedding of 8 texts of 16 tokens. The peer column for
`harness bench -m clap` (same sizes, float32); prints peer lines (scripts/peers/peerlib.py).

    /work/fixtures-venv/bin/python scripts/peers/clap_torch.py --threads 2 > clap.jsonl
"""
import argparse

import numpy as np
import torch

from peerlib import add_common, emit, peer_name, setup, timed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(ap)
    ap.add_argument("--batches", default="1,8,32")
    a = ap.parse_args()
    setup(a)
    import transformers
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel
    peer = peer_name(a, f"transformers {transformers.__version__} ClapModel")

    torch.manual_seed(0)
    model = ClapModel(ClapConfig()).eval().to(a.device)  # the defaults are htsat-unfused's sizes
    fe = ClapFeatureExtractor(truncation="rand_trunc")
    wave = (0.1 * np.random.default_rng(0).standard_normal(480_000)).astype(np.float32)
    with torch.no_grad():
        def embed_10s():
            feats = fe([wave], sampling_rate=48000, return_tensors="pt")["input_features"].to(a.device)
            model.get_audio_features(input_features=feats)
        emit("clap/embed-audio-10s", timed(a, embed_10s), peer, "features by HF's ClapFeatureExtractor (numpy, on the CPU), then get_audio_features")
        feats = fe([wave], sampling_rate=48000, return_tensors="pt")["input_features"].to(a.device)
        for b in [int(x) for x in a.batches.split(",")]:
            fb = feats.expand(b, -1, -1, -1).contiguous()
            emit(f"clap/embed-audio-batch-{b}", timed(a, lambda fb=fb: model.get_audio_features(input_features=fb)), peer, "get_audio_features on precomputed features")
        ids = torch.randint(3, 50265, (8, 16), generator=torch.Generator().manual_seed(7)).to(a.device)
        mask = torch.ones_like(ids)
        emit("clap/embed-text", timed(a, lambda: model.get_text_features(input_ids=ids, attention_mask=mask)), peer, "get_text_features, 8 texts of 16 tokens")


if __name__ == "__main__":
    main()
