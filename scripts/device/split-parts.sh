#!/usr/bin/env bash
# Here: when the working tree plus one 34 MB part of MLX's CUDA library passes the 64 MiB a
# device call may carry, split the parts in halves (.device/s1..s4, git-ignored) and send
# them in four back-to-back calls before the run (the machine keeps /tmp while warm):
#   s1: mkdir -p /tmp/stage && cp .device/s1/part00.aa /tmp/stage/part00
#   s2: cat .device/s2/part00.ab >> /tmp/stage/part00
#   s3: cp .device/s3/part01.aa /tmp/stage/part01
#   s4: cat .device/s4/part01.ab >> /tmp/stage/part01
# then carry .device/p2 and .device/bin and `eval "$(bash scripts/device/gpu-env.sh)"`.
set -euo pipefail
cd "$(dirname "$0")/../../.device"
mkdir -p s1 s2 s3 s4
split -b 18M p1/part00 s1/part00. && mv s1/part00.ab s2/
split -b 18M p15/part01 s3/part01. && mv s3/part01.ab s4/
ls -l s1 s2 s3 s4
