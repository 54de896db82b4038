#!/usr/bin/env bash
# Per signing algorithm, in one sitting: IssueToken throughput and server CPU per token
# (persistent connections), distinct-token introspection (every token verified), and the raw
# signing cost of the same build (criterion `sign/<alg>`), each against a fresh
# `tokenmint serve --dev` whose demo audience takes that algorithm. Every
# algorithm the build signs with: ES256 and EdDSA in the ring build, all six in the aws-lc one.
# Bounded in time (about 2 minutes per algorithm); loopback only.
#
#   cargo build --release --bins --no-default-features --features aws-lc && \
#     FEATURES="--no-default-features --features aws-lc" benches/algorithms.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bench=target/release/tokenmint-bench
[[ -x $bench && -x target/release/tokenmint ]] || { echo "build first: cargo build --release --bins" >&2; exit 2; }
secs=${SECS:-5}
repeat=${REPEAT:-3}
read -r -a features <<<"${FEATURES:-}"
algorithms=${ALGORITHMS:-"ES256 EdDSA RS256 PS256 ML-DSA-44 ML-DSA-65"}

# The raw signing cost per algorithm, in this sitting (criterion medians, µs).
sign_us() {
    cargo bench --quiet "${features[@]}" --bench paths -- --warm-up-time 1 --measurement-time 3 \
        "^sign/$1\$" 2>/dev/null |
        awk '/time:/ { gsub(/\[|\]/, ""); for (i = 1; i <= NF; i++) if ($i == "time:") { v = $(i + 3); u = $(i + 4) } }
             END { if (u == "ns") v /= 1000; if (u == "ms") v *= 1000; printf "%.1f", v }'
}

# One bench row as JSON, the demo audience's tokens signed with $1 (keys.also and
# keys.audience_algorithms: a post-quantum algorithm cannot be the default).
row() {
    local alg=$1
    shift
    TOKENMINT__KEYS__ALSO="[\"$alg\"]" \
        TOKENMINT__KEYS__AUDIENCE_ALGORITHMS="{ \"https://demo.tokenmint.dev\" = \"$alg\" }" \
        "$bench" --spawn --repeat "$repeat" --json "$@"
}

# A figure of a --json report: throughput, or the server's CPU µs per request.
rate() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['median']['throughput_per_s']))"; }
cpu() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['median']['server']['cpu_us_per_request'], 1))"; }

echo "| algorithm | IssueToken /s | server CPU µs/token | raw sign µs | CPU − sign µs | distinct IntrospectToken /s | server CPU µs/introspection |"
echo "|---|---|---|---|---|---|---|"
for alg in $algorithms; do
    if ! issue=$(row "$alg" --mode issue --connections 2 --streams 32 --duration "${secs}s" 2>/dev/null); then
        echo "| $alg | not in this build | | | | | |"
        continue
    fi
    introspect=$(row "$alg" --mode introspect --connections 2 --streams 32 --requests 30000 --pool 100000)
    sign=$(sign_us "$alg")
    issue_rate=$(echo "$issue" | rate)
    issue_cpu=$(echo "$issue" | cpu)
    in_rate=$(echo "$introspect" | rate)
    in_cpu=$(echo "$introspect" | cpu)
    rest=$(python3 -c "print(round($issue_cpu - $sign, 1))")
    echo "| $alg | $issue_rate | $issue_cpu | $sign | $rest | $in_rate | $in_cpu |"
done
