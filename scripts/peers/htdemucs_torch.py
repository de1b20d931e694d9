#!/usr/bin/env python3
"""demucs 4.1.0 HTDemucs at the released `htdemucs` size with random weights, on the CPU: the
forward pass on one 7.8 s segment and `apply_model` (split, shifts=0, overlap 0.25) over a
track; wall time per repeat, at --threads threads. The peer column for `harness bench`'s
htdemucs workloads (same sizes, float32).

    /work/fixtures-venv/bin/python scripts/peers/htdemucs_torch.py --threads 1 --seconds 180
"""
import argparse
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=0.0, help="also separate a track of this length (0: segment only)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    # The released htdemucs' arguments (demucs conf/config.yaml, `htdemucs` section).
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], dconv_mode=3, bottom_channels=512, segment=7.8).eval().to(a.device)
    tl = int(7.8 * 44100)
    x = 0.2 * torch.randn(1, 2, tl, device=a.device)
    res = {"threads": a.threads, "device": a.device, "torch": torch.__version__, "segment_ms": []}
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        model(x)
        for _ in range(a.repeats):
            sync()
            t = time.perf_counter()
            model(x)
            sync()
            res["segment_ms"].append((time.perf_counter() - t) * 1e3)
        if a.seconds > 0:
            track = 0.2 * torch.randn(1, 2, int(a.seconds * 44100), device=a.device)
            res["track_seconds"] = a.seconds
            res["track_ms"] = []
            for _ in range(a.repeats):
                sync()
                t = time.perf_counter()
                apply_model(model, track, shifts=0, split=True, overlap=0.25, progress=False, device=a.device)
                sync()
                res["track_ms"].append((time.perf_counter() - t) * 1e3)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
