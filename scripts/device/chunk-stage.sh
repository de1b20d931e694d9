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
if [ "${1:-}" = --unpack ]; then
  # On the device machine: the parts where unpack-mlx-cuda.sh and gpu-env.sh look for them.
  tar -C /tmp/stage -xf /tmp/stage/bundle.tar
  mkdir -p .device
  ln -sfn /tmp/stage/p2 .device/p2
  ln -sfn /tmp/stage/bin .device/bin
  exit 0
fi
cd "$(dirname "$0")/../.."
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
room=$(( 64 * 1024 * 1024 - tree - 512 * 1024 ))
[ "$room" -gt 1000000 ] || { echo "the tree ($tree bytes) leaves no room to carry anything" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp .device/p1/part00 .device/p15/part01 "$stage/"
cp -r .device/p2 .device/bin "$stage/"
rm -rf .device/c && mkdir -p .device/c
tar -C "$stage" -cf - part00 part01 p2 bin | split -b "$room" -d -a 2 - .device/c/
ls .device/c | wc -l
