#!/usr/bin/env python3
"""demucs 4.1.0 HTDemucs at the released `htdemucs` size with random weights: the forward pass
on one 7.8 s segment, and `apply_model` (split, shifts=0, overlap 0.25) over a track of
--seconds. The peer column for `harness bench -m htdemucs` (same sizes, float32); prints peer
lines (scripts/peers/peerlib.py).

    /work/fixtures-venv/bin/python scripts/peers/htdemucs_torch.py --threads 1 --seconds 180 > htdemucs.jsonl
"""
import argparse

import torch

from peerlib import add_common, emit, peer_name, setup, timed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(ap, repeats=3)
    ap.add_argument("--seconds", type=float, default=0.0, help="also separate a track of this length (0: segment only); 180 is htdemucs/separate-3min")
    a = ap.parse_args()
    setup(a)
    import demucs
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    peer = peer_name(a, f"demucs {demucs.__version__}")
    torch.manual_seed(0)
    # The released htdemucs' arguments (demucs conf/config.yaml, `htdemucs` section).
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], dconv_mode=3, bottom_channels=512, segment=7.8).eval().to(a.device)
    x = 0.2 * torch.randn(1, 2, int(7.8 * 44100), device=a.device)
    with torch.no_grad():
        emit("htdemucs/segment", timed(a, lambda: model(x)), peer, "HTDemucs.forward on one 7.8 s stereo segment")
        if a.seconds > 0:
            track = 0.2 * torch.randn(1, 2, int(a.seconds * 44100), device=a.device)
            wid = "htdemucs/separate-3min" if a.seconds == 180 else f"htdemucs/separate-{a.seconds:g}s"
            run = lambda: apply_model(model, track, shifts=0, split=True, overlap=0.25, progress=False, device=a.device)
            emit(wid, timed(a, run, warmup=0), peer, "apply_model(split=True, shifts=0, overlap=0.25), one segment at a time")


if __name__ == "__main__":
    main()
