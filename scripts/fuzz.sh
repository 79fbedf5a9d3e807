#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, -DPENSIEVE_FUZZ=ON in build-fuzz/) and runs each
# for SECONDS (default 60). Corpora grow in build-fuzz/corpus/<target>/, seeded from
# tests/fuzz/seeds/<target>/ and ../shared/testdata ($PENSIEVE_TESTDATA). Inputs that crash, time out
# or run out of memory are copied to tests/fuzz/regressions/<target>/, which test_fuzz_regressions
# replays in the normal build: commit them with the fix.
#   scripts/fuzz.sh [SECONDS]      TARGETS="jinja gguf" scripts/fuzz.sh 300      JOBS=2 (parallel runs)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
targets=${TARGETS:-"gguf safetensors hf_config tokenizer_json jinja anthropic_request openai_request http_request"}
build=${FUZZ_BUILD:-build-fuzz}
testdata=${PENSIEVE_TESTDATA:-../shared/testdata}
jobs=${JOBS:-1}

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPENSIEVE_FUZZ=ON \
  -DPENSIEVE_TESTS=OFF -DPENSIEVE_BENCH=OFF "${launcher[@]}" >/dev/null
make -C "$build" -j"$(nproc)" $(for t in $targets; do echo "fuzz_$t"; done) | grep -v "^make\[" || true

# Seeds from the reference data: real model files, configs and chat templates.
seed_from_testdata() {
  local t=$1 dir=$2 files
  [ -d "$testdata" ] || return 0
  case $t in
    # Two real models (and the small hand-made seeds): larger inputs make every execution slower.
    gguf) files=$(find "$testdata" -name '*.gguf' -size -1M | sort | head -n 2) ;;
    safetensors) files=$(find "$testdata" -name '*.safetensors' -size -1M) ;;
    hf_config) files=$(find "$testdata" -name 'config.json') ;;
    jinja) files=$(find "$testdata/templates" -name '*.jinja') ;;
    *) return 0 ;;
  esac
  for f in $files; do cp "$f" "$dir/$(echo "$f" | md5sum | cut -c1-12)-$(basename "$f")"; done
}

max_len() {
  case $1 in gguf|safetensors) echo 2097152 ;; tokenizer_json|jinja) echo 65536 ;; *) echo 16384 ;; esac
}

run_one() {
  local t=$1
  local corpus="$build/corpus/$t" seeds="$build/seeds/$t" artifacts="$build/artifacts/$t"
  mkdir -p "$corpus" "$seeds" "$artifacts"
  [ -d "tests/fuzz/seeds/$t" ] && cp -r "tests/fuzz/seeds/$t/." "$seeds/"
  [ -d "tests/fuzz/regressions/$t" ] && cp -r "tests/fuzz/regressions/$t/." "$seeds/"
  seed_from_testdata "$t" "$seeds"
  # A crash stops a run: keep going until the time is spent, so that every crash found is kept.
  local end=$((SECONDS + seconds))
  : >"$build/$t.log"
  while [ $SECONDS -lt $end ]; do
    "$build/fuzz_$t" "$corpus" "$seeds" -max_total_time=$((end - SECONDS)) -timeout=10 -rss_limit_mb=2048 \
      -max_len="$(max_len "$t")" -artifact_prefix="$artifacts/" -print_final_stats=1 >>"$build/$t.log" 2>&1 || true
  done
  for f in "$artifacts"/*; do
    [ -e "$f" ] || continue
    mkdir -p "tests/fuzz/regressions/$t"
    cp -n "$f" "tests/fuzz/regressions/$t/"
  done
}

export -f run_one seed_from_testdata max_len
export build testdata seconds
printf '%s\n' $targets | xargs -P "$jobs" -I{} bash -c 'run_one {}'

printf '%-18s %12s %8s %8s %8s %8s\n' target execs cov ft corpus found
for t in $targets; do
  log="$build/$t.log"
  execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
  last=$(grep -h -E '^#[0-9]+.*cov: ' "$log" | tail -n 1)
  cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
  found=$(find "$build/artifacts/$t" -type f | wc -l)
  printf '%-18s %12s %8s %8s %8s %8s\n' "$t" "$execs" "${cov:-?}" "${ft:-?}" "$(ls "$build/corpus/$t" | wc -l)" "$found"
done
