//! Micro-benchmarks of the request paths, in process and without network or store.
//! `cargo bench --bench paths` (a filter narrows it: `cargo bench --bench paths -- introspect`).
//!
//! - `sign/<alg>` (every `crypto::Algorithm` this build signs with: ES256 and EdDSA, and in the
//!   aws-lc build RS256, PS256, ML-DSA-44 and ML-DSA-65): `CompactSigner::sign_compact`, the
//!   pre-parsed signer the issuer uses, over one access token's claims already serialised
//!   (pre-encoded header + base64url payload + signature + assembly).
//! - `verify/<alg>`: `token::verify_signature` against a `KeyRing` (header, `kid` lookup,
//!   algorithm check, signature, claims decode, issuer): what introspection runs on a
//!   verified-token cache miss. Times are not checked here.
//! - `issue/whole_path`: `Authority::issue` for a peer certificate parsed from a real X.509
//!   client certificate: client authentication by SAN URI, disabled/staleness/cut-off checks,
//!   the grant (scopes, audiences, lifetime), a random `jti`, claims serialisation and ES256
//!   signing. The `Authority` is built from its `Parts` as `server::prepare_with_store` builds
//!   it, minus the store: the key ring, clients and an empty loaded blocklist are made in
//!   memory, so no SQLite I/O is timed (none happens on the issue path either).
//! - `introspect/cache_hit`: `Authority::introspect` of one valid ES256 token, repeated, so
//!   the verified-token cache always answers (hash, cache get, times, key/revocation/client
//!   checks, audience visibility, the `cnf` thumbprint comparison). The caller is resolved
//!   once outside the loop (`Authority::caller`, as the gRPC handler does per request).
//! - `introspect/cache_miss`: the same call over a pool of 10,000 distinct pre-issued
//!   tokens. Each run of the pool goes to a freshly built `Authority` (built outside the
//!   timed region) whose cache has never seen any of them, so every timed call is a real miss
//!   and runs signature verification plus the cache insert.
//! - `blocklist/lookup_1m/{hit,miss}`: `Blocklist::is_token_revoked` with 1,000,000 revoked
//!   token ids loaded (built once, untimed, as `benches/blocklist_memory.rs` does), cycling
//!   through 4,096 present ids (hit) or 4,096 random 22-character ids (miss).
//!
//! Each benchmark warms up for 1 s and measures for 3 s over 20 samples.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tokenmint_core::{
    client::Permission,
    crypto,
    revocation::{Blocklist, Caps, Change, Event},
    token,
};

#[allow(dead_code)] // each bench uses part of it
#[path = "support/fixture.rs"]
mod fixture;
use fixture::*;

const POOL: usize = 10_000;
const BLOCKLIST_ENTRIES: u64 = 1_000_000;
const LOOKUP_IDS: usize = 4_096;

fn bench_sign(c: &mut Criterion) {
    let payload = serde_json::to_vec(&claims()).unwrap();
    let mut group = c.benchmark_group("sign");
    for algorithm in crypto::stack().signing_algorithms() {
        let ring = key_ring(algorithm);
        let signer = ring.signer().clone();
        assert_eq!(signer.algorithm(), algorithm);
        group.bench_function(algorithm.as_str(), |b| {
            b.iter(|| signer.sign_compact(black_box(&payload)).unwrap());
        });
    }
    group.finish();
}

fn bench_verify(c: &mut Criterion) {
    crypto::install_jwt_provider();
    let payload = serde_json::to_vec(&claims()).unwrap();
    let mut group = c.benchmark_group("verify");
    for algorithm in crypto::stack().signing_algorithms() {
        let ring = key_ring(algorithm);
        let jws = ring.signer().sign_compact(&payload).unwrap();
        let verified = token::verify_signature(&jws, ring.key_set(), ISSUER).unwrap();
        assert_eq!(verified.kid, ring.signer().kid().as_str());
        group.bench_function(algorithm.as_str(), |b| {
            b.iter(|| token::verify_signature(black_box(&jws), ring.key_set(), ISSUER).unwrap());
        });
    }
    group.finish();
}

