#!/usr/bin/env bash
# What `tokenmint authz` costs behind nginx: requests/s through nginx asking the sidecar
# (auth_request) against the same nginx not asking it, same load, in turns; and the sidecar's
# CPU time per decision.
#
#   benches/authz_nginx.sh
#
# Builds the release binaries, then in a temporary directory starts `tokenmint serve --dev`
# (the issuer), `tokenmint authz` beside it, and two nginx processes (one process each, no
# workers) running deploy/nginx/tokenmint-authz.conf with HTTP/2 on: "sidecar" as shipped,
# "alone" with `auth_request off`. Each proxies to a `return 200` upstream of its own.
# tokenmint-bench --mode forward (the demo certificate, a bound demo token) drives one, then
# the other, ROUNDS rounds (default 5) of SECS seconds (default 5), the order alternating;
# with --pid on the sidecar's turns it reads the sidecar's CPU time from /proc. Prints each
# round, the medians, the median of the per-round throughput ratios, and the sidecar's CPU
# per decision. Loopback only; stops by itself (about ROUNDS × 2 × (SECS + 1) s plus the
# build). Environment: ROUNDS, SECS, CONNECTIONS (default 4), STREAMS (default 8), POOL
# (distinct tokens, default 1: one token repeated, a cache hit in the sidecar after the first;
# more tokens than a turn sends, e.g. 100000, make every decision a signature check), FEATURES
# (cargo feature arguments).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel)
rounds=${ROUNDS:-5}
secs=${SECS:-5}
connections=${CONNECTIONS:-4}
streams=${STREAMS:-8}
pool=${POOL:-1}
read -r -a features <<<"${FEATURES:-}"

log() { echo "authz_nginx: $*" >&2; }
die() { log "$*"; exit 1; }

nginx=$(command -v nginx || true)
[[ -z $nginx && -x /usr/sbin/nginx ]] && nginx=/usr/sbin/nginx
[[ -n $nginx ]] || die "nginx is not installed (Debian's package: apt-get install nginx)"

cargo build --release --quiet --manifest-path "$repo/Cargo.toml" "${features[@]}" \
    --bin tokenmint --bin tokenmint-bench
bin=$repo/target/release

dir=$(mktemp -d "${TMPDIR:-/tmp}/tokenmint-authz-bench.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    local port=$1 what=$2
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
        sleep 0.1
    done
    die "$what never listened on $port"
}

cd "$dir"
issuer_port=$(free_port)
TOKENMINT__SERVER__LISTEN=127.0.0.1:$issuer_port TOKENMINT__SERVER__OPS_LISTEN=off \
    "$bin/tokenmint" serve --dev >serve.log 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
    "$bin/tokenmint" token issue --server "https://localhost:$issuer_port" >/dev/null 2>&1 && break
    sleep 0.2
done
"$bin/tokenmint" token issue --server "https://localhost:$issuer_port" >/dev/null ||
    die "serve --dev never served: $(tail -5 serve.log)"

authz_port=$(free_port)
ops_port=$(free_port)
"$bin/tokenmint" authz --listen "127.0.0.1:$authz_port" --ops-listen "127.0.0.1:$ops_port" \
    --grpc-listen off --issuer "https://localhost:$issuer_port" >authz.out 2>authz.log &
authz_pid=$!
pids+=("$authz_pid")
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$ops_port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$ops_port/readyz" >/dev/null || die "authz never ready: $(tail -5 authz.log)"

