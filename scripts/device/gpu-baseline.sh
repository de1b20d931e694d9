#!/usr/bin/env bash
# On the device machine: one step of the GPU baseline, writing into $OUT. Each step fits one
# device call (at most 10 minutes, at most 8 files back); run them back to back in one lease,
# after the library is staged (scripts/device/split-parts.sh) and with .device/p2, .device/bin
# and (for peers) .device/py carried:
#   bash scripts/device/gpu-baseline.sh conformance # every committed fixture's parity on the GPU, fp32 and tf32;
#                                                   # the ops suite there; the variant-order experiment (EnCodec)
#   bash scripts/device/gpu-baseline.sh models      # ours: EnCodec, CLAP, HTDemucs (a process each), --targets
#   bash scripts/device/gpu-baseline.sh whisper     # ours: Whisper, --targets
#   bash scripts/device/gpu-baseline.sh musicgen    # ours: MusicGen end to end and the medium decode, --targets;
#                                                   # generate-10s-medium alone and interleaved
#   bash scripts/device/gpu-baseline.sh method      # EnCodec decode in 6 processes, alone and beside naive, twice
#   bash scripts/device/gpu-baseline.sh precision   # the five target workloads at fp32 and tf32: time and accuracy
#   bash scripts/device/gpu-baseline.sh peers       # PyTorch eager on the same card, all five models, fp32
#   bash scripts/device/gpu-baseline.sh musicgen-b  # ours: MusicGen small decodes, each switch alone, precisions
#   bash scripts/device/gpu-baseline.sh profile     # per-phase evidence (examples in .device/ex)
#   bash scripts/device/gpu-baseline.sh launch      # decode time against MLX's CUDA graph settings, and
#                                                   # kernels per decode step (LAUNCH_COUNT_ONLY=1: counts only)
# Every step runs in --precision fp32 (the mode in which parity passes) unless it says otherwise,
# and bench's default variant order on a GPU (blocked). Then here:
#   harness merge encodec.json clap.json htdemucs.json whisper.json musicgen.json \
#     --peer peers.jsonl --conformance conformance.json -o baselines/cuda-h200.json --targets
set -uo pipefail
step=${1:?usage: gpu-baseline.sh conformance|models|whisper|musicgen|method|precision|peers|musicgen-b|profile|launch}
out=${OUT:?run on the device machine, where \$OUT is set}
eval "$(bash scripts/device/gpu-env.sh)"
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
# Reports go to $OUT, their HTML to /tmp (only 8 files come back from a call).
bench() { harness bench --device gpu --quiet --targets --html "/tmp/$RANDOM.html" "$@"; echo "exit $?"; }
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
      if [ "${PEERS_DECODE:-0}" = 1 ]; then $py/musicgen_torch.py --device cuda --size medium --repeats 3 --decode-only; fi
    } > "$out/peers.jsonl" 2> "$out/peers.log"
    echo "peers exit $?"; grep '^#' "$out/peers.jsonl"; tail -3 "$out/peers.log"
    ;;
  conformance)
    # The ops suite's tests read fixtures through the build machine's path.
    [ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
    {
      echo "== ops suite (CPU and GPU), fp32"; MLX_ENABLE_TF32=0 ops-test --test-threads=1 2>&1 | grep -E "^test |panicked|test result|left|right|max"
      [ "${ORDER_ONLY:-0}" = 1 ] || for p in fp32 tf32; do
        suffix=$([ $p = fp32 ] || echo "-$p")
        echo "== parity, precision $p"
        harness --precision $p parity --device gpu --fixtures fixtures -o "$out/conformance$suffix.json"
        echo "parity $p exit $?"
      done
    } > "$out/conformance.log" 2>&1
    grep -e "test result" -e "fixture runs pass" -e "exit" -e FAIL "$out/conformance.log" | head -40
    # Does a run of the other variant change the optimized median? Alone, both interleaved,
    # both blocked, and interleaved with MLX's CUDA graph cache too big to evict anything.
    e=encodec/decode-5s
    if [ "${ORDER_ONLY:-0}" = 1 ]; then
      # Second round: the graph cache alone, and blocked order with and without a fresh buffer cache.
      MLX_CUDA_GRAPH_CACHE_SIZE=1000000 bench -m $e -w 2 -i 10 --variant optimized -o "$out/order-alone-cache.json"
      bench -m $e -w 2 -i 10 --variant optimized -o "$out/order-alone2.json"
      bench -m $e -w 2 -i 10 --order blocked -o "$out/order-blocked-fresh.json"
      MLX_CUDA_GRAPH_CACHE_SIZE=1000000 bench -m $e -w 2 -i 10 --order blocked -o "$out/order-blocked-cache.json"
    else
      bench -m $e -w 2 -i 10 --variant optimized -o "$out/order-alone.json"
      bench -m $e -w 2 -i 10 --order interleaved -o "$out/order-interleaved.json"
      HARNESS_BLOCKED_KEEP_CACHE=1 bench -m $e -w 2 -i 10 --order blocked -o "$out/order-blocked.json"
      MLX_CUDA_GRAPH_CACHE_SIZE=1000000 bench -m $e -w 2 -i 10 --order interleaved -o "$out/order-interleaved-cache.json"
    fi
    ;;
  method)
    # The method check: the optimized median from 6 fresh processes each, with and without the
    # naive variant in them, twice.
    e=encodec/decode-5s
    for i in 1 2; do
      bench -m $e -w 2 -i 10 --processes 6 --variant optimized -o "$out/method-alone-$i.json"
      bench -m $e -w 2 -i 10 --processes 6 -o "$out/method-both-$i.json"
    done
    ;;
  precision)
    t="-m htdemucs/separate-3min -m whisper/transcribe-30s -m clap/embed-audio-10s -m musicgen/generate-10s-medium -m encodec/decode-5s"
    for p in fp32 tf32; do
      # shellcheck disable=SC2086
      harness --precision $p bench --device gpu --quiet --html /tmp/p-$p.html --variant optimized $t -w 1 -i 5 --max-time 20 \
        --save-outputs /tmp/outputs-$p -o "$out/precision-$p.json"
      echo "precision $p exit $?"
    done
    harness accuracy /tmp/outputs-fp32 /tmp/outputs-tf32 | tee "$out/accuracy.txt"
    harness accuracy --json /tmp/outputs-fp32 /tmp/outputs-tf32 > "$out/accuracy.json"
    ;;
  models)
    # One process per model: on the H200, CLAP ran at 25 ms (batch 8) after HTDemucs'
    # separations in the same process and at 10 ms alone (clearing MLX's buffer cache between
    # workloads did not help); `harness merge` joins the three.
    # The fast models in 3 fresh processes each (a process's median can sit in one of two
    # states on the H200: --processes pools them); HTDemucs' minutes in one.
    for m in encodec clap; do bench -m "$m" -w 2 -i 10 --processes 3 -o "$out/$m.json"; done
    bench -m htdemucs -w 2 -i 10 -o "$out/htdemucs.json" ;;
  whisper)
    # The int8/int4 rows' CUDA kernels are compiled at run time against CUTLASS headers
    # (scripts/device/fetch-cutlass.sh); without them those rows fail, so they are left out.
    ids=$(harness bench --list | cut -f1 | grep '^whisper/')
    if [ ! -f .device/p2/cutlass-include.tar.xz ]; then
      ids=$(echo "$ids" | grep -v -e int8 -e int4)
      echo "no CUTLASS headers staged: the int8/int4 rows are left out"
    fi
    # shellcheck disable=SC2046
    bench $(printf -- '-m %s ' $ids) -w 2 -i 10 -o "$out/whisper.json" ;;
  musicgen)
    bench -m musicgen/generate-10s-small -m musicgen/generate-10s-medium -m musicgen/decode-medium-500 -w 1 -i 3 --max-time 20 -o "$out/musicgen.json"
    # The same target alone, and with the variants interleaved (the method before blocked order).
    g=musicgen/generate-10s-medium
    bench -m $g -w 1 -i 3 --max-time 20 --variant optimized -o "$out/musicgen-alone.json"
    bench -m $g -w 1 -i 3 --max-time 20 --order interleaved -o "$out/musicgen-interleaved.json"
    ;;
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
  launch)
    # Where a decode step's time goes (issue 21): MLX's CUDA back end batches up to
    # MLX_MAX_OPS_PER_BUFFER kernels into one CUDA graph (100 on a Hopper), updating a cached
    # executable graph when the topology repeats. Each setting in its own process, with the
    # process's CPU time beside its wall time (a host-bound step keeps one core busy).
    w="-m musicgen/decode-medium-50-fp32 -m whisper/decode-64 -m whisper/encode-30s -m whisper/transcribe-30s"
    TIMEFORMAT="wall %R s, user %U s, sys %S s"
    # LAUNCH_COUNT_ONLY=1: only the graph counts below.
    [ "${LAUNCH_COUNT_ONLY:-0}" = 1 ] || for cfg in default MLX_USE_CUDA_GRAPHS=0 MLX_MAX_OPS_PER_BUFFER=20 MLX_MAX_OPS_PER_BUFFER=400 MLX_MAX_OPS_PER_BUFFER=2000; do
      echo "== $cfg"
      # shellcheck disable=SC2086
      time env $([ $cfg = default ] || echo $cfg) harness bench --device gpu --quiet --variant optimized $w -w 1 -i 5 \
        --html /tmp/l.html -o "$out/launch-${cfg//[=_]/-}.json" > /tmp/l.txt 2>&1
      grep -E "^(musicgen|whisper)/|median" /tmp/l.txt | head -8
    done
    # Kernels per decode step: MLX writes each committed CUDA graph as a dot file; the step count
    # differs by 2 x 450 between the two MusicGen small decodes and by 2 x 160 between the Whisper ones (2 runs each).
    for m in musicgen/decode-small-50 musicgen/decode-small-500 whisper/decode-64 whisper/decode-224; do
      rm -rf /tmp/dots && mkdir /tmp/dots
      MLX_SAVE_CUDA_GRAPHS_DOT_FILE=/tmp/dots/g harness bench --device gpu --quiet --variant optimized -m $m -w 0 -i 2 \
        --html /tmp/d.html -o /tmp/d.json > /dev/null 2>&1
      # A node is a line declaring a shape; its label names the node type (KERNEL, MEMSET, ...).
      echo "$m: graphs $(ls /tmp/dots | wc -l), nodes $(cat /tmp/dots/* | grep -c 'shape=') ($(cat /tmp/dots/* | grep -c 'shape="octagon"') kernels: octagons, named by their kernel), edges $(cat /tmp/dots/* | grep -c -- '->')"
      [ "$m" = whisper/decode-224 ] && cp "$(ls /tmp/dots/* | tail -1)" "$out/graph-sample.dot"
      # Kernels by name (the mangled name, its first 90 characters).
      cat /tmp/dots/* | grep -A1 'shape="octagon"' | grep -v -e 'shape=' -e '^--' | cut -c1-90 | sort | uniq -c | sort -rn > "/tmp/names-${m//\//-}.txt"
    done | tee "$out/kernels-per-step.txt"
    # Per step, by kernel: the difference between the 500- and 50-step decodes over 2 x 450 steps.
    awk 'NR == FNR { small[$2] = $1; next } { d = ($1 - small[$2]) / 900; if (d > 0.05) printf "%8.2f %s\n", d, $2 }' \
      /tmp/names-musicgen-decode-small-50.txt /tmp/names-musicgen-decode-small-500.txt | sort -rn > "$out/kernels-by-name-musicgen-small.txt"
    head -40 "$out/kernels-by-name-musicgen-small.txt"
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
