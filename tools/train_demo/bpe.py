"""Byte-level BPE: training, encoding, and the Hugging Face tokenizer.json writer.

The pre-tokenizer is GPT-2's split regex over raw text; each piece is turned
into bytes, each byte into one printable character (GPT-2's byte-to-unicode
table), and merges are learned over those characters. Special tokens are cut
out of the text before pre-tokenization, as Hugging Face tokenizers does.
"""
import heapq
import json
from collections import Counter, defaultdict

import regex

GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPLIT_RE = regex.compile(GPT2_SPLIT)


def bytes_to_unicode():
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, (chr(c) for c in chars)))


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def pieces(text):
    """GPT-2 pre-tokens of `text`, each mapped to byte characters."""
    return ["".join(BYTE_TO_CHAR[b] for b in p.encode("utf-8")) for p in SPLIT_RE.findall(text)]


def train(word_counts, vocab_size, n_special):
    """Learns merges from {piece: count}. Returns (vocab list, merges list)."""
    alphabet = [BYTE_TO_CHAR[b] for b in range(256)]
    vocab = list(alphabet)
    sym_id = {s: i for i, s in enumerate(vocab)}
    words = [[sym_id[c] for c in w] for w in word_counts]
    counts = list(word_counts.values())
    pair_count = defaultdict(int)
    where = defaultdict(set)
    for wi, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_count[(a, b)] += counts[wi]
            where[(a, b)].add(wi)
    heap = [(-c, vocab[p[0]], vocab[p[1]], p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merges = []
    target = vocab_size - n_special
    while len(vocab) < target and heap:
        negc, _, _, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or negc == 0:
            continue
        a, b = pair
        new_sym = len(vocab)
        vocab.append(vocab[a] + vocab[b])
        merges.append((vocab[a], vocab[b]))
        changed = defaultdict(int)
        for wi in list(where[pair]):
            w, c = words[wi], counts[wi]
            for x, y in zip(w, w[1:]):
                changed[(x, y)] -= c
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new_sym)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[wi] = out
            for x, y in zip(out, out[1:]):
                changed[(x, y)] += c
                where[(x, y)].add(wi)
        del where[pair]
        for p, delta in changed.items():
            if delta == 0:
                continue
            pair_count[p] += delta
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], vocab[p[0]], vocab[p[1]], p))
        pair_count.pop(pair, None)
    return vocab, merges


class Encoder:
    def __init__(self, vocab, merges, special):
        self.ids = {s: i for i, s in enumerate(vocab)}
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.special = special  # {text: id}
        self.special_re = regex.compile("|".join(regex.escape(s) for s in special)) if special else None
        self.cache = {}
        self.id_to_text = {i: s for s, i in self.ids.items()}

    def _bpe(self, piece):
        hit = self.cache.get(piece)
        if hit is not None:
            return hit
        syms = list(piece)
        while len(syms) > 1:
            best, best_rank = None, None
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best is None:
                break
            syms[best:best + 2] = [syms[best] + syms[best + 1]]
        out = [self.ids[s] for s in syms]
        if len(self.cache) < 2_000_000:
            self.cache[piece] = out
        return out

    def encode(self, text):
        out = []
        pos = 0
        if self.special_re is not None:
            for m in self.special_re.finditer(text):
                for p in pieces(text[pos:m.start()]):
                    out.extend(self._bpe(p))
                out.append(self.special[m.group(0)])
                pos = m.end()
        for p in pieces(text[pos:]):
            out.extend(self._bpe(p))
        return out

    def decode(self, ids):
        data = bytearray()
        for i in ids:
            s = self.id_to_text[i]
            if s in self.special:
                data.extend(s.encode("utf-8"))
            else:
                data.extend(CHAR_TO_BYTE[c] for c in s)
        return data.decode("utf-8", errors="replace")


def tokenizer_json(vocab, merges, special_tokens):
    """The Hugging Face tokenizers document for a byte-level BPE."""
    vocab_map = {s: i for i, s in enumerate(vocab)}
    added = []
    for s in special_tokens:
        vocab_map[s] = len(vocab_map)
        added.append({"id": vocab_map[s], "content": s, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab_map,
                  "merges": ["%s %s" % m for m in merges]},
    }


def count_pieces(texts):
    counts = Counter()
    for t in texts:
        counts.update(pieces(t))
    return counts


def load_tokenizer_json(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    vocab_map = doc["model"]["vocab"]
    special = {t["content"]: t["id"] for t in doc["added_tokens"]}
    vocab = [None] * len(vocab_map)
    for s, i in vocab_map.items():
        vocab[i] = s
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in doc["model"]["merges"]]
    return Encoder(vocab, merges, special)
