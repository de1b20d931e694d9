#!/usr/bin/env python3
"""HF ClapModel at the `laion/clap-htsat-unfused` size with random weights: the 10 s audio
embedding (ClapFeatureExtractor included), audio-encoder throughput at batch 1, 8 and 32
(features precomputed), and a text embedding of 8 texts of 16 tokens; median ms of --repeats,
at --threads threads. The peer column for `harness bench -m clap` (same sizes, float32).

    /work/fixtures-venv/bin/python scripts/peers/clap_torch.py --threads 2
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="1,8,32")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    torch.manual_seed(0)
    model = ClapModel(ClapConfig()).eval().to(a.device)  # the defaults are htsat-unfused's sizes
    fe = ClapFeatureExtractor(truncation="rand_trunc")
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    wave = (0.1 * np.random.default_rng(0).standard_normal(480_000)).astype(np.float32)

    def timed(f):
        f()
        out = []
        for _ in range(a.repeats):
            sync()
            t = time.perf_counter()
            f()
            sync()
            out.append((time.perf_counter() - t) * 1e3)
        return statistics.median(out)

    res = {"threads": a.threads, "device": a.device, "torch": torch.__version__}
    with torch.no_grad():
        def embed_10s():
            feats = fe([wave], sampling_rate=48000, return_tensors="pt")["input_features"].to(a.device)
            model.get_audio_features(input_features=feats)
        res["embed_audio_10s_ms"] = timed(embed_10s)
        feats = fe([wave], sampling_rate=48000, return_tensors="pt")["input_features"].to(a.device)
        for b in [int(x) for x in a.batches.split(",")]:
            fb = feats.expand(b, -1, -1, -1).contiguous()
            res[f"embed_audio_batch_{b}_ms"] = timed(lambda: model.get_audio_features(input_features=fb))
        ids = torch.randint(3, 50265, (8, 16), generator=torch.Generator().manual_seed(7)).to(a.device)
        mask = torch.ones_like(ids)
        res["embed_text_ms"] = timed(lambda: model.get_text_features(input_ids=ids, attention_mask=mask))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
