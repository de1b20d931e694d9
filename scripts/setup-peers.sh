#!/usr/bin/env bash
# The peer environment for `./run-benchmarks.sh --targets --peers` (and `harness bench
# --peers`): PyTorch, HF transformers and demucs at the pinned versions of
# scripts/peers/requirements.txt, in a project-local virtualenv, .peers-venv. Needs the network
# once (PyPI; on Linux PyTorch's CPU wheel index). Idempotent: with everything in place it only
# checks a stamp.
#
#   scripts/setup-peers.sh            make or check .peers-venv
#   scripts/setup-peers.sh --check    only say whether it is ready (exit 0) or not (exit 1)
#
# An existing environment with the same pins can be used instead: point HARNESS_PEERS_PYTHON
# at its python (this script then checks that one and makes nothing).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
req="$root/scripts/peers/requirements.txt"
venv="$root/.peers-venv"
say() { echo "setup-peers: $*" >&2; }
die() { echo "setup-peers: error: $*" >&2; exit 1; }

case "${1:-}" in
  ""|--check) ;;
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (see --help)" ;;
esac

# The pins as name==version lines, and a check that a python has exactly them.
pins=$(grep -E '^[A-Za-z0-9_.-]+==' "$req")
check_pins() {
  "$1" - "$pins" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for line in sys.argv[1].split():
    name, want = line.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    # Local build tags (torch's +cpu / +cu132) are the same release.
    if have is None or have.split("+")[0] != want:
        bad.append(f"{name} {have or 'missing'} (want {want})")
if bad:
    print("; ".join(bad))
    sys.exit(1)
PY
}

if [ -n "${HARNESS_PEERS_PYTHON:-}" ]; then
  [ -x "$HARNESS_PEERS_PYTHON" ] || die "HARNESS_PEERS_PYTHON=$HARNESS_PEERS_PYTHON is not an executable"
  if why=$(check_pins "$HARNESS_PEERS_PYTHON"); then
    say "using $HARNESS_PEERS_PYTHON (pins match)"; exit 0
  fi
  die "HARNESS_PEERS_PYTHON=$HARNESS_PEERS_PYTHON does not have the pins: $why"
fi

stamp="$venv/.peers-stamp"
want=$(cat "$req" | cksum)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ] && check_pins "$venv/bin/python" >/dev/null; then
  [ "${1:-}" = --check ] && say "ready: $venv"
  exit 0
fi
if [ "${1:-}" = --check ]; then
  say "not ready: run scripts/setup-peers.sh (or set HARNESS_PEERS_PYTHON)"; exit 1
fi

py=$(command -v python3) || die "python3 not found"
say "creating $venv (PyTorch $(grep '^torch==' "$req" | cut -d= -f3), transformers, demucs; a few minutes, once)"
"$py" -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
"$venv/bin/pip" install -q --upgrade pip >/dev/null
extra=()
cpu_index=https://download.pytorch.org/whl/cpu
if [ "$(uname -s)" = Linux ]; then
  # The CPU build: the default PyPI torch for Linux carries CUDA (about 5 GB installed).
  # Where PyTorch's index cannot be reached (a network that allows only PyPI), PyPI's build
  # is the same release and runs on the CPU too.
  if "$py" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=10)" "$cpu_index/" >/dev/null 2>&1; then
    extra=(--extra-index-url "$cpu_index")
  else
    say "$cpu_index cannot be reached: installing PyPI's torch (the CUDA build, about 5 GB; it runs on the CPU)"
  fi
fi
"$venv/bin/pip" install -q "${extra[@]}" -r "$req" || die "installing $req failed (see above)"
why=$(check_pins "$venv/bin/python") || die "after installing, the pins do not match: $why"
echo "$want" > "$stamp"
say "ready: $venv"
