"""Shared by the peer scripts: device selection, synchronised timing, and the JSON lines that
`harness bench --peer FILE` / `harness merge --peer FILE` read (harness/REPORT_SCHEMA.md):
one object per workload, {"workload", "peer", "samples_s", "precision", "note"}.

Precision: `--precision fp32` (the default) turns TF32 off for both of PyTorch's switches,
`torch.backends.cuda.matmul.allow_tf32` (off by default) and `torch.backends.cudnn.allow_tf32`
(ON by default: convolutions would run in TF32), so the peer computes like ours at
`--precision fp32`; `--precision tf32` turns both on. The line records the mode and the peer
name the two switches."""
import json
import statistics
import time

import torch


def add_common(ap, repeats=5):
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (match OPENBLAS_NUM_THREADS for ours)")
    ap.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    ap.add_argument("--repeats", type=int, default=repeats, help="timed runs per workload, after one warm-up")
    ap.add_argument("--precision", choices=["fp32", "tf32"], default="fp32",
                    help="fp32: TF32 off for matmuls and cuDNN convolutions; tf32: on for both (compare like with like)")


PRECISION = "fp32"


def setup(a):
    global PRECISION
    torch.set_num_threads(a.threads)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {a.device}: torch {torch.__version__} sees no CUDA device")
    tf32 = a.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    PRECISION = a.precision


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(a, f, warmup=1):
    """Seconds per run of f(), after `warmup` runs; the device is synchronised around each."""
    for _ in range(warmup):
        f()
    out = []
    for _ in range(a.repeats):
        sync(a.device)
        t = time.perf_counter()
        f()
        sync(a.device)
        out.append(time.perf_counter() - t)
    return out


def peer_name(a, library):
    where = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"CPU, {a.threads} thread(s)"
    switches = (f"matmul allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
                f"cudnn allow_tf32={torch.backends.cudnn.allow_tf32}")
    return f"PyTorch {torch.__version__} eager float32 ({switches}) on {where}, {library}"


def emit(workload, samples, peer, note=None):
    line = {"workload": workload, "peer": peer, "samples_s": samples, "precision": PRECISION}
    if note:
        line["note"] = note
    print(json.dumps(line), flush=True)
    print(f"# {workload}: median {1e3 * statistics.median(samples):.2f} ms over {len(samples)}", flush=True)
