#!/usr/bin/env python3
"""PyTorch's side of models/examples/op_overhead.rs: microseconds per op for a chain of N
dependent adds on 1024 floats and of N dependent [1, 1024] x [1024, 1024] products, eager,
synchronised once at the end; median of 5.

    python scripts/peers/op_overhead_torch.py --device cuda
"""
import argparse
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("-n", type=int, default=2000)
    a = ap.parse_args()
    x = torch.randn(1, 1024, device=a.device)
    w = 0.03 * torch.randn(1024, 1024, device=a.device)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)

    def per_op(f):
        f()
        ts = []
        for _ in range(5):
            sync()
            t = time.perf_counter()
            f()
            sync()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts) / a.n * 1e6

    def adds():
        y = x
        for _ in range(a.n):
            y = y + 1e-3
        return y

    def products():
        y = x
        for _ in range(a.n):
            y = y @ w
        return y

    with torch.no_grad():
        print(f"PyTorch {torch.__version__} {a.n} dependent ops: add on 1024 floats {per_op(adds):.1f} us/op; "
              f"[1,1024]x[1024,1024] matmul {per_op(products):.1f} us/op")


if __name__ == "__main__":
    main()
