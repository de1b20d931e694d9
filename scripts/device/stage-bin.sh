#!/usr/bin/env bash
# Here, before a GPU run: pack the release harness binary, the GEMV shim and the OpenBLAS it links (with its
# Fortran runtime) into .device/bin/harness-bin.tar.xz (git-ignored), to carry to the device
# machine next to MLX's CUDA library (../shared/device/prepare-mlx-cuda.sh makes .device/p1, p2).
# There, scripts/device/gpu-env.sh unpacks it and sets LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p harness
# The LSTM recurrences side by side (issue 21's fused kernel).
cargo build --release -q -p models --example lstm_recurrence --example layer_kernel_ab
# The MLX ops suite, so its device tests (irfft on the GPU) run there too.
ops=$(cargo test --release -q -p models --test ops --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "ops"][-1])')
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
cp target/release/harness "$stage/bin/"
cp "$ops" "$stage/bin/ops-test"
cp target/release/examples/lstm_recurrence target/release/examples/layer_kernel_ab "$stage/bin/"
strip "$stage/bin/harness" "$stage/bin/ops-test" "$stage/bin/lstm_recurrence" "$stage/bin/layer_kernel_ab"
cp "$(ldd target/release/harness | awk '$1 == "libmlx_gemv_shim.so" {print $3}')" "$stage/lib/"
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
  cp -L "$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ {print $NF; exit}')" "$stage/lib/$lib"
done
mkdir -p .device/bin
tar -C "$stage" -cJf .device/bin/harness-bin.tar.xz bin lib
du -h .device/bin/harness-bin.tar.xz
