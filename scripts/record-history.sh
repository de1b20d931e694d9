#!/usr/bin/env bash
# Record benchmark reports of past commits into a history folder, oldest first, for
# `harness history`:
#
#   scripts/record-history.sh --into DIR [--bench-args "ARGS"] REV...
#
# The commits are checked out one after another in one worktree (target/history-worktree), and
# each one's harness is built in release into one target folder (target/history-build): the
# paths stay the same, so only what changed between two commits is rebuilt. Each commit's
# `harness bench ARGS` runs from that worktree, so the report names that commit, and this
# tree's harness files it (`harness record --into DIR`). Default ARGS: the block workloads,
# `-m blocks -w 2 -i 10 --quiet`. A commit that does not build or run is reported and skipped;
# the others are still recorded. Nothing is written outside DIR and target/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
into="" bench_args="-m blocks -w 2 -i 10 --quiet"
revs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --into) into=${2:?--into needs a folder}; shift 2 ;;
    --bench-args) bench_args=${2:?--bench-args needs arguments}; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) revs+=("$1"); shift ;;
  esac
done
[ -n "$into" ] || { echo "name the history folder with --into DIR" >&2; exit 2; }
[ ${#revs[@]} -gt 0 ] || { echo "name at least one commit" >&2; exit 2; }
# Resolve every revision before any work, so a typo stops the run at once.
commits=()
for r in "${revs[@]}"; do
  c=$(git -C "$root" rev-parse --verify --quiet "$r^{commit}") || { echo "not a commit: $r" >&2; exit 2; }
  commits+=("$c")
done
mkdir -p "$into"
into=$(cd "$into" && pwd)
current="$root/target/release/harness"
(cd "$root" && cargo build --release --locked -q -p harness)
work=$(mktemp -d)
wt="$root/target/history-worktree"
cleanup() {
  git -C "$root" worktree remove --force "$wt" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
git -C "$root" worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"
git -C "$root" worktree prune
git -C "$root" worktree add --detach --quiet "$wt" "${commits[0]}"
export CARGO_TARGET_DIR="$root/target/history-build"
# The worktree has no .venv of its own: build against this checkout's MLX.
export MLX_PYTHON="${MLX_PYTHON:-$root/.venv/bin/python}"
failed=0 n=0
for c in "${commits[@]}"; do
  n=$((n + 1))
  short=${c:0:8}
  echo "[$n/${#commits[@]}] $short $(git -C "$root" log -1 --format=%s "$c" | cut -c1-80)" >&2
  git -C "$wt" checkout --detach --quiet "$c"
  if ! (cd "$wt" && cargo build --release --locked -q -p harness) >"$work/build-$short.log" 2>&1; then
    echo "  build failed (skipped): $(tail -3 "$work/build-$short.log" | tr '\n' ' ')" >&2
    failed=$((failed + 1))
    continue
  fi
  # shellcheck disable=SC2086
  (cd "$wt" && HARNESS_REPO_ROOT="$wt" "$CARGO_TARGET_DIR/release/harness" bench $bench_args -o "$work/$short.json" --html "$work/$short.html") >"$work/run-$short.log" 2>&1 || true
  if [ -s "$work/$short.json" ]; then
    "$current" record --into "$into" "$work/$short.json"
  else
    echo "  bench failed (skipped): $(tail -3 "$work/run-$short.log" | tr '\n' ' ')" >&2
    failed=$((failed + 1))
  fi
done
echo "recorded $((${#commits[@]} - failed)) of ${#commits[@]} commit(s) into $into" >&2
[ "$failed" -eq 0 ]
