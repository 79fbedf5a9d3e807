"""Evaluates a converted model with Pensieve's own engine (no PyTorch needed):
held-out perplexity over 512-token windows and greedy answers to the card's
ten questions, through `pensieve tokenize`, `pensieve logits` and `pensieve detokenize`.

  python3 eval_pensieve.py --pensieve build/pensieve --model models/pensieve-demo.gguf \
      --heldout tools/train_demo/data/tokens/heldout.bin [--windows 100]
"""
import argparse
import json
import math
import subprocess
import tempfile

import numpy as np

from questions import QUESTIONS

IM_END, END_OF_TEXT = "<|im_end|>", "<|endoftext|>"


def run(args, stdin=None):
    return subprocess.run(args, input=stdin, capture_output=True, check=True).stdout


def perplexity(pensieve, model, heldout, windows, seq=512):
    toks = np.fromfile(heldout, dtype="<u2").astype(np.int64)
    total, count = 0.0, 0
    with tempfile.NamedTemporaryFile(suffix=".f32") as out:
        for w in range(min(windows, (toks.size - 1) // seq)):
            seg = toks[w * seq: w * seq + seq + 1]
            run([pensieve, "logits", "--model", model, "--ids", ",".join(map(str, seg[:-1])),
                 "--out", out.name])
            logits = np.fromfile(out.name, dtype=np.float32).reshape(seq, -1).astype(np.float64)
            top = logits.max(1, keepdims=True)
            lse = top[:, 0] + np.log(np.exp(logits - top).sum(1))
            total += float((lse - logits[np.arange(seq), seg[1:]]).sum())
            count += seq
    return total / count, count


def answer(pensieve, model, question, max_new=90):
    prompt = "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n" % question
    ids = json.loads(run([pensieve, "tokenize", "--model", model], prompt.encode()))
    stops = set(json.loads(run([pensieve, "tokenize", "--model", model], (IM_END + END_OF_TEXT).encode())))
    with tempfile.NamedTemporaryFile(suffix=".f32") as out:
        new = json.loads(run([pensieve, "logits", "--model", model, "--ids", ",".join(map(str, ids)),
                              "--out", out.name, "--generate", str(max_new)]))
    cut = next((i for i, t in enumerate(new) if t in stops), len(new))
    return run([pensieve, "detokenize", "--model", model], json.dumps(new[:cut]).encode()).decode().strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pensieve", default="build/pensieve")
    ap.add_argument("--model", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--windows", type=int, default=100)
    args = ap.parse_args()
    loss, count = perplexity(args.pensieve, args.model, args.heldout, args.windows)
    print("held-out: %d tokens, loss %.4f, perplexity %.3f" % (count, loss, math.exp(loss)), flush=True)
    for q in QUESTIONS:
        print("| %s | %s |" % (q, answer(args.pensieve, args.model, q)), flush=True)


if __name__ == "__main__":
    main()
