#!/usr/bin/env python3
"""numpy's 1024x1024 f32 matmul in GFLOP/s, measured as `harness doctor` measures MLX's
(3 warm-up runs, then the median of N timed runs), for the side-by-side in the foundation note.
Needs numpy (e.g. fixtures/ops/requirements.txt)."""
import statistics
import sys
import time

import numpy as np

n, runs = 1024, int(sys.argv[1]) if len(sys.argv) > 1 else 20
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
for _ in range(3):
    a @ b
samples = []
for _ in range(runs):
    t = time.perf_counter()
    a @ b
    samples.append(time.perf_counter() - t)
med = statistics.median(samples)
try:
    from threadpoolctl import threadpool_info
    blas = "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} threads={i.get('num_threads')}" for i in threadpool_info())
except ImportError:
    blas = "threadpoolctl not installed"
print(f"numpy {np.__version__}: {2 * n**3 / med / 1e9:.1f} GFLOP/s (median {med*1e3:.3f} ms of {runs}); {blas}")