# One nginx: the shipped site on $1 (auth_request as shipped, or off), its upstream on $2.
start_nginx() {
    local name=$1 port=$2 upstream=$3 auth=$4
    local p=$dir/nginx-$name
    mkdir -p "$p"
    sed -e "s|listen 443 ssl;|listen 127.0.0.1:$port ssl http2;|" \
        -e "s|/etc/tokenmint/certs/|$dir/certs/|g" \
        -e "s|server 127.0.0.1:9191;|server 127.0.0.1:$authz_port;|" \
        -e "s|server 127.0.0.1:8080;|server 127.0.0.1:$upstream;|" \
        -e "s|auth_request /_tokenmint_authz;|auth_request $auth;|" \
        "$repo/deploy/nginx/tokenmint-authz.conf" >"$p/site.conf"
    cat >"$p/nginx.conf" <<EOF
master_process off;
pid $p/nginx.pid;
error_log $p/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    # nginx closes a connection after 1,000 requests by default; the load keeps its own.
    keepalive_requests 100000000;
    client_body_temp_path $p/body;
    proxy_temp_path $p/proxy;
    fastcgi_temp_path $p/fastcgi;
    uwsgi_temp_path $p/uwsgi;
    scgi_temp_path $p/scgi;
    server { listen 127.0.0.1:$upstream; location / { return 200 "ok\n"; } }
    include $p/site.conf;
}
EOF
    "$nginx" -p "$p/" -e "$p/error.log" -c "$p/nginx.conf" -g 'daemon off;' &
    pids+=($!)
    wait_port "$port" "nginx ($name)"
}

sidecar_port=$(free_port)
start_nginx sidecar "$sidecar_port" "$(free_port)" /_tokenmint_authz
alone_port=$(free_port)
start_nginx alone "$alone_port" "$(free_port)" off

# One run against nginx on $1: "throughput ok errors sidecar_cpu_us_per_request".
run() {
    local port=$1 pid_args=()
    [[ $2 == sidecar ]] && pid_args=(--pid "$authz_pid")
    "$bin/tokenmint-bench" --mode forward --server "https://localhost:$port" \
        --issuer "https://localhost:$issuer_port" --ca certs/ca.pem \
        --cert certs/demo.pem --key certs/demo.key --path /orders/42 --pool "$pool" \
        --connections "$connections" --streams "$streams" --duration "${secs}s" \
        --warmup 1s --threads 1 "${pid_args[@]}" --json |
        python3 -c '
import json, sys
r = json.load(sys.stdin)["runs"][0]
errors = sum(r["errors"].values())
if errors:
    print("errors:", r["errors"], file=sys.stderr)
cpu = r["server"]["cpu_us_per_request"] if r.get("server") else 0
print("%.0f %d %d %.1f" % (r["throughput_per_s"], r["ok"], errors, cpu))'
}

results=$dir/results
: >"$results"
for round in $(seq 1 "$rounds"); do
    if ((round % 2)); then order=(alone sidecar); else order=(sidecar alone); fi
    for which in "${order[@]}"; do
        port=$alone_port
        [[ $which == sidecar ]] && port=$sidecar_port
        line=$(run "$port" "$which") || die "round $round, $which: the bench failed"
        read -r rps ok errors cpu <<<"$line"
        [[ $errors == 0 ]] || log "round $round, $which: $errors errors"
        echo "$round $which $rps $ok $cpu" >>"$results"
        cost=""
        [[ $which == sidecar ]] && cost=" (sidecar $cpu µs CPU per decision)"
        log "round $round: $which $rps/s$cost"
    done
done

python3 - "$results" "$connections" "$streams" "$secs" "$pool" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
by = {"alone": {}, "sidecar": {}}
cpu = []
for rnd, which, rps, ok, c in rows:
    by[which][int(rnd)] = float(rps)
    if which == "sidecar":
        cpu.append(float(c))
ratios = [by["sidecar"][r] / by["alone"][r] for r in sorted(by["alone"])]
print(f"load: {sys.argv[2]} connections x {sys.argv[3]} streams, HTTP/2 over mTLS, {sys.argv[4]} s per turn, {len(ratios)} rounds, {sys.argv[5]} distinct token(s)")
print(f"nginx alone:         median {statistics.median(by['alone'].values()):.0f} requests/s")
print(f"nginx + authz:       median {statistics.median(by['sidecar'].values()):.0f} requests/s")
print(f"ratio (with/alone):  median {statistics.median(ratios):.2f}  rounds: {' '.join(f'{r:.2f}' for r in ratios)}")
print(f"sidecar CPU:         median {statistics.median(cpu):.1f} us per decision")
EOF
