"""Checks the exported Hugging Face folder against the reference libraries
(run where transformers and tokenizers are installed, e.g. the GPU machine):

1. transformers' LlamaForCausalLM loads config.json + model.safetensors and
   gives the same logits as our own model code on the same weights;
2. tokenizers' Tokenizer.from_file(tokenizer.json) encodes the held-out corpus
   exactly as our encoder does (the ids the model was trained on), and decodes back;
3. transformers' chat template rendering equals the training text format.

  python3 check_hf.py --hf HF_DIR --corpus CORPUS_DIR
"""
import argparse
import json
import os

import numpy as np
import torch

import bpe
import safetensors_io
from model import Config, LlamaForCausalLM
from prepare import render


def check_logits(hf_dir):
    from transformers import LlamaForCausalLM as HFLlama
    hf = HFLlama.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    cfg_doc = json.load(open(os.path.join(hf_dir, "config.json")))
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta")
    ours = LlamaForCausalLM(Config(**{k: cfg_doc[k] for k in keys})).eval()
    weights = {k: torch.from_numpy(v.astype(np.float32)) for k, v in
               safetensors_io.load(os.path.join(hf_dir, "model.safetensors")).items()}
    missing, unexpected = ours.load_state_dict(weights, strict=False)
    assert not unexpected and all(m.startswith("rope_") for m in missing), (missing, unexpected)
    ids = torch.randint(0, cfg_doc["vocab_size"], (2, 97), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = hf(ids).logits.double()
        b = ours(ids).double()
    rel = ((a - b).norm() / a.norm()).item()
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    print("logits vs transformers: relative L2 %.3e, argmax agreement %.4f" % (rel, agree))
    return rel < 1e-4 and agree == 1.0


def check_tokenizer(hf_dir, corpus_dir, limit=3000):
    from tokenizers import Tokenizer
    ref = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    ours = bpe.load_tokenizer_json(os.path.join(hf_dir, "tokenizer.json"))
    bad = 0
    n = 0
    with open(os.path.join(corpus_dir, "heldout.jsonl"), encoding="utf-8") as f:
        docs = [json.loads(line) for line in f][:limit]
    extra = ["Hello, world!  It's 3.14 o'clock\n\n\tdone  ", "naïve café — 日本語 🙂", "  leading and trailing  "]
    texts = [render(d) for d in docs] + extra
    for text in texts:
        mine = ours.encode(text)
        theirs = ref.encode(text, add_special_tokens=False).ids
        n += 1
        if mine != theirs:
            bad += 1
            if bad <= 3:
                print("MISMATCH", repr(text[:80]), mine[:20], theirs[:20])
        if ref.decode(theirs, skip_special_tokens=False) != text:
            bad += 1
            if bad <= 3:
                print("DECODE MISMATCH", repr(text[:80]))
    print("tokenizer vs tokenizers: %d texts, %d mismatches" % (n, bad))
    return bad == 0


def check_template(hf_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(hf_dir)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What does cat mean?"},
            {"role": "assistant", "content": "A cat is a small animal."}, {"role": "user", "content": "Thanks"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    expected = render({"messages": msgs})[len("<|endoftext|>"):] + "<|im_start|>assistant\n"
    ok = text == expected
    print("chat template:", "ok" if ok else "MISMATCH %r" % text)
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True)
    ap.add_argument("--corpus", required=True)
    args = ap.parse_args()
    results = {}
    for name, fn in (("logits", lambda: check_logits(args.hf)),
                     ("tokenizer", lambda: check_tokenizer(args.hf, args.corpus)),
                     ("template", lambda: check_template(args.hf))):
        try:
            results[name] = bool(fn())
        except Exception as e:  # report every check, even when one breaks
            print("%s check failed: %r" % (name, e))
            results[name] = False
    print("checks:", json.dumps(results))


if __name__ == "__main__":
    main()
