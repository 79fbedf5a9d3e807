#!/usr/bin/env bash
# The CUDA backend's whole check in one command, on a machine with an NVIDIA GPU and the CUDA
# toolkit:
#   scripts/gpu-check.sh VOCAB.gguf            build (needs the Debian -dev packages of
#                                              scripts/install-deps.sh), test, synthesize, bench
#   PENSIEVE_GPU_BIN=DIR scripts/gpu-check.sh VOCAB.gguf
#                                              the same with binaries packed elsewhere (a GPU
#                                              machine without the -dev packages)
#   scripts/gpu-check.sh --pack DIR            on a build machine (no GPU needed): build
#                                              pensieve and test_backend for $PENSIEVE_CUDA_ARCH
#                                              (default 90a-real) and copy them, with the shared
#                                              libraries a bare machine lacks, into DIR
# Steps: the op and reference-model tests (test_backend), Phi-3-mini-shaped Q4_0 / Q4_K_M / Q8_0
# files from `pensieve synth` (2.1-4 GB each, under $PENSIEVE_GPU_WORK, default /tmp), then
# `pensieve bench --device cuda` on each and a table of the issue's targets.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--pack" ]]; then
  out="${2:?usage: scripts/gpu-check.sh --pack DIR}"
  arch="${PENSIEVE_CUDA_ARCH:-90a-real}"
  cmake -S . -B build-gpu-pack -G Ninja -DCMAKE_BUILD_TYPE=Release -DPENSIEVE_BENCH=OFF \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" >/dev/null
  cmake --build build-gpu-pack --target pensieve test_backend
  mkdir -p "$out/lib"
  cp build-gpu-pack/pensieve build-gpu-pack/test_backend "$out/"
  # Shared libraries outside the C/C++ runtime and the CUDA toolkit (spdlog, fmt, sqlite, ...).
  ldd build-gpu-pack/pensieve build-gpu-pack/test_backend | awk '/=> \//{print $3}' | sort -u |
    grep -vE '/(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|libcublas|libcublasLt|libcudart)\.so' |
    xargs -r -I{} cp -L {} "$out/lib/"
  echo "packed into $out: run PENSIEVE_GPU_BIN=$out scripts/gpu-check.sh VOCAB.gguf on the GPU machine"
  exit 0
fi

vocab="${1:?usage: scripts/gpu-check.sh VOCAB.gguf (e.g. tests/data/vocab/ggml-vocab-phi-3.gguf)}"
work="${PENSIEVE_GPU_WORK:-/tmp/pensieve-gpu-check}"
mkdir -p "$work"
command -v nvidia-smi >/dev/null || { echo "gpu-check: nvidia-smi not found (no NVIDIA driver)"; exit 1; }

if [[ -n "${PENSIEVE_GPU_BIN:-}" ]]; then
  bin="$PENSIEVE_GPU_BIN"
  export LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
else
  # This GPU's architecture; on Hopper (compute capability 9.0) its sm_90a form, which the wgmma
  # kernels need ("native" would give plain sm_90).
  cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')"
  native=native
  [[ "$cap" == 90 ]] && native=90a-real
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DPENSIEVE_BENCH=OFF \
    -DCMAKE_CUDA_ARCHITECTURES="${PENSIEVE_CUDA_ARCH:-$native}" >/dev/null ||
    { echo "gpu-check: configure failed; on a machine without the -dev packages use --pack elsewhere"; exit 1; }
  cmake --build build-gpu --target pensieve test_backend
  bin=build-gpu
fi
export PENSIEVE_TESTDATA="${PENSIEVE_TESTDATA:-$PWD/tests/data}"

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "commit $commit"

echo "== op tests and reference models (test_backend)"
"$bin/test_backend" 2>&1 | tee "$work/test_backend.log" | grep -E "rel err|\[  (PASSED|FAILED|SKIPPED) " || true
if grep -q "\[  FAILED  \]" "$work/test_backend.log"; then echo "gpu-check: test_backend failed"; fi

for t in q4_0 q4_k_m q8_0; do
  f="$work/phi3-mini-$t.gguf"
  [[ -s "$f" ]] || "$bin/pensieve" synth --preset phi3-mini --type "$t" --vocab "$vocab" --out "$f"
  echo "== bench $t"
  "$bin/pensieve" bench -m "$f" --device cuda -p 512 -n 128 -r 3 --streams 64 --json | tee "$work/bench-$t.json"
done
# Beyond the targets: the 8-bit KV cache, and decoding after 3,968 tokens of context.
f="$work/phi3-mini-q4_0.gguf"
"$bin/pensieve" bench -m "$f" --device cuda -p 0 -n 128 -r 3 --streams 64 --kv-type q8 --json | tee "$work/bench-q8kv.json"
"$bin/pensieve" bench -m "$f" --device cuda -p 0 -n 128 -r 3 -d 3968 --json | tee "$work/bench-depth.json"

python3 - "$work" <<'EOF'
import json, sys
work = sys.argv[1]
def load(t):
    return json.loads(open(f"{work}/bench-{t}.json").read().strip().splitlines()[-1])
rows = []
q4 = load("q4_0")
# (what, measured, target, llama.cpp anchor on an H100 for the Q4_0 file)
rows.append(("Q4_0 tg128 tok/s", q4["tg_tok_s"], ">= 840", "268"))
rows.append(("Q4_K_M tg128 tok/s", load("q4_k_m")["tg_tok_s"], ">= 700", "-"))
rows.append(("Q8_0 tg128 tok/s", load("q8_0")["tg_tok_s"], ">= 450", "-"))
rows.append(("Q4_0 pp512 tok/s", q4["pp_tok_s"], ">= 30000", "13768"))
rows.append(("Q4_0 64 streams gen tok/s", q4["streams_tok_s"], ">= 15000", "2718"))
rows.append(("Q4_0 decode / copy bandwidth", 100 * q4["decode_bandwidth_fraction"], ">= 60 %", "19 %"))
rows.append(("Q4_0 copy bandwidth GB/s", q4["bandwidth_gbs"], "-", "~3000"))
rows.append(("Q4_0 load s", q4["load_s"], "< 2", "-"))
rows.append(("Q4_0 64 streams, q8 KV cache", load("q8kv")["streams_tok_s"], "-", "-"))
rows.append(("Q4_0 tg128 after 3968 tokens", load("depth")["tg_tok_s"], "-", "-"))
print(f"\n{'target':32} {'measured':>12} {'goal':>10} {'llama.cpp':>10}")
for what, v, goal, anchor in rows:
    print(f"{what:32} {v:12.1f} {goal:>10} {anchor:>10}")
print(f"GPU memory (Q4_0): {q4['gpu_memory']}")
EOF
