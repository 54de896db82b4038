#!/usr/bin/env bash
# The table of docs/performance.md: every row, each against a fresh `tokenmint serve --dev` that
# tokenmint-bench starts on a free loopback port and stops. Medians of REPEAT runs (default 3)
# of SECS seconds each (default 5). Prints Markdown rows; bounded in time (a few minutes).
#
#   cargo build --release --bins && benches/table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bench=target/release/tokenmint-bench
[[ -x $bench && -x target/release/tokenmint ]] || { echo "build first: cargo build --release --bins" >&2; exit 2; }
secs=${SECS:-5}
repeat=${REPEAT:-3}
run() { "$bench" --spawn --repeat "$repeat" --duration "${secs}s" "$@"; }

echo "| row | load | throughput | p50 ms | p99 ms | p99.9 ms | server CPU µs/req | bench CPU µs/req | server RSS idle / peak |"
echo "|---|---|---|---|---|---|---|---|---|"
run --markdown "IssueToken, persistent connections" --mode issue --connections 2 --streams 32
run --markdown "IssueToken, new mTLS connection per request" --mode connect --connections 16 --streams 1
run --markdown "IntrospectToken, one token repeated" --mode introspect --connections 2 --streams 32
# Every request a token never introspected before, so every one is verified: the pool outlasts
# the warm-up and all runs, and is larger than the verified-token cache would need to matter.
"$bench" --spawn --repeat "$repeat" --requests 60000 --pool 200000 --markdown \
  "IntrospectToken, distinct tokens (each verified)" --mode introspect --connections 2 --streams 32
run --markdown "GetJwks" --mode jwks --connections 2 --streams 32

# Start-up: a first start writes the development PKI, config, KEK, SQLite and a key; a second
# start on the same directory only opens them.
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
start_ms() {
  local out
  out=$("$bench" --spawn --dir "$dir" --json --requests 1 --warmup 0s)
  echo "$out" | grep -m1 start_to_serving_ms | tr -d ","
}
first=$(start_ms)
second=$(start_ms)
echo
printf "start to serving (embedded store): first start %.0f ms, restart %.0f ms\n" "${first##*: }" "${second##*: }"
