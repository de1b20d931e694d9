"""Shared by the peer scripts: device selection, synchronised timing, and the JSON lines that
`harness bench --peer FILE` / `harness merge --peer FILE` read (harness/REPORT_SCHEMA.md):
one object per workload, {"workload", "peer", "samples_s", "precision", "note"}.

Precision: `--precision fp32` (the default) turns TF32 off for both of PyTorch's switches,
`torch.backends.cuda.matmul.allow_tf32` (off by default) and `torch.backends.cudnn.allow_tf32`
(ON by default: convolutions would run in TF32), so the peer computes like ours at
`--precision fp32`; `--precision tf32` turns both on. The line records the mode and the peer
name the two switches.

Serve mode (`scripts/peers/serve.py SCRIPT ARGS...`, started by `harness bench --peers`): the
script's main() only registers its workloads (`timed` defers the call, `emit` records it), then
this module answers requests on stdin, one JSON object per line, so the harness can interleave
the peer's runs with ours round by round in one process tree:
  {"cmd": "list"}                 -> {"workloads": {id: {"peer": ..., "note": ..., "precision": ...}}}
  {"cmd": "run", "workload": id}  -> {"seconds": t}   (one call, synchronised around it)
Every reply is one line on stdout; anything else the script prints goes to stderr."""
import json
import statistics
import sys
import time

import torch


def _hide_broken_torchaudio():
    """No peer uses torchaudio, but transformers imports it when it is installed, and a
    torchaudio built for another CUDA than torch's (2.11 beside torch 2.15) raises on import:
    then it is hidden (a None entry in sys.modules reads as not installed)."""
    try:
        import torchaudio  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure to load means it cannot be used
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio"] = None


_hide_broken_torchaudio()


def add_common(ap, repeats=5):
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (match OPENBLAS_NUM_THREADS for ours)")
    ap.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    ap.add_argument("--repeats", type=int, default=repeats, help="timed runs per workload, after one warm-up")
    ap.add_argument("--precision", choices=["fp32", "tf32"], default="fp32",
                    help="fp32: TF32 off for matmuls and cuDNN convolutions; tf32: on for both (compare like with like)")


PRECISION = "fp32"


def setup(a):
    global PRECISION, _DEVICE
    torch.set_num_threads(a.threads)
    _DEVICE = a.device
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {a.device}: torch {torch.__version__} sees no CUDA device")
    tf32 = a.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    PRECISION = a.precision


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


SERVE = False
_REGISTERED = {}
_DEVICE = "cpu"


class Deferred:
    """What `timed` returns in serve mode: the call itself, run later on request."""

    def __init__(self, f):
        self.f = f


def timed(a, f, warmup=1):
    """Seconds per run of f(), after `warmup` runs; the device is synchronised around each.
    In serve mode nothing runs yet: the call is kept for `emit` to register."""
    if SERVE:
        return Deferred(f)
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
    if SERVE:
        if not isinstance(samples, Deferred):
            raise SystemExit(f"serve mode: {workload} was timed eagerly; give emit the value of timed()")
        _REGISTERED[workload] = (samples.f, {"peer": peer, "note": note, "precision": PRECISION})
        return
    line = {"workload": workload, "peer": peer, "samples_s": samples, "precision": PRECISION}
    if note:
        line["note"] = note
    print(json.dumps(line), flush=True)
    print(f"# {workload}: median {1e3 * statistics.median(samples):.2f} ms over {len(samples)}", flush=True)


def serve(stdin=None, stdout=None):
    """Answer the harness' requests (see the module text) until stdin closes."""
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    reply = lambda obj: (out.write(json.dumps(obj) + "\n"), out.flush())
    for raw in stdin:
        raw = raw.strip()
        if not raw:
            continue
        try:
            req = json.loads(raw)
            cmd = req.get("cmd")
            if cmd == "list":
                reply({"workloads": {w: meta for w, (_, meta) in _REGISTERED.items()}})
            elif cmd == "run":
                w = req.get("workload")
                if w not in _REGISTERED:
                    reply({"error": f"no peer workload {w!r} (registered: {', '.join(sorted(_REGISTERED))})"})
                    continue
                f = _REGISTERED[w][0]
                with torch.no_grad():
                    sync(_DEVICE)
                    t = time.perf_counter()
                    f()
                    sync(_DEVICE)
                    reply({"seconds": time.perf_counter() - t})
            else:
                reply({"error": f"unknown request {raw[:80]!r}"})
        except Exception as e:  # noqa: BLE001 - the harness shows the message and stops the peer
            reply({"error": f"{type(e).__name__}: {e}"})
