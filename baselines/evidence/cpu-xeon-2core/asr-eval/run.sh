#!/bin/bash
cd /work/main
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
date
taskset -c 1 /work/fixtures-venv/bin/python scripts/peers/whisper_eval_asr.py --manifest target/asr-eval/manifest.jsonl --model-dir target/whisper-tiny-en --threads 1 --out $OUT/openai.json > $OUT/openai.log 2>&1
date
taskset -c 1 ./target/release/harness eval asr --manifest target/asr-eval/manifest.jsonl --model-dir target/whisper-tiny-en --batch 1 --out $OUT/ours-b1.json --quiet > $OUT/ours-b1.log 2>&1
date
taskset -c 1 ./target/release/harness eval asr --manifest target/asr-eval/manifest.jsonl --model-dir target/whisper-tiny-en --batch 8 --out $OUT/ours-b8.json --quiet > $OUT/ours-b8.log 2>&1
date
echo done
