#!/usr/bin/env python3
"""PyTorch (HF transformers EncodecModel) timings for the workloads `harness bench -m encodec`
runs: 5 s decode from codes and 5 s encode, at the real 32 kHz and 24 kHz sizes, random weights.

    OPENBLAS_NUM_THREADS=1 target/release/harness bench -m encodec ...       # ours, one BLAS thread
    python scripts/peers/encodec_torch.py --threads 1 > encodec.jsonl         # theirs, one thread

Run it from the fixtures environment (fixtures/requirements.txt pins torch and transformers).
Prints peer lines (scripts/peers/peerlib.py).
"""
import argparse

import torch

from peerlib import add_common, emit, peer_name, setup, timed


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
    add_common(ap)
    a = ap.parse_args()
    setup(a)
    import transformers
    from transformers import EncodecModel
    peer = peer_name(a, f"transformers {transformers.__version__} EncodecModel")
    models = {}
    last_cfg = None
    for wid, (cfg, bw, what) in configs().items():
        cfg = cfg or last_cfg
        last_cfg = cfg
        key = id(cfg)
        if key not in models:
            torch.manual_seed(0)
            models[key] = EncodecModel(cfg).eval().to(a.device)
            with torch.no_grad():
                for layer in models[key].quantizer.layers:
                    layer.codebook.embed.normal_(0, 0.3)
        m = models[key]
        audio = 0.1 * torch.randn(1, 1, 5 * cfg.sampling_rate, device=a.device)
        with torch.no_grad():
            codes = m.encode(audio, bandwidth=bw).audio_codes
            # Bound now: in serve mode the calls run after the loop has moved on.
            run = (lambda m=m, codes=codes: m.decode(codes, [None])) if what == "decode" else (lambda m=m, audio=audio, bw=bw: m.encode(audio, bandwidth=bw))
            emit(wid, timed(a, run), peer, f"{what}, {bw} kbps, codes {list(codes.shape)}")


if __name__ == "__main__":
    main()
