#!/usr/bin/env python3
"""Run one peer script in serve mode (scripts/peers/peerlib.py): `serve.py SCRIPT [ARGS...]`
imports SCRIPT (a file in this folder), runs its main() with ARGS so that it registers its
workloads without timing them, then answers the harness' requests on stdin until it closes.
`harness bench --peers` starts one per model and interleaves the peer's runs with ours.

    printf '{"cmd": "list"}\\n' | python scripts/peers/serve.py encodec_torch.py --threads 1
"""
import importlib.util
import os
import sys

import peerlib


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    here = os.path.dirname(os.path.abspath(__file__))
    script = os.path.join(here, os.path.basename(sys.argv[1]))
    if not os.path.isfile(script) or not script.endswith("_torch.py"):
        raise SystemExit(f"serve.py: {sys.argv[1]}: not a peer script in {here}")
    spec = importlib.util.spec_from_file_location("peer_script", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    peerlib.SERVE = True
    # The script's own prints (comments, progress) must not mix with the replies.
    replies = sys.stdout
    sys.stdout = sys.stderr
    sys.argv = [script] + sys.argv[2:]
    mod.main()
    peerlib.serve(stdout=replies)


if __name__ == "__main__":
    main()
