#!/usr/bin/env bash
# Builds Pensieve and runs every test, unit and end-to-end, once, in a build with AddressSanitizer
# and UBSan (build-asan/; `--release` runs them in the release build, build/, instead). Then it says
# how many tests were skipped and why; it exits non-zero when a build or a test fails.
#
# One sanitized pass rather than a release pass and a sanitized one: every test ran in both before,
# and the sanitized build alone is what catches memory errors. It is built at -O0 -g1 (line tables
# only: file:line in every report): with both sanitizers GCC compiles a file that uses nlohmann/json
# or CLI11 2.5-3x faster at -O0 than at -O1 (cmd_tokenize.cpp 18 s vs 58 s, bench_client.cpp 71 s vs
# 150 s on a 2-core Xeon), and the build is most of the run; the tests take ~1.5x longer (ctest -j2
# 8.7 vs 5.5 minutes). The SIMD kernels keep their own optimization (CMakeLists.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

# Prints the skipped tests of a ctest JUnit file, counted by reason: the message of GTEST_SKIP()
# (the line after "file:line: Skipped") or of an e2e test ("SKIPPED file: reason").
skip_summary() {
  awk '
    function unescape(s) {
      gsub(/&lt;/, "<", s); gsub(/&gt;/, ">", s); gsub(/&quot;/, "\"", s); gsub(/&apos;/, "\047", s)
      gsub(/&amp;/, "\\&", s)
      return s
    }
    /<testcase / { skipped = ($0 ~ /status="notrun"/); reason = ""; fallback = ""; out = 0; next_is_reason = 0 }
    skipped && /<skipped message="/ { fallback = $0; sub(/.*<skipped message="/, "", fallback); sub(/".*/, "", fallback) }
    skipped && /<system-out>/ { out = 1; sub(/.*<system-out>/, "") }
    skipped && out {
      line = $0
      if (sub(/<\/system-out>.*/, "", line)) out = 0
      line = unescape(line)
      if (next_is_reason && reason == "") reason = line
      next_is_reason = (line ~ /: Skipped$/)
      if (reason == "" && line ~ /^SKIPPED [^:]*: /) { reason = line; sub(/^SKIPPED [^:]*: /, "", reason) }
    }
    skipped && /<\/testcase>/ {
      if (reason == "") reason = unescape(fallback)
      count[reason]++; total++; skipped = 0
    }
    END {
      if (!total) { print "  skipped: none"; exit }
      print "  skipped: " total " test" (total > 1 ? "s" : "") ", by reason:"
      for (r in count) printf "  %6d  %s\n", count[r], r
    }
  ' "$1"
}

# ctest in build folder $1 (further arguments go to ctest), then the skip summary; returns ctest's status.
run_tests() {
  local dir=$1 junit="$PWD/$1/ctest-junit.xml" rc=0
  shift
  rm -f "$junit"
  ctest --test-dir "$dir" --output-junit "$junit" "$@" || rc=$?
  echo "Tests in $dir:"
  if [ -f "$junit" ]; then skip_summary "$junit"; else echo "  no test report at $junit"; fi
  return "$rc"
}

if [ "${1:-}" = "--release" ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  make -C build -j"$jobs"
  run_tests build --output-on-failure -j"$jobs"
  exit
fi

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O0 -g1" \
  -DPENSIEVE_SANITIZE=ON >/dev/null
make -C build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  run_tests build-asan --output-on-failure -j"$jobs"
