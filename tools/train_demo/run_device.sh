#!/bin/bash
# One GPU-machine call: train the demo model, check the exported folder against
# transformers/tokenizers, and leave the results under $OUT (files of at most
# 15 MiB: the float16 weights are split and are joined again with cat).
set -u
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1
D=data
nvidia-smi -L
python3 -c "import torch, transformers, tokenizers; print(torch.__version__, transformers.__version__, tokenizers.__version__)"
python3 train.py --data $D/tokens --hf $D/pensieve-demo --seconds "${TRAIN_SECONDS:-400}" "$@" > $OUT/train.log 2>&1
echo "train exit $?"; tail -25 $OUT/train.log
python3 check_hf.py --hf $D/pensieve-demo --corpus $D/corpus > $D/pensieve-demo/check.log 2>&1
cat $D/pensieve-demo/check.log
tar -C $D/pensieve-demo -cf $OUT/meta.tar config.json generation_config.json metrics.json check.log train.log
split -b 15m -d $D/pensieve-demo/model.safetensors $OUT/model.safetensors.part
ls -la $OUT
