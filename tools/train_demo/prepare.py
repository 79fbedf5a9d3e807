"""Trains the byte-level BPE on the corpus, writes the tokenizer files of the
Hugging Face folder, and tokenizes the corpus into uint16 arrays for training.

  python3 prepare.py --corpus DIR --hf DIR --out DIR [--vocab 8192]

Writes: HF/tokenizer.json, HF/tokenizer_config.json, OUT/train.bin, OUT/heldout.bin
(little-endian uint16 token ids; documents start with <|endoftext|>).
"""
import argparse
import json
import os
import random
import struct
import time

import bpe

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def render(doc):
    """One corpus document as the exact text the model is trained on."""
    if "text" in doc:
        return "<|endoftext|>" + doc["text"] + "\n"
    parts = ["<|endoftext|>"]
    for m in doc["messages"]:
        parts.append("<|im_start|>%s\n%s<|im_end|>\n" % (m["role"], m["content"]))
    return "".join(parts)


def read_docs(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def strip_special(text):
    for s in SPECIAL:
        text = text.replace(s, "\x00")
    return [t for t in text.split("\x00") if t]


def write_tokenizer(hf_dir, vocab, merges):
    os.makedirs(hf_dir, exist_ok=True)
    with open(os.path.join(hf_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(bpe.tokenizer_json(vocab, merges, SPECIAL), f, ensure_ascii=False, indent=1)
    n = len(vocab)
    added = {str(n + i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                          "single_word": False, "special": True} for i, s in enumerate(SPECIAL)}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 1024,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": added,
        "chat_template": CHAT_TEMPLATE,
    }
    with open(os.path.join(hf_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    special_map = {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                   "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}
    with open(os.path.join(hf_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special_map, f, indent=1)


def write_ids(path, ids):
    with open(path, "wb") as f:
        f.write(struct.pack("<%dH" % len(ids), *ids))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--hf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--bpe-sample", type=int, default=120000, help="documents used to learn merges")
    args = ap.parse_args()
    train_docs = read_docs(os.path.join(args.corpus, "train.jsonl"))
    heldout_docs = read_docs(os.path.join(args.corpus, "heldout.jsonl"))
    t0 = time.time()
    sample = random.Random(7).sample(train_docs, min(args.bpe_sample, len(train_docs)))
    texts = [t for d in sample for t in strip_special(render(d))]
    counts = bpe.count_pieces(texts)
    vocab, merges = bpe.train(counts, args.vocab, len(SPECIAL))
    print("bpe: %d pieces, %d merges, %.1fs" % (len(counts), len(merges), time.time() - t0))
    write_tokenizer(args.hf, vocab, merges)
    enc = bpe.load_tokenizer_json(os.path.join(args.hf, "tokenizer.json"))
    os.makedirs(args.out, exist_ok=True)
    for name, docs in (("train", train_docs), ("heldout", heldout_docs)):
        t0 = time.time()
        ids = []
        for d in docs:
            ids.extend(enc.encode(render(d)))
        write_ids(os.path.join(args.out, name + ".bin"), ids)
        print("%s: %d docs, %d tokens, %.1fs" % (name, len(docs), len(ids), time.time() - t0))
    probe = render(heldout_docs[0])
    assert enc.decode(enc.encode(probe)) == probe, "tokenizer round trip failed"


if __name__ == "__main__":
    main()
