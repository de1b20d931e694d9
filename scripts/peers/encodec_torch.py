#!/usr/bin/env python3
"""PyTorch (HF transformers EncodecModel) timings for the workloads `harness bench -m encodec`
runs: 5 s decode from codes and 5 s encode, at the real 32 kHz and 24 kHz sizes, random weights.

    OPENBLAS_NUM_THREADS=1 target/release/harness bench -m encodec ...   # ours, one BLAS thread
    python scripts/peers/encodec_torch.py --threads 1                     # theirs, one thread

Run it from the fixtures environment (fixtures/requirements.txt pins torch and transformers).
Prints one JSON object per workload: median, min and max seconds over --iterations runs.
"""
import argparse
import json
import statistics
import time

import torch


def configs():
    from transformers import EncodecConfig
    return {
        "encodec/decode-5s": (EncodecConfig(sampling_rate=32_000, target_bandwidths=[2.2], num_filters=64, upsampling_ratios=[8, 5, 4, 4],
                                            codebook_size=2048, use_causal_conv=False, use_conv_shortcut=False), 2.2, "decode"),
        "encodec/encode-5s": (None, 2.2, "encode"),
        "encodec/decode-5s-24k": (EncodecConfig(), 24.0, "decode"),
        "encodec/encode-5s-24k": (None, 24.0, "encode"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import EncodecModel
    models = {}
    last_cfg = None
    for wid, (cfg, bw, what) in configs().items():
        cfg = cfg or last_cfg
        last_cfg = cfg
        key = id(cfg)
        if key not in models:
            torch.manual_seed(0)
            models[key] = EncodecModel(cfg).eval()
            with torch.no_grad():
                for layer in models[key].quantizer.layers:
                    layer.codebook.embed.normal_(0, 0.3)
        m = models[key]
        n = 5 * cfg.sampling_rate
        audio = 0.1 * torch.randn(1, 1, n)
        with torch.no_grad():
            enc = m.encode(audio, bandwidth=bw)
            codes = enc.audio_codes
        def run():
            with torch.no_grad():
                if what == "decode":
                    m.decode(codes, [None])
                else:
                    m.encode(audio, bandwidth=bw)
        for _ in range(a.warmup):
            run()
        ts = []
        for _ in range(a.iterations):
            t0 = time.perf_counter()
            run()
            ts.append(time.perf_counter() - t0)
        print(json.dumps({"workload": wid, "threads": a.threads, "torch": torch.__version__, "median_s": statistics.median(ts),
                          "min_s": min(ts), "max_s": max(ts), "codes": list(codes.shape)}), flush=True)


if __name__ == "__main__":
    main()
