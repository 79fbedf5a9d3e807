"""Reader for the WordNet 3.0 database files (Debian package wordnet-base).

Only what the demo corpus needs: synsets with their words, definitions,
examples and a few relations (hypernym, hyponym, part-of, antonym), the
per-lemma sense order from the index files and sense frequencies from
cntlist.rev.
"""
import os
import re
from collections import defaultdict

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
ADJ_MARKER = re.compile(r"\((a|p|ip)\)$")


class Synset:
    __slots__ = ("key", "pos", "words", "definitions", "examples", "pointers")

    def __init__(self, key, pos, words, definitions, examples, pointers):
        self.key = key              # (pos letter, offset)
        self.pos = pos              # n, v, a, r ("s" satellites folded into "a")
        self.words = words          # lemmas with spaces, original case
        self.definitions = definitions
        self.examples = examples
        self.pointers = pointers    # list of (symbol, target key, source word index, target word index)


def _split_gloss(gloss):
    definitions, examples = [], []
    for part in gloss.split(";"):
        part = part.strip()
        if not part:
            continue
        if part.startswith('"'):
            text = part.strip('"').strip()
            if text:
                examples.append(text)
        else:
            definitions.append(part)
    return definitions, examples


def _parse_data_line(line, file_pos):
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    offset = fields[0]
    w_cnt = int(fields[3], 16)
    words = []
    i = 4
    for _ in range(w_cnt):
        word = ADJ_MARKER.sub("", fields[i]).replace("_", " ")
        words.append(word)
        i += 2
    p_cnt = int(fields[i])
    i += 1
    pointers = []
    for _ in range(p_cnt):
        symbol, target, tpos, srctgt = fields[i:i + 4]
        tpos = "a" if tpos == "s" else tpos
        pointers.append((symbol, (tpos, target), int(srctgt[:2], 16), int(srctgt[2:], 16)))
        i += 4
    definitions, examples = _split_gloss(gloss.strip())
    return Synset((file_pos, offset), file_pos, words, definitions, examples, pointers)


class WordNet:
    def __init__(self, root="/usr/share/wordnet"):
        self.root = root
        self.synsets = {}
        self.senses = defaultdict(list)     # (lemma lower, pos) -> [synset key] in sense order
        self.lemma_counts = defaultdict(int)
        for pos, name in POS_FILES.items():
            self._read_data(pos, os.path.join(root, "data." + name))
            self._read_index(pos, os.path.join(root, "index." + name))
        self._read_counts(os.path.join(root, "cntlist.rev"))

    def _read_data(self, pos, path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):
                    continue  # license header
                s = _parse_data_line(line.rstrip("\n"), pos)
                self.synsets[s.key] = s

    def _read_index(self, pos, path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                fields = line.split()
                lemma = fields[0].replace("_", " ")
                p_cnt = int(fields[3])
                offsets = fields[4 + p_cnt + 2:]
                self.senses[(lemma, pos)] = [(pos, o) for o in offsets]

    def _read_counts(self, path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, count = line.split()
                lemma = key.split("%")[0].replace("_", " ")
                self.lemma_counts[lemma] += int(count)

    def surface(self, synset, lemma):
        """The lemma as written in this synset (keeps capitals of proper names)."""
        for w in synset.words:
            if w.lower() == lemma:
                return w
        return lemma

    def related(self, synset, symbols):
        return [self.synsets[t] for (sym, t, _, _) in synset.pointers
                if sym in symbols and t in self.synsets]

    def antonyms(self, synset, lemma):
        out = []
        for sym, target, src, dst in synset.pointers:
            if sym != "!" or target not in self.synsets:
                continue
            if src and synset.words[src - 1].lower() != lemma:
                continue
            other = self.synsets[target]
            out.append(other.words[dst - 1] if dst else other.words[0])
        return out
