#!/usr/bin/env bash
# Front end of the benchmark harness: sets up, builds the harness in release (quietly when it is
# up to date), then runs `harness bench` with every argument given here, from the directory you
# called it in (so relative -o/-c paths are yours). See --help.
#
# Options of this script (the rest are `harness bench`'s, listed below):
#   --ab BASE_REF         build commit BASE_REF in a worktree (target/ab-worktree-base) and time
#                         it against the current tree on this machine, their bench runs
#                         interleaved round by round (`harness ab`); exits 3 when a workload of
#                         the current tree is slower by more than --threshold, 0 when not.
#                         Results in reports/ab-<time>/ (or -o DIR). E.g.
#                         ./run-benchmarks.sh --ab origin/main -m blocks -w 2 -i 5
#   --ab-current REF      with --ab: time commit REF as the current side instead of the tree
#   --ab-rounds N         with --ab: rounds, each running both builds once (default 4)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ab="" ab_current="" ab_rounds=4 ab_out=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ab) ab=${2:?--ab needs a commit}; shift 2 ;;
    --ab=*) ab=${1#--ab=}; shift ;;
    --ab-current) ab_current=${2:?--ab-current needs a commit}; shift 2 ;;
    --ab-rounds) ab_rounds=${2:?--ab-rounds needs a number}; shift 2 ;;
    -h|--help)
      sed -n '6,14p' "$0" | sed 's/^# \{0,1\}//'
      echo
      args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$ab" ] && { [ -n "$ab_current" ] || [ "$ab_rounds" != 4 ]; }; then
  echo "--ab-current and --ab-rounds go with --ab BASE_REF" >&2
  exit 2
fi
# Every commit named is resolved before any setup or build, so a typo stops the run at once.
resolve() {
  git -C "$root" rev-parse --verify --quiet "$1^{commit}" || { echo "--ab: not a commit: $1" >&2; exit 2; }
}
if [ -n "$ab" ]; then
  base_commit=$(resolve "$ab")
  current_commit=""
  [ -z "$ab_current" ] || current_commit=$(resolve "$ab_current")
  # -o names ab's output folder; the bench flags go to both builds.
  rest=()
  for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
      -o|--output) ab_out=${args[$((i + 1))]:-}; i=$((i + 1)) ;;
      *) rest+=("${args[$i]}") ;;
    esac
  done
  args=("${rest[@]+"${rest[@]}"}")
fi

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

if [ -n "$ab" ]; then
  # Each commit is built in its own worktree into one shared target folder (only what differs
  # is rebuilt), against this checkout's MLX; its binary is copied out before the next build.
  bins="$root/target/ab-bin"
  mkdir -p "$bins"
  worktrees=()
  cleanup() {
    for w in "${worktrees[@]+"${worktrees[@]}"}"; do
      git -C "$root" worktree remove --force "$w" >/dev/null 2>&1 || true
    done
  }
  trap cleanup EXIT
  build_at() { # build_at COMMIT NAME: the harness of COMMIT in target/ab-worktree-NAME
    local wt="$root/target/ab-worktree-$2"
    git -C "$root" worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"
    git -C "$root" worktree prune
    git -C "$root" worktree add --detach --quiet "$wt" "$1"
    worktrees+=("$wt")
    echo "building $2 ${1:0:12} (release, in $wt)..." >&2
    (cd "$wt" && CARGO_TARGET_DIR="$root/target/ab-build" MLX_PYTHON="${MLX_PYTHON:-$root/.venv/bin/python}" cargo build --release --locked -q -p harness) >&2 \
      || { echo "--ab: commit ${1:0:12} does not build" >&2; exit 1; }
    cp "$root/target/ab-build/release/harness" "$bins/harness-$2"
  }
  build_at "$base_commit" base
  current_bin="$bin" current_dir="$root"
  if [ -n "$current_commit" ]; then
    build_at "$current_commit" current
    current_bin="$bins/harness-current" current_dir="$root/target/ab-worktree-current"
  fi
  ab_args=(ab --base "$bins/harness-base" --base-dir "$root/target/ab-worktree-base" --current "$current_bin" --current-dir "$current_dir" --rounds "$ab_rounds")
  [ -z "$ab_out" ] || ab_args+=(-o "$ab_out")
  # Bench's --threshold is the gate's too.
  for ((i = 0; i < ${#args[@]}; i++)); do
    [ "${args[$i]}" != --threshold ] || ab_args+=(--threshold "${args[$((i + 1))]:?--threshold needs a value}")
  done
  status=0
  "$bin" "${ab_args[@]}" -- "${args[@]+"${args[@]}"}" || status=$?
  exit "$status"
fi

# --peers: PyTorch runs beside ours; its environment is made on request (once, needs the network).
for a in "${args[@]+"${args[@]}"}"; do
  if [ "$a" = --peers ]; then
    "$root/scripts/setup-peers.sh"
    break
  fi
done
exec "$bin" bench "${args[@]+"${args[@]}"}"
