#!/usr/bin/env bash
# The project's test command: sets up what is missing (system packages, MLX in .venv), then runs
# every test of the workspace. Extra arguments go to `cargo test` (e.g. `-p models`).
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
exec cargo test --workspace --locked "$@"
