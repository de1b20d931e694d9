#!/usr/bin/env python3
"""openai-whisper's accuracy and speed on an `eval asr` manifest, as the peer of
`harness eval asr`: the same clips, the same decoding (greedy, temperature 0, no timestamps,
its default token suppression, fp32, clips padded to 30 s), the same normaliser
(EnglishTextNormalizer) and the same pooled WER with a 2000-resample bootstrap interval.

    python scripts/peers/whisper_eval_asr.py --manifest DIR/manifest.jsonl \\
        --model-dir target/whisper-tiny-en --threads 1 --out openai.json

The model is openai-whisper's own with the weights of --model-dir (HF names, e.g. from
fixtures/fetch_tiny_en.sh), mapped as fixtures/make_tiny_en_reference.py maps them. Timed: one
pass over every clip (log-mel, encoder, decoder), after the audio is read and the model loaded.
Writes a JSON report with the fields of ours that can be compared (wer, wer_ci, counts,
real_time_factor, files_per_second, utterances).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "fixtures"))


def edits(r, h):
    """(substitutions, deletions, insertions) of the cheapest alignment, substitution first on ties."""
    prev = [(j, 0, 0, j) for j in range(len(h) + 1)]
    for i in range(1, len(r) + 1):
        cur = [(i, 0, i, 0)] + [None] * len(h)
        for j in range(1, len(h) + 1):
            same = r[i - 1] == h[j - 1]
            d, u, l = prev[j - 1], prev[j], cur[j - 1]
            diag = (d[0] + (not same), d[1] + (not same), d[2], d[3])
            dele = (u[0] + 1, u[1], u[2] + 1, u[3])
            ins = (l[0] + 1, l[1], l[2], l[3] + 1)
            cur[j] = diag if diag[0] <= dele[0] and diag[0] <= ins[0] else (dele if dele[0] <= ins[0] else ins)
        prev = cur
    return prev[-1][1:]


def main():
    import whisper
    from whisper.normalizers import EnglishTextNormalizer
    from make_tiny_en_reference import openai_model, read_wav16

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base = os.path.dirname(a.manifest)
    rows = [json.loads(l) for l in open(a.manifest) if l.strip()][: a.limit]
    audio = [read_wav16(os.path.join(base, r["audio"])) for r in rows]
    model = openai_model(a.model_dir)
    dims = model.dims
    model.eval()
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False, temperature=0.0)
    t0 = time.perf_counter()
    texts = []
    for x in audio:
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(x)), dims.n_mels)
        texts.append(whisper.decode(model, mel, options).text)
    seconds = time.perf_counter() - t0
    norm = EnglishTextNormalizer()
    utts, counts = [], np.zeros(4, dtype=np.int64)
    for r, x, t in zip(rows, audio, texts):
        ref, hyp = norm(r["text"]).strip(), norm(t).strip()
        s, d, i = edits(ref.split(), hyp.split())
        c = {"substitutions": s, "deletions": d, "insertions": i, "reference_words": len(ref.split())}
        counts += [s, d, i, c["reference_words"]]
        utts.append({"audio": r["audio"], "seconds": len(x) / 16000, "reference": ref, "hypothesis": hyp, "counts": c})
    err = np.array([u["counts"]["substitutions"] + u["counts"]["deletions"] + u["counts"]["insertions"] for u in utts], dtype=float)
    words = np.array([u["counts"]["reference_words"] for u in utts], dtype=float)
    rng = np.random.default_rng(1)
    boot = []
    for _ in range(2000):
        k = rng.integers(0, len(utts), len(utts))
        boot.append(err[k].sum() / max(words[k].sum(), 1))
    audio_s = sum(u["seconds"] for u in utts)
    report = {
        "kind": "asr-eval-peer",
        "peer": f"openai-whisper {whisper.__version__}, torch {torch.__version__}, {a.threads} thread(s)",
        "model": a.model_dir,
        "clips": len(utts),
        "audio_seconds": audio_s,
        "seconds": seconds,
        "real_time_factor": seconds / audio_s,
        "files_per_second": len(utts) / seconds,
        "wer": err.sum() / words.sum(),
        "wer_ci": {"low": float(np.percentile(boot, 2.5)), "high": float(np.percentile(boot, 97.5))},
        "counts": dict(zip(["substitutions", "deletions", "insertions", "reference_words"], map(int, counts))),
        "utterances": utts,
    }
    json.dump(report, open(a.out, "w"), indent=1)
    print(f"WER {100 * report['wer']:.2f}% [{100 * report['wer_ci']['low']:.2f}, {100 * report['wer_ci']['high']:.2f}] over {int(words.sum())} words; "
          f"{len(utts)} clips, {audio_s:.1f} s in {seconds:.2f} s: real-time factor {report['real_time_factor']:.4f}, {report['files_per_second']:.2f} files/s")


if __name__ == "__main__":
    main()
