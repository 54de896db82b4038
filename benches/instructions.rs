//! Instruction counts of the in-process request paths, for callgrind.
//!
//! `instructions PATH [N]` sets PATH up, then runs it N times inside `counted_loop`, the only
//! function whose instructions callgrind collects when started with
//! `--collect-atstart=no --toggle-collect='*counted_loop*'`: key generation, certificates,
//! token pools and blocklist loading are not counted. Instructions per operation are the
//! collected total divided by N. `benches/ab.sh` does this for two builds and compares them.
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=sign.out --collect-atstart=no \
//!     --toggle-collect='*counted_loop*' target/release/deps/instructions-HASH sign
//! grep '^totals:' sign.out      # instructions in N operations
//! ```
//!
//! Paths (all ES256, the default algorithm):
//! - `sign`: `CompactSigner::sign_compact` (`ActiveSigner::sign_compact` before the workspace) over one access token's claims.
//! - `verify`: `token::verify_signature` against the ring's key set, over 250 keys and tokens in turn.
//! - `issue`: `Authority::issue` for a peer certificate from a real X.509 client certificate
//!   (the IssueToken path without the network).
//! - `introspect`: `Authority::introspect` of N distinct tokens an authority has never seen,
//!   so every call verifies the signature, checks revocation and fills the cache.
//! - `introspect_cached`: `Authority::introspect` of one token, answered from the cache.
//! - `blocklist_hit`, `blocklist_miss`: `Blocklist::is_token_revoked` with 10,000 revoked ids,
//!   of every present id, or as many absent ones, in 16 blocklists in turn.
//!
//! N comes from the argument, else `INSTRUCTIONS_N`, else each path's default (`--list`
//! prints them). Without a path (as `cargo bench --bench instructions` runs it), every path
//! runs once natively and its time per operation is printed: a smoke test, not a measurement.

#![allow(clippy::expect_used, missing_docs)]

use std::{hint::black_box, process::ExitCode, time::Duration, time::Instant};

// The library's items used here, in one place.
use tokenmint_core::{
    client::Permission,
    crypto::{self, Algorithm},
    keys::KeyRing,
    revocation::{Blocklist, Caps, Change, Event},
    token,
};

#[path = "support/fixture.rs"]
mod fixture;
use fixture::*;

/// The server's allocator, so allocations count as they do in the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BLOCKLIST_ENTRIES: u64 = 10_000;
/// Blocklists, each with its own hash seed, that the blocklist paths look ids up in.
const BLOCKLISTS: usize = 16;
/// Keys, each with its own token, that `verify` cycles through.
const VERIFY_KEYS: usize = 250;
/// Untimed, uncounted runs before the counted ones: first-use costs (lazy statics, the
/// allocator's first pages, cache structures) stay out of the count.
const WARMUP: usize = 8;

/// A path: its name, its default N, and what sets it up and returns one operation.
struct PathSpec {
    name: &'static str,
    default_n: usize,
    setup: fn(usize) -> Box<dyn FnMut()>,
}

const PATHS: &[PathSpec] = &[
    PathSpec {
        name: "sign",
        default_n: 2_000,
        setup: setup_sign,
    },
    PathSpec {
        name: "verify",
        default_n: 1_000,
        setup: setup_verify,
    },
    PathSpec {
        name: "issue",
        default_n: 2_000,
        setup: setup_issue,
    },
    PathSpec {
        name: "introspect",
        default_n: 1_000,
        setup: setup_introspect,
    },
    PathSpec {
        name: "introspect_cached",
        default_n: 20_000,
        setup: setup_introspect_cached,
    },
    PathSpec {
        name: "blocklist_hit",
        default_n: 160_000,
        setup: setup_blocklist_hit,
    },
    PathSpec {
        name: "blocklist_miss",
        default_n: 160_000,
        setup: setup_blocklist_miss,
    },
];

/// Runs `op` `n` times. Callgrind collects from entry to exit of this function only
/// (`--toggle-collect='*counted_loop*'`), so it must stay a function of its own.
#[inline(never)]
fn counted_loop(n: usize, op: &mut dyn FnMut()) {
    for _ in 0..n {
        op();
    }
}

fn main() -> ExitCode {
    // cargo bench adds `--bench`; other flags are ignored likewise.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--") || a == "--list")
        .collect();
    let env_n = std::env::var("INSTRUCTIONS_N").ok();
    match args.as_slice() {
        [] => {
            for spec in PATHS {
                let n = spec.default_n.min(2_000);
                let mut op = (spec.setup)(n);
                let start = Instant::now();
                counted_loop(n, &mut op);
                let per_op = start.elapsed().as_secs_f64() * 1e9 / n as f64;
                println!("{:<18} {n:>6} ops  {per_op:>10.0} ns/op", spec.name);
            }
            ExitCode::SUCCESS
        }
        [flag] if flag == "--list" => {
            for spec in PATHS {
                println!("{} {}", spec.name, spec.default_n);
            }
            ExitCode::SUCCESS
        }
        [name] | [name, _] => {
            let Some(spec) = PATHS.iter().find(|s| s.name == name) else {
                eprintln!("unknown path {name:?}; --list names them");
                return ExitCode::from(2);
            };
            let n_text = args.get(1).or(env_n.as_ref());
            let n = match n_text.map(|t| t.parse::<usize>()) {
                None => spec.default_n,
                Some(Ok(n)) if n > 0 => n,
                Some(_) => {
                    eprintln!("N must be a positive integer");
                    return ExitCode::from(2);
                }
            };
            let mut op = (spec.setup)(n);
            counted_loop(n, &mut op);
            println!("{} {n}", spec.name);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: instructions [PATH [N]] | --list");
            ExitCode::from(2)
        }
    }
}

