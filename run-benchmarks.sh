#!/usr/bin/env bash
# Front end of the benchmark harness: sets up, builds the harness in release (quietly when it is
# up to date), then runs `harness bench` with every argument given here, from the directory you
# called it in (so relative -o/-c paths are yours). See --help.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SETUP_QUIET=1 "$root/scripts/setup.sh"
bin="$root/target/release/harness"
# Build from the root: cargo reads .cargo/config.toml (which points mlx-sys at .venv) from the
# current directory, not from --manifest-path.
if [ -x "$bin" ] && (cd "$root" && cargo build --release --locked -q -p harness 2>/dev/null); then
  :
else
  echo "building the harness (release)..." >&2
  (cd "$root" && cargo build --release --locked -p harness) >&2
fi
export HARNESS_REPO_ROOT="$root"
# --peers: PyTorch runs beside ours; its environment is made on request (once, needs the network).
for a in "$@"; do
  if [ "$a" = --peers ]; then
    "$root/scripts/setup-peers.sh"
    break
  fi
done
exec "$bin" bench "$@"
