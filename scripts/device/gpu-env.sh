#!/usr/bin/env bash
# On the device machine, in the call that carries .device/p2 and .device/bin (the last of the
# back-to-back calls of ../shared/device/README.md: p1, then p15 when part01 was moved there,
# then this). Prints exports to eval:
#   eval "$(bash scripts/device/gpu-env.sh)"; harness doctor
set -euo pipefail
# With the fixtures, the working tree plus .device/p2 passes the 64 MiB a call may carry; the
# library's second part can then travel alone in a call before this one (.device/p15, copied
# to /tmp/stage like the first part).
if [ ! -f .device/p2/part01 ] && [ -f /tmp/stage/part01 ]; then
  ln -s /tmp/stage/part01 .device/p2/part01
fi
eval "$(bash .device/p2/unpack-mlx-cuda.sh)"
# MLX's CUDA JIT (NVRTC) looks for CCCL headers in <libmlx>/../include/cccl, which the staged
# library leaves out; the image's CUDA toolkit has them.
for cccl in /usr/local/cuda/targets/x86_64-linux/include/cccl /usr/local/cuda/include/cccl /usr/local/cuda-*/targets/x86_64-linux/include/cccl; do
  if [ -d "$cccl" ]; then
    mkdir -p /opt/mlx-cuda/mlx/include && ln -sfn "$cccl" /opt/mlx-cuda/mlx/include/cccl
    break
  fi
done
# CUTLASS/CuTe headers for the quantized-matmul kernels (scripts/device/fetch-cutlass.sh).
if [ -f .device/p2/cutlass-include.tar.xz ]; then
  mkdir -p /opt/mlx-cuda/mlx/include && tar -C /opt/mlx-cuda/mlx/include -xJf .device/p2/cutlass-include.tar.xz
fi
dest=/tmp/harness-gpu
rm -rf "$dest" && mkdir -p "$dest"
tar -C "$dest" -xJf .device/bin/harness-bin.tar.xz
# CUDA libmlx first: the binary's RUNPATH points at the CPU wheel on the build machine, which
# does not exist here; LD_LIBRARY_PATH wins over RUNPATH anyway.
echo "export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$dest/lib PYTHONPATH=${PYTHONPATH:-} PATH=$dest/bin:\$PATH"
