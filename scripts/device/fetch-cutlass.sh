#!/usr/bin/env bash
# Here, before a GPU run that uses quantized weights: MLX's CUDA quantized matmuls are compiled
# at run time (NVRTC) and include CUTLASS/CuTe headers, which neither the mlx-cuda wheel nor the
# device image ships. This packs them from the pinned PyPI wheel nvidia-cutlass into
# .device/p2/cutlass-include.tar.xz; scripts/device/gpu-env.sh unpacks it next to libmlx.so
# (<libmlx>/../include, where MLX's JIT looks).
set -euo pipefail
cd "$(dirname "$0")/../.."
version=4.2.0.0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --dest "$tmp" "nvidia-cutlass==$version"
python3 -m zipfile -e "$tmp"/nvidia_cutlass-"$version"-py3-none-any.whl "$tmp/whl"
mkdir -p .device/p2
tar -C "$tmp/whl/cutlass_library/source/include" -cJf .device/p2/cutlass-include.tar.xz cute cutlass
du -h .device/p2/cutlass-include.tar.xz
