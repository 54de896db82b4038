#!/usr/bin/env bash
# Per signing algorithm, in one sitting: IssueToken throughput and server CPU per token with the
# keys sealed in the store (the software signer) beside the keys held in a SoftHSM2 token
# (keys.custody = "pkcs11"), in turns, each against a fresh `tokenmint serve --dev` whose demo
# audience takes that algorithm. The token is a throwaway one under a temporary directory.
# Bounded in time (about 40 s per algorithm and custody); loopback only.
#
# Run it in the aws-lc build, whose software signer can also make RSA keys:
#   cargo build --release --bins --no-default-features --features aws-lc && benches/custody.sh
set -euo pipefail
cd "$(dirname "$0")/.."
release=${RELEASE_DIR:-target/release}
bench=$release/tokenmint-bench
[[ -x $bench && -x $release/tokenmint ]] || { echo "build first: cargo build --release --bins" >&2; exit 2; }
module=${PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
command -v softhsm2-util >/dev/null && [[ -e $module ]] || { echo "needs SoftHSM2 (Debian: softhsm2)" >&2; exit 2; }
secs=${SECS:-5}
repeat=${REPEAT:-3}
algorithms=${ALGORITHMS:-"ES256 EdDSA RS256 PS256"}

hsm=$(mktemp -d /tmp/tokenmint-custody-bench.XXXXXX)
trap 'rm -rf "$hsm"' EXIT
mkdir -p "$hsm/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
    "$hsm" >"$hsm/softhsm2.conf"
pin=bench-$RANDOM$RANDOM
SOFTHSM2_CONF=$hsm/softhsm2.conf softhsm2-util --init-token --free --label tokenmint-bench \
    --so-pin "so-$pin" --pin "$pin" >/dev/null

# One IssueToken row as JSON: the demo audience's tokens signed with $1, keys held by $2.
row() {
    local alg=$1 custody=$2
    local -a env=(
        TOKENMINT__KEYS__ALSO="[\"$alg\"]"
        TOKENMINT__KEYS__AUDIENCE_ALGORITHMS="{ \"https://demo.tokenmint.dev\" = \"$alg\" }"
    )
    if [[ $custody == pkcs11 ]]; then
        env+=(
            SOFTHSM2_CONF="$hsm/softhsm2.conf"
            TOKENMINT__KEYS__CUSTODY=pkcs11
            TOKENMINT__PKCS11__MODULE="$module"
            TOKENMINT__PKCS11__TOKEN_LABEL=tokenmint-bench
            TOKENMINT_PKCS11_PIN="$pin"
        )
    fi
    env "${env[@]}" "$bench" --spawn --repeat "$repeat" --json --mode issue --connections 2 \
        --streams 32 --duration "${secs}s"
}

rate() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['median']['throughput_per_s']))"; }
cpu() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['median']['server']['cpu_us_per_request'], 1))"; }

echo "| algorithm | sealed: IssueToken /s | sealed: server CPU µs/token | SoftHSM2: IssueToken /s | SoftHSM2: server CPU µs/token | SoftHSM2 ÷ sealed throughput |"
echo "|---|---|---|---|---|---|"
for alg in $algorithms; do
    if ! sealed=$(row "$alg" sealed 2>/dev/null); then
        echo "| $alg | not in this build | | | | |"
        continue
    fi
    held=$(row "$alg" pkcs11)
    s_rate=$(echo "$sealed" | rate)
    h_rate=$(echo "$held" | rate)
    ratio=$(python3 -c "print(f'{$h_rate / $s_rate:.2f}')")
    echo "| $alg | $s_rate | $(echo "$sealed" | cpu) | $h_rate | $(echo "$held" | cpu) | $ratio |"
done