/// Runs the first `WARMUP` operations outside the count, then hands the operation back.
fn warmed(mut op: impl FnMut() + 'static) -> Box<dyn FnMut()> {
    for _ in 0..WARMUP {
        op();
    }
    Box::new(op)
}

fn setup_sign(_n: usize) -> Box<dyn FnMut()> {
    let payload = serde_json::to_vec(&claims()).expect("claims");
    let signer = key_ring(Algorithm::Es256).signer().clone();
    warmed(move || {
        black_box(signer.sign_compact(black_box(&payload)).expect("sign"));
    })
}

fn setup_verify(_n: usize) -> Box<dyn FnMut()> {
    crypto::install_jwt_provider();
    // Verification takes more or fewer instructions with the signature and the key: cycling
    // through many of each makes the figure the same from one process to the next.
    let tokens: Vec<(KeyRing, String)> = (0..VERIFY_KEYS)
        .map(|_| {
            let ring = key_ring(Algorithm::Es256);
            let payload = serde_json::to_vec(&claims()).expect("claims");
            let jws = ring.signer().sign_compact(&payload).expect("sign");
            (ring, jws)
        })
        .collect();
    let mut next = 0;
    warmed(move || {
        let (ring, jws) = &tokens[next % tokens.len()];
        next += 1;
        black_box(token::verify_signature(black_box(jws), ring.key_set(), ISSUER).expect("verify"));
    })
}

fn setup_issue(_n: usize) -> Box<dyn FnMut()> {
    let fixture = Fixture::new();
    let authority = fixture.authority();
    let request = Fixture::request();
    warmed(move || {
        let issued = authority
            .issue(Some(black_box(&fixture.client_peer)), black_box(&request))
            .expect("issue");
        black_box(issued);
    })
}

fn setup_introspect(n: usize) -> Box<dyn FnMut()> {
    crypto::install_jwt_provider();
    let fixture = Fixture::new();
    let pool = fixture.tokens(n + WARMUP);
    let authority = fixture.authority();
    let caller = authority
        .caller(Some(&fixture.rs_peer), Permission::Introspect)
        .expect("caller");
    let thumbprint = fixture.client_peer.thumbprint.to_b64url();
    let mut next = 0;
    // Each call takes the next token of the pool: one the cache has never seen.
    warmed(move || {
        let token = &pool[next % pool.len()];
        next += 1;
        let answer = authority
            .introspect(&caller, black_box(token), Some(&thumbprint))
            .expect("introspect");
        black_box(answer.expect("active token"));
    })
}

fn setup_introspect_cached(_n: usize) -> Box<dyn FnMut()> {
    crypto::install_jwt_provider();
    let fixture = Fixture::new();
    let token = fixture.tokens(1).remove(0);
    let authority = fixture.authority();
    let caller = authority
        .caller(Some(&fixture.rs_peer), Permission::Introspect)
        .expect("caller");
    let thumbprint = fixture.client_peer.thumbprint.to_b64url();
    warmed(move || {
        let answer = authority
            .introspect(&caller, black_box(&token), Some(&thumbprint))
            .expect("introspect");
        black_box(answer.expect("active token"));
    })
}

/// A blocklist holding `BLOCKLIST_ENTRIES` revoked 22-character token ids from 500 clients.
fn blocklist() -> Blocklist {
    let n = BLOCKLIST_ENTRIES;
    let list = Blocklist::new(
        Caps {
            max_live: n * 2,
            per_client_max_live: n,
            per_client_per_second: 1_000_000,
        },
        Duration::from_secs(30),
        Duration::from_secs(3600),
    );
    let now = now();
    for i in 0..n {
        let client = format!("client-{}", i % 500);
        list.apply(
            &Event {
                sequence: i + 1,
                committed_at: now,
                change: Change::TokenRevoked {
                    token_id: revoked_id(i),
                    expires_at: now + Duration::from_secs(3000),
                    client_id: Some(client.clone()),
                    revoked_by: client,
                },
            },
            now,
        );
    }
    list.run_pending_tasks();
    list
}

fn revoked_id(i: u64) -> String {
    format!("{i:0>22}")
}

/// Looks `ids` up in `BLOCKLISTS` blocklists in turn, each `ids` in full once per
/// `BLOCKLISTS * ids.len()` operations. How many probes a lookup takes hangs on where the
/// table's random hash seed put the entries; many tables and all ids average that out, so
/// the figure is the same from one process to the next.
fn lookups(ids: Vec<String>, expected: bool) -> Box<dyn FnMut()> {
    let lists: Vec<Blocklist> = (0..BLOCKLISTS).map(|_| blocklist()).collect();
    let mut i = 0usize;
    warmed(move || {
        let list = &lists[i % lists.len()];
        let id = &ids[(i / lists.len()) % ids.len()];
        i = i.wrapping_add(1);
        let revoked = list.is_token_revoked(black_box(id));
        assert_eq!(revoked, expected, "blocklist lookup of {id}");
    })
}

fn setup_blocklist_hit(_n: usize) -> Box<dyn FnMut()> {
    let n = BLOCKLIST_ENTRIES;
    lookups((0..n).map(|i| revoked_id((i * 7919) % n)).collect(), true)
}

fn setup_blocklist_miss(_n: usize) -> Box<dyn FnMut()> {
    let absent = (0..BLOCKLIST_ENTRIES)
        .map(|i| format!("absent{i:0>16}"))
        .collect();
    lookups(absent, false)
}
