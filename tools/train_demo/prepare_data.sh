#!/bin/bash
# Builds everything the GPU run needs under tools/train_demo/data (git-ignored):
# the WordNet corpus, the byte-level BPE tokenizer files and the token arrays.
# Needs the Debian packages wordnet-base and python3-regex (python3-torch and
# python3-numpy only for the CPU smoke test of train.py).
set -euo pipefail
cd "$(dirname "$0")"
PY=/usr/bin/python3
rm -rf data
mkdir -p data
$PY build_corpus.py --out data/corpus --seed 1
$PY prepare.py --corpus data/corpus --hf data/pensieve-demo --out data/tokens --vocab 8192
rm data/corpus/train.jsonl   # the token arrays hold it; keeps the carried folder small
du -sh data
