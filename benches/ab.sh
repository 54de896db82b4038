#!/usr/bin/env bash
# A/B comparison of two builds: did a change make any path slower?
#
#   benches/ab.sh A [B]
#
# A and B are git revisions (A is required, e.g. HEAD~1 or main). Without B, B is this
# checkout as it stands, uncommitted and untracked files included. FEATURES_A and FEATURES_B
# are cargo feature arguments for each build, so one revision can be compared in its two
# crypto stacks:
#
#   FEATURES_B="--no-default-features --features aws-lc" CLIENT=b benches/ab.sh HEAD HEAD
# Each revision is checked
# out in a git worktree under $AB_DIR (default ${TMPDIR:-/tmp}/tokenmint-ab) and built there
# with a target directory of its own (this checkout too); both stay between runs, so a
# rebuild is incremental. Two revisions naming the same commit share one build.
#
# 1. Instructions per operation of each in-process path (benches/instructions.rs) under
#    callgrind: repeatable to well under 1% whatever else the machine is doing.
# 2. Server rows (those of benches/table.sh): each row against a fresh `tokenmint serve --dev`
#    from A's and from B's build, ROUNDS rounds (default 5) of SECS seconds (default 3),
#    alternating A,B then B,A, all driven by one tokenmint-bench (A's, or B's with CLIENT=b)
#    so only the server differs. The client's TLS stack picks the key exchange: an aws-lc
#    client agrees the hybrid X25519MLKEM768 with an aws-lc server; the row "…, X25519 only"
#    offers the classical group alone.
#    Medians of throughput and of server CPU per request, and each round's ratio of server
#    CPU (B/A). Loopback only; about 4 minutes.
#
# Environment: ROUNDS, SECS, SKIP=instructions|server, AB_DIR, INSTRUCTIONS_N (one N for every
# path instead of each path's default), FEATURES_A, FEATURES_B, CLIENT=a|b. Needs valgrind for part 1. To free the space:
# rm -rf "$AB_DIR" && git worktree prune.
set -euo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 && $1 != -* ]] || usage

here=$(cd "$(dirname "$0")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel)
work=${AB_DIR:-${TMPDIR:-/tmp}/tokenmint-ab}
rounds=${ROUNDS:-5}
read -r -a features_a <<<"${FEATURES_A:-}"
read -r -a features_b <<<"${FEATURES_B:-}"
client_slot=${CLIENT:-a}
[[ $client_slot == a || $client_slot == b ]] || { echo "CLIENT is a or b" >&2; exit 2; }
secs=${SECS:-3}
instructions=yes server=yes
case ${SKIP:-} in
  instructions) instructions=no ;;
  server) server=no ;;
  "") ;;
  *) echo "SKIP is instructions or server" >&2; exit 2 ;;
esac
mkdir -p "$work"
started=$SECONDS

log() { echo "ab: $*" >&2; }
die() { log "$*"; exit 1; }

resolve() { git -C "$repo" rev-parse --verify --quiet "$1^{commit}" || die "not a revision: $1"; }
describe() { git -C "$repo" log -1 --format='%h %s' "$1" | cut -c1-72; }