fn bench_issue(c: &mut Criterion) {
    let fixture = Fixture::new();
    let authority = fixture.authority();
    let request = Fixture::request();
    let issued = authority
        .issue(Some(&fixture.client_peer), &request)
        .unwrap();
    assert_eq!(issued.client_id, "billing");
    let mut group = c.benchmark_group("issue");
    group.bench_function("whole_path", |b| {
        b.iter(|| {
            authority
                .issue(Some(black_box(&fixture.client_peer)), black_box(&request))
                .unwrap()
        });
    });
    group.finish();
}

fn bench_introspect(c: &mut Criterion) {
    crypto::install_jwt_provider();
    let fixture = Fixture::new();
    let issuing = fixture.authority();
    let request = Fixture::request();
    let pool: Vec<String> = (0..POOL)
        .map(|_| {
            issuing
                .issue(Some(&fixture.client_peer), &request)
                .unwrap()
                .access_token
        })
        .collect();
    let thumbprint = fixture.client_peer.thumbprint.to_b64url();
    let caller = issuing
        .caller(Some(&fixture.rs_peer), Permission::Introspect)
        .unwrap();

    let mut group = c.benchmark_group("introspect");

    let authority = fixture.authority();
    let token = &pool[0];
    // The first call verifies and fills the cache; every timed call hits it.
    assert!(
        authority
            .introspect(&caller, token, Some(&thumbprint))
            .unwrap()
            .is_ok()
    );
    group.bench_function("cache_hit", |b| {
        b.iter(|| {
            let answer = authority
                .introspect(&caller, black_box(token), Some(&thumbprint))
                .unwrap();
            assert!(answer.is_ok());
            answer
        });
    });

    group.bench_function("cache_miss", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut remaining = usize::try_from(iters).unwrap();
            while remaining > 0 {
                let n = remaining.min(POOL);
                remaining -= n;
                // A cache that has seen none of the pool: each of the n calls misses.
                let authority = fixture.authority();
                let start = Instant::now();
                for token in &pool[..n] {
                    let answer = authority
                        .introspect(&caller, black_box(token), Some(&thumbprint))
                        .unwrap();
                    assert!(answer.is_ok());
                    let _ = black_box(answer);
                }
                elapsed += start.elapsed();
            }
            elapsed
        });
    });
    group.finish();
}

fn bench_blocklist(c: &mut Criterion) {
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
        // 22 characters, like a real jti (128 bits, base64url).
        let token_id = format!("{i:0>22}");
        let client = format!("client-{}", i % 500);
        list.apply(
            &Event {
                sequence: i + 1,
                committed_at: now,
                change: Change::TokenRevoked {
                    token_id,
                    expires_at: now + Duration::from_secs(3000),
                    client_id: Some(client.clone()),
                    revoked_by: client,
                },
            },
            now,
        );
    }
    list.run_pending_tasks();
    assert_eq!(list.live(), n);

    let hits: Vec<String> = (0..LOOKUP_IDS as u64)
        .map(|i| format!("{:0>22}", (i * 7919) % n))
        .collect();
    let misses: Vec<String> = (0..LOOKUP_IDS)
        .map(|_| crypto::random_id().unwrap())
        .collect();
    assert!(hits.iter().all(|id| list.is_token_revoked(id)));
    assert!(misses.iter().all(|id| !list.is_token_revoked(id)));

    let mut group = c.benchmark_group("blocklist");
    for (name, ids, expected) in [("hit", &hits, true), ("miss", &misses, false)] {
        group.bench_function(BenchmarkId::new("lookup_1m", name), |b| {
            let mut i = 0usize;
            b.iter(|| {
                let id = &ids[i % LOOKUP_IDS];
                i = i.wrapping_add(1);
                let revoked = list.is_token_revoked(black_box(id));
                debug_assert_eq!(revoked, expected);
                revoked
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = paths;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_sign, bench_verify, bench_issue, bench_introspect, bench_blocklist
}
criterion_main!(paths);
