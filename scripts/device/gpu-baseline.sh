#!/usr/bin/env bash
# On the device machine: one step of the GPU baseline (issue 10), writing into $OUT. Each step
# fits one device call (at most 10 minutes); run them back to back in one lease, after the
# library is staged (scripts/device/split-parts.sh) and with .device/p2, .device/bin, .device/ex
# and .device/py carried:
#   bash scripts/device/gpu-baseline.sh peers      # PyTorch eager on the same card, all five models
#   bash scripts/device/gpu-baseline.sh models     # ours: EnCodec, CLAP, HTDemucs (a process each), --targets
#   bash scripts/device/gpu-baseline.sh whisper    # ours: Whisper, --targets
#   bash scripts/device/gpu-baseline.sh musicgen   # ours: MusicGen end to end and the medium decode, --targets
#   bash scripts/device/gpu-baseline.sh musicgen-b # ours: MusicGen small decodes, each switch alone, precisions
#   bash scripts/device/gpu-baseline.sh profile    # per-phase evidence (examples in .device/ex)
# Then here: harness merge --peer peers.jsonl encodec.json clap.json htdemucs.json whisper.json musicgen.json musicgen-b.json \
#   -o baselines/cuda-h200.json --targets
set -uo pipefail
step=${1:?usage: gpu-baseline.sh peers|models|whisper|musicgen|musicgen-b|profile}
out=${OUT:?run on the device machine, where \$OUT is set}
eval "$(bash scripts/device/gpu-env.sh)"
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
bench() { harness bench --device gpu --quiet --targets "$@"; echo "exit $?"; }
case "$step" in
  peers)
    # The image has torch and transformers; demucs (with julius, einops, tqdm) is carried.
    mkdir -p /tmp/py && tar -C /tmp/py -xJf .device/py/site.tar.xz
    export PYTHONPATH=/tmp/py:scripts/peers
    py="python3 scripts/peers"
    {
      $py/encodec_torch.py --device cuda --repeats 10
      $py/clap_torch.py --device cuda --repeats 10
      $py/htdemucs_torch.py --device cuda --repeats 5 --seconds 180
      $py/whisper_torch.py --device cuda --repeats 5
      $py/musicgen_torch.py --device cuda --size small --repeats 3
      $py/musicgen_torch.py --device cuda --size medium --repeats 3
      $py/musicgen_torch.py --device cuda --size medium --repeats 3 --decode-only
    } > "$out/peers.jsonl" 2> "$out/peers.log"
    echo "peers exit $?"; grep '^#' "$out/peers.jsonl"; tail -3 "$out/peers.log"
    ;;
  models)
    # One process per model: on the H200, CLAP ran at 25 ms (batch 8) after HTDemucs'
    # separations in the same process and at 10 ms alone (clearing MLX's buffer cache between
    # workloads did not help); `harness merge` joins the three.
    for m in encodec clap htdemucs; do bench -m "$m" -w 2 -i 10 -o "$out/$m.json"; done ;;
  whisper) bench -m whisper -w 2 -i 10 -o "$out/whisper.json" ;;
  musicgen) bench -m musicgen/generate-10s-small -m musicgen/generate-10s-medium -m musicgen/decode-medium-500 -w 1 -i 3 --max-time 20 -o "$out/musicgen.json" ;;
  musicgen-b)
    ids=$(harness bench --list | cut -f1 | grep '^musicgen/' | grep -v -e generate-10s -e decode-medium-500 | sed 's/^/-m /')
    # shellcheck disable=SC2086
    bench $ids -w 1 -i 3 --max-time 20 -o "$out/musicgen-b.json" ;;
  profile)
    for ex in .device/ex/*; do chmod +x "$ex"; done
    [ -n "${PROFILE_ONLY:-}" ] && { .device/ex/"$PROFILE_ONLY" ${PROFILE_ARGS:-}; exit; }
    .device/ex/clap_profile 8
    .device/ex/lstm_recurrence 10
    .device/ex/op_overhead 2000
    python3 scripts/peers/op_overhead_torch.py --device cuda -n 2000
    [ "${PROFILE_HTDEMUCS:-0}" = 1 ] && .device/ex/htdemucs_batch 60 3
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