sha_a=$(resolve "$1")
if [[ $# -eq 2 ]]; then
  sha_b=$(resolve "$2")
  label_b="$(describe "$sha_b")"
else
  sha_b=worktree
  state="with changes"
  if git -C "$repo" diff --quiet HEAD -- &&
    [[ -z $(git -C "$repo" ls-files --others --exclude-standard) ]]; then
    state="no changes"
  fi
  label_b="this checkout as it stands ($(git -C "$repo" rev-parse --short HEAD), $state)"
fi
echo "A: $(describe "$sha_a")${FEATURES_A:+ [$FEATURES_A]}"
echo "B: $label_b${FEATURES_B:+ [$FEATURES_B]}"

# Checks `sha` out in the worktree of `slot` (a or b), made once and reused. Files that did
# not change keep their times, so cargo rebuilds only what changed.
checkout() {
  local slot=$1 sha=$2 dir=$work/src-$1
  if ! git -C "$dir" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$repo" worktree prune
    rm -rf "$dir"
    git -C "$repo" worktree add --quiet --detach "$dir" "$sha" >&2
  fi
  if [[ $(git -C "$dir" rev-parse HEAD) != "$sha" ]]; then
    git -C "$dir" checkout --quiet --force --detach "$sha"
    git -C "$dir" clean --quiet -fd
  fi
  echo "$dir"
}

# `cargo` in `dir` with the target directory `target`, at low priority.
cargo_in() {
  local dir=$1 target=$2
  shift 2
  (cd "$dir" && CARGO_TARGET_DIR=$target nice -n 19 cargo "$@")
}

# Builds the source in `dir` into `target` for `slot` with the cargo feature arguments after
# the third: the instructions bench first, then the release binaries, copied to
# $work/bin-<slot> (building the bench links the binaries again
# with the dev-dependencies' features, so they are taken from the plain release build).
# Prints the bench's executable, or nothing if the revision has none.
build() {
  local slot=$1 dir=$2 target=$3 ws=() exe=""
  shift 3
  local features=("$@")
  grep -q '^\[workspace\]' "$dir/Cargo.toml" && ws=(--workspace)
  log "building $dir (target $target)"
  if [[ $dir == "$work"/* ]] && ! git -C "$dir" grep -q '^name = "instructions"' HEAD -- '*Cargo.toml'; then
    # A revision from before benches/instructions.rs: measure it with this checkout's copy,
    # if that builds there (in the temporary worktree only).
    if [[ -f $here/instructions.rs ]]; then
      log "$dir has no instructions bench: adding this checkout's"
      cmp -s "$here/instructions.rs" "$dir/benches/instructions.rs" ||
        cp "$here/instructions.rs" "$dir/benches/instructions.rs"
      grep -q '^name = "instructions"' "$dir/Cargo.toml" ||
        printf '\n[[bench]]\nname = "instructions"\nharness = false\n' >>"$dir/Cargo.toml"
    fi
  fi
  exe=$(cargo_in "$dir" "$target" bench "${ws[@]}" "${features[@]}" --no-run --bench instructions \
    --message-format=json 2>"$target.bench.log" |
    grep '"reason":"compiler-artifact"' | grep '"name":"instructions"' |
    grep '"kind":\["bench"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1) ||
    log "no instructions bench built in $dir: see $target.bench.log"
  cargo_in "$dir" "$target" build --release --bins "${ws[@]}" "${features[@]}" >&2 ||
    die "cargo build failed in $dir"
  mkdir -p "$work/bin-$slot"
  for bin in tokenmint tokenmint-bench; do
    [[ -x $target/release/$bin ]] || die "no $target/release/$bin after the build"
    cp "$target/release/$bin" "$work/bin-$slot/$bin"
  done
  echo "$exe"
}

# Source and target directory of each build. Each source tree has a target directory of its
# own (this checkout one named after its path): cargo decides what to rebuild by file times,
# which mean nothing from one source tree to another.
# A build with other features gets a target directory of its own, so neither undoes the other.
suffix() { [[ -z $1 ]] || printf -- '-%s' "$(printf '%s' "$1" | cksum | cut -d' ' -f1)"; }
if [[ $sha_b == worktree ]]; then
  src_b=$repo
  target_b=$work/target-checkout-$(printf '%s' "$repo" | cksum | cut -d' ' -f1)$(suffix "${FEATURES_B:-}")
else
  src_b=$(checkout b "$sha_b")
  target_b=$work/target-b$(suffix "${FEATURES_B:-}")
fi
exe_b=$(build b "$src_b" "$target_b" "${features_b[@]}")
if [[ $sha_a == "$sha_b" && ${FEATURES_A:-} == "${FEATURES_B:-}" ]]; then
  slot_a=b
  exe_a=$exe_b
elif [[ $sha_a == "$sha_b" ]]; then
  # The same source in another build: B's source tree, A's target directory.
  slot_a=a
  exe_a=$(build a "$src_b" "$target_b-a$(suffix "${FEATURES_A:-}")" "${features_a[@]}")
else
  slot_a=a
  exe_a=$(build a "$(checkout a "$sha_a")" "$work/target-a$(suffix "${FEATURES_A:-}")" "${features_a[@]}")
fi
bin_a=$work/bin-$slot_a/tokenmint
bin_b=$work/bin-b/tokenmint
client=$work/bin-$slot_a/tokenmint-bench
if [[ $client_slot == b ]]; then client=$work/bin-b/tokenmint-bench; fi
log "built in $((SECONDS - started)) s"

# Median of the numbers on standard input.
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# Change from $1 to $2 in percent.
change() { awk -v a="$1" -v b="$2" 'BEGIN {if (a > 0) printf "%+.2f%%", (b / a - 1) * 100; else print "?"}'; }

# 1. Instructions per operation.
if [[ $instructions == yes && ( -z $exe_a || -z $exe_b ) ]]; then
  log "no instructions bench in A's or B's build: instruction counts left out"
  instructions=no
fi
if [[ $instructions == yes ]]; then
  command -v valgrind >/dev/null || die "valgrind is needed (or SKIP=instructions)"
  out=$work/callgrind
  rm -rf "$out" && mkdir -p "$out"
  # Paths both builds know, in A's order, with A's default N.
  names_b=" $("$exe_b" --list | cut -d' ' -f1 | tr '\n' ' ')"
  paths=$("$exe_a" --list | while read -r path n; do
    if [[ $names_b == *" $path "* ]]; then echo "$path $n"; fi
  done)
  count() {
    local exe=$1 path=$2 n=$3 file=$4
    nice -n 19 valgrind --tool=callgrind --callgrind-out-file="$file" --collect-atstart=no \
      --toggle-collect='*counted_loop*' "$exe" "$path" "$n" >"$file.log" 2>&1 ||
      die "callgrind failed: see $file.log"
    awk '/^totals:/ {print $2; exit}' "$file"
  }
  echo
  printf '%-20s %7s %16s %16s %9s\n' path N "A instr/op" "B instr/op" change
  while read -r path n; do
    n=${INSTRUCTIONS_N:-$n}
    # A and B side by side: counts do not depend on load.
    count "$exe_a" "$path" "$n" "$out/$path.a" >"$out/$path.a.total" &
    count "$exe_b" "$path" "$n" "$out/$path.b" >"$out/$path.b.total" &
    wait
    total_a=$(<"$out/$path.a.total")
    total_b=$(<"$out/$path.b.total")
    [[ ${total_a:-0} -gt 0 && ${total_b:-0} -gt 0 ]] ||
      die "no instructions collected for $path (see $out/$path.*.log)"
    per_a=$(awk -v t="$total_a" -v n="$n" 'BEGIN {printf "%.1f", t / n}')
    per_b=$(awk -v t="$total_b" -v n="$n" 'BEGIN {printf "%.1f", t / n}')
    printf '%-20s %7s %16s %16s %9s\n' "$path" "$n" "$per_a" "$per_b" "$(change "$per_a" "$per_b")"
  done <<<"$paths"
  log "instructions done at $((SECONDS - started)) s"
fi

# 2. Server rows.
if [[ $server == yes ]]; then
  load=(--connections 2 --streams 32)
  rows=(
    "IssueToken, persistent connections|--mode issue ${load[*]} --duration ${secs}s"
    "IssueToken, new mTLS connection per request|--mode connect --connections 16 --streams 1 --duration ${secs}s"
    "IssueToken, new mTLS connection per request, X25519 only|--mode connect --connections 16 --streams 1 --duration ${secs}s --kx-group X25519"
    "IntrospectToken, one token repeated|--mode introspect ${load[*]} --duration ${secs}s"
    # Every request a token never introspected: the pool outlasts the warm-up and the run.
    "IntrospectToken, distinct tokens|--mode introspect ${load[*]} --requests $((secs * 5000)) --pool $((secs * 5000 + 20000))"
    "GetJwks|--mode jwks ${load[*]} --duration ${secs}s"
  )
  res=$work/server
  # Each build's server runs in a directory of its own, set up afresh on its first start.
  rm -rf "$res" "$work/dir-a" "$work/dir-b" && mkdir -p "$res"
  # One run of row `i` against build `slot` in round `r`.
  one() {
    local i=$1 slot=$2 r=$3 bin=$bin_a args file
    if [[ $slot == b ]]; then bin=$bin_b; fi
    args=${rows[$i]#*|}
    file=$res/$i.$slot.$r.json
    # shellcheck disable=SC2086 # the row's arguments are words
    "$client" --spawn --server-bin "$bin" --dir "$work/dir-$slot" --json --warmup 1s \
      $args >"$file" 2>"$file.err" || die "tokenmint-bench failed: see $file.err"
    grep -q '"errors": {}' "$file" || log "row $i ($slot, round $r) had errors: see $file"
  }
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  if awk -v l="${load_before%% *}" -v c="$(nproc)" 'BEGIN {exit !(l > c / 2)}'; then
    log "load average $load_before on $(nproc) cores: the server rows will be noisy"
  fi
  for ((r = 1; r <= rounds; r++)); do
    log "server rows: round $r of $rounds"
    for i in "${!rows[@]}"; do
      if ((r % 2)); then one "$i" a "$r"; one "$i" b "$r"; else one "$i" b "$r"; one "$i" a "$r"; fi
    done
  done
  # The median's figures come first in each file.
  figure() { grep -m1 "\"$1\"" "$2" | tr -dc '0-9.\n'; }
  # The median over the rounds of `figure` in row `i` for build `slot`.
  medians() { for f in "$res/$1.$2".*.json; do figure "$3" "$f"; done | median; }
  echo
  echo "server rows: medians of $rounds runs of ${secs} s each, server CPU µs per request"
  echo "(load average before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg))"
  printf '%-45s %9s %9s %8s %8s %8s %8s  %s\n' row "A /s" "B /s" change "A µs" "B µs" change "CPU B/A by round"
  for i in "${!rows[@]}"; do
    label=${rows[$i]%%|*}
    thr_a=$(medians "$i" a throughput_per_s)
    thr_b=$(medians "$i" b throughput_per_s)
    cpu_a=$(medians "$i" a cpu_us_per_request)
    cpu_b=$(medians "$i" b cpu_us_per_request)
    ratios=$(for ((r = 1; r <= rounds; r++)); do
      awk -v a="$(figure cpu_us_per_request "$res/$i.a.$r.json")" \
        -v b="$(figure cpu_us_per_request "$res/$i.b.$r.json")" 'BEGIN {printf "%.3f\n", b / a}'
    done)
    ratios="$(echo "$ratios" | tr '\n' ' ')(median $(echo "$ratios" | median | xargs printf '%.3f'))"
    printf '%-45s %9.0f %9.0f %8s %8.1f %8.1f %8s  %s\n' "$label" "$thr_a" "$thr_b" \
      "$(change "$thr_a" "$thr_b")" "$cpu_a" "$cpu_b" "$(change "$cpu_a" "$cpu_b")" "$ratios"
  done
fi
log "done in $((SECONDS - started)) s; raw results in $work"
