#!/usr/bin/env bash
# The project's test command: sets up what is missing (system packages, MLX in .venv), checks
# the formatting (rustfmt) and lints (clippy, warnings as errors), then runs every test of the
# workspace. Extra arguments go to `cargo test` (e.g. `-p models`); RUN_TESTS_SKIP_LINT=1 skips
# the two checks (for a quick local run).
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
if [ -z "${RUN_TESTS_SKIP_LINT:-}" ]; then
  for c in rustfmt clippy; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
      command -v rustup >/dev/null || { echo "run-tests: cargo $c is missing and there is no rustup to add it" >&2; exit 1; }
      rustup component add "$c"
    fi
  done
  echo "run-tests: cargo fmt --check" >&2
  cargo fmt --all --check
  echo "run-tests: cargo clippy -D warnings" >&2
  cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
fi
exec cargo test --workspace --locked "$@"
