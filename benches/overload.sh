#!/usr/bin/env bash
# Overload: client `demo` floods IssueToken at about ten times its configured rate while
# client `other` asks at a normal pace; reports what each got, other's latency, and the
# server's CPU and peak RSS. Loopback only, bounded in time (DURATION, default 30 s).
#
#   cargo build --release --bins && benches/overload.sh
# Needs openssl (the second client's certificate) and python3 (a free port, the summary).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/target/release/tokenmint
bench=$PWD/target/release/tokenmint-bench
[[ -x $bin && -x $bench ]] || { echo "build first: cargo build --release --bins" >&2; exit 2; }
secs=${DURATION:-30}
limit=${LIMIT:-2000}
dir=$(mktemp -d)
cleanup() { [[ -n ${server:-} ]] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
cd "$dir"

"$bin" init --dir . >/dev/null
# A second issuing client, with a certificate from the development CA.
openssl ecparam -name prime256v1 -genkey -noout -out certs/other.sec1 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in certs/other.sec1 -out certs/other.key
openssl req -new -key certs/other.key -subj /CN=other -out other.csr 2>/dev/null
printf 'subjectAltName=URI:spiffe://tokenmint.dev/other\nextendedKeyUsage=clientAuth\n' >other.ext
openssl x509 -req -in other.csr -CA certs/ca.pem -CAkey certs/ca.key -CAcreateserial -days 1 \
  -sha256 -extfile other.ext -out certs/other.pem 2>/dev/null
"$bin" client add --id other --san-uri spiffe://tokenmint.dev/other --scope demo:read \
  --audience https://demo.tokenmint.dev >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18443)
TOKENMINT__SERVER__LISTEN=127.0.0.1:$port TOKENMINT__SERVER__OPS_LISTEN=off \
  TOKENMINT__LIMITS__ISSUE_PER_CLIENT="{ demo = $limit }" RUST_LOG=warn \
  "$bin" serve >server.log 2>&1 &
server=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

url=https://localhost:$port
"$bench" --server "$url" --ca certs/ca.pem --mode issue --connections 1 --streams 16 \
  --duration "${secs}s" --json >flood.json &
flood=$!
"$bench" --server "$url" --ca certs/ca.pem --cert certs/other.pem --key certs/other.key \
  --mode issue --connections 1 --streams 2 --duration "${secs}s" --pid "$server" --json >other.json
wait "$flood"

python3 - "$limit" <<'PY'
import json, sys
limit = int(sys.argv[1])
flood = json.load(open("flood.json"))["median"]
other = json.load(open("other.json"))["median"]
asked = flood["requests"] / flood["seconds"]
print(f"demo (limit {limit}/s): asked {asked:,.0f}/s ({asked / limit:.1f}× its limit), "
      f"got {flood['ok'] / flood['seconds']:,.0f}/s, refused {flood['errors']}")
print(f"other: {other['throughput_per_s']:,.0f}/s, errors {other['errors']}, "
      f"p50 {other['latency_us']['p50'] / 1000:.2f} ms, p99 {other['latency_us']['p99'] / 1000:.2f} ms, "
      f"p99.9 {other['latency_us']['p999'] / 1000:.2f} ms")
s = other["server"]
print(f"server: {s['cpu_cores_busy']:.2f} cores busy, peak RSS {s['peak_rss_mib']:.0f} MiB "
      f"over {other['seconds']:.0f} s")
PY
