#!/usr/bin/env bash
# Here: when the working tree leaves too little of the 64 MiB a device call may carry for
# MLX's CUDA library parts (the committed fixtures are ~55 MiB), pack everything the GPU run
# needs (.device/p1/part00, .device/p15/part01, .device/p2, .device/bin) into one tar and cut it
# into chunks small enough to ride beside the tree (.device/c/NN, git-ignored). Send them in
# back-to-back calls (the machine keeps /tmp while warm), each carrying one chunk:
#   mkdir -p /tmp/stage && cat .device/c/NN >> /tmp/stage/bundle.tar
# then, in the run's call, before scripts/device/gpu-env.sh:
#   bash scripts/device/chunk-stage.sh --unpack
set -euo pipefail
#
# With --fixtures the committed fixtures ride in the bundle instead of the tree: first
#   bash scripts/device/chunk-stage.sh --hide-fixtures   # moves fixtures/ to .device/fixtures-hold
# so the tree that travels is ~8 MB and the whole bundle takes three calls instead of ~27; the
# unpacking puts fixtures/ back in the device's copy. Each call re-sends the tree, which takes
# the unpacked fixtures' files away again (their folders stay): a later call of the same lease
# runs --unpack again before it reads fixtures/. Afterwards, here:
#   bash scripts/device/chunk-stage.sh --restore-fixtures
if [ "${1:-}" = --unpack ]; then
  # On the device machine: the parts where unpack-mlx-cuda.sh and gpu-env.sh look for them.
  tar -C /tmp/stage -xf /tmp/stage/bundle.tar
  mkdir -p .device
  ln -sfn /tmp/stage/p2 .device/p2
  ln -sfn /tmp/stage/bin .device/bin
  if [ -d /tmp/stage/fixtures ] && [ ! -e fixtures/README.md ]; then
    rm -rf fixtures && cp -r /tmp/stage/fixtures fixtures
  fi
  exit 0
fi
cd "$(dirname "$0")/../.."
case "${1:-}" in
  --hide-fixtures)
    [ ! -e .device/fixtures-hold ] || { echo "fixtures are already hidden in .device/fixtures-hold" >&2; exit 1; }
    mkdir -p .device && mv fixtures .device/fixtures-hold && echo "fixtures/ moved to .device/fixtures-hold: restore with --restore-fixtures before committing"
    exit 0 ;;
  --restore-fixtures)
    [ -d .device/fixtures-hold ] || { echo "nothing to restore" >&2; exit 1; }
    [ ! -e fixtures ] || { echo "fixtures/ exists: not overwriting it" >&2; exit 1; }
    mv .device/fixtures-hold fixtures && git status --short fixtures | head -3
    exit 0 ;;
esac
with_fixtures=0
[ "${1:-}" = --fixtures ] && with_fixtures=1
[ "$with_fixtures" = 0 ] || [ -d .device/fixtures-hold ] || { echo "--fixtures: hide them first (--hide-fixtures)" >&2; exit 1; }
# Hidden fixtures do not travel (with --fixtures they ride in the bundle instead).
if [ -d .device/fixtures-hold ]; then
  tree=$(git ls-files -z | grep -zv '^fixtures/' | xargs -0 du -cb | tail -1 | cut -f1)
else
  tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
fi
room=$(( 64 * 1024 * 1024 - tree - 512 * 1024 ))
[ "$room" -gt 1000000 ] || { echo "the tree ($tree bytes) leaves no room to carry anything" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp .device/p1/part00 .device/p15/part01 "$stage/"
cp -r .device/p2 .device/bin "$stage/"
parts="part00 part01 p2 bin"
if [ "$with_fixtures" = 1 ]; then
  cp -r .device/fixtures-hold "$stage/fixtures"
  parts="$parts fixtures"
fi
rm -rf .device/c && mkdir -p .device/c
tar -C "$stage" -cf - $parts | split -b "$room" -d -a 2 - .device/c/
ls .device/c | wc -l
