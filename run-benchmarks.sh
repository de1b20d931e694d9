#!/usr/bin/env bash
# Front end of the benchmark harness: sets up, builds the harness in release (quietly when it is
# up to date), then runs `harness bench` with every argument given here. See --help.
set -euo pipefail
cd "$(dirname "$0")"
SETUP_QUIET=1 ./scripts/setup.sh
if [ -x target/release/harness ] && cargo build --release --locked -q -p harness 2>/dev/null; then
  :
else
  echo "building the harness (release)..." >&2
  cargo build --release --locked -p harness >&2
fi
exec target/release/harness bench "$@"
