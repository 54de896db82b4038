//! Memory of a `tokenmint-verify` verifier holding N revoked tokens (default 1,000,000;
//! `VERIFY_MEMORY_REVOCATIONS`), received from a real issuer through its revocation watch.
//! `cargo bench --bench verify_memory`. Linux only (reads /proc/self/status).
//!
//! The issuer runs in a child process (this binary again, `VERIFY_MEMORY_ROLE=issuer`), so the
//! measured process holds the verifier and nothing of the issuer's, not even memory the
//! issuer freed after loading the N (which the allocator keeps, and could hand the verifier).
//!
//! 1. The child starts a tokenmint in process over real mTLS (the integration tests' `support`
//!    module) to create its database and keys, and stops it.
//! 2. It writes N token revocations straight into that SQLite database in one transaction,
//!    rows as `commit_change` writes them (a `token_revoked` change and its `revoked_tokens`
//!    row): self-revocations of 500 clients, 22-character token ids, an hour to expiry, as
//!    `benches/blocklist_memory.rs` makes them. One `RevokeToken` call per token would take
//!    hours here.
//! 3. It starts the tokenmint again on that database, which loads the N into its blocklist,
//!    reports its own RSS, and serves until its stdin closes.
//! 4. This process reads its RSS (the baseline), builds a verifier against the child as a
//!    resource server, and waits until the verifier has taken the whole snapshot over
//!    `WatchRevocations` and is ready with `Health::revoked_tokens` at N. RSS is read then
//!    and again 2 s later: the growth is the verifier holding the N, with its connection.
//!
//! The allocator is the server's (mimalloc), as in `blocklist_memory.rs`, in both processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use tokenmint_core::clock::{Clock as _, SystemClock};
use tokenmint_verify::Verifier;

#[allow(dead_code)] // the bench uses a small part of it
#[path = "../tests/integration/support.rs"]
mod support;
use support::{DEMO_AUDIENCE, ISSUER, RS_URI, Setup, standard_clients};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A field of /proc/self/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Writes `n` token revocations into the stopped issuer's database, in one transaction.
async fn revoke_in_bulk(setup: &Setup, n: u64) {
    let db = setup.path().join("tokenmint.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let now = SystemClock.unix_now().as_secs();
    let expires_at = now + 3600;
    // Kept as `Retention` would keep them: the state until expiry plus leeway, the log a
    // longest lifetime beyond.
    let state_until = expires_at + 30;
    let log_until = state_until + 24 * 3600;
    let n = i64::try_from(n).unwrap();
    let mut tx = pool.begin().await.unwrap();
    let base: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM changes")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO changes (sequence, kind, token_id, client_id, revoked_by, expires_at, \
         committed_at, keep_until) \
         SELECT $2 + i, 'token_revoked', printf('%022d', i), 'client-' || (i % 500), \
         'client-' || (i % 500), $3, $4, $5 FROM n",
    )
    .bind(n)
    .bind(base)
    .bind(expires_at)
    .bind(now)
    .bind(log_until)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO revoked_tokens (token_id, expires_at, client_id, revoked_by, sequence, \
         revoked_at, keep_until) \
         SELECT token_id, expires_at, client_id, revoked_by, sequence, committed_at, $1 \
         FROM changes WHERE sequence > $2",
    )
    .bind(state_until)
    .bind(base)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    pool.close().await;
}

const ROLE: &str = "VERIFY_MEMORY_ROLE";

fn main() {
    let n: u64 = std::env::var("VERIFY_MEMORY_REVOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var(ROLE).as_deref() == Ok("issuer") {
        rt.block_on(issuer(n));
    } else {
        rt.block_on(verifier(n));
    }
}

/// The child: an issuer holding `n` revocations, serving until stdin closes. Its first line
/// on stdout is `ready <port> <directory>`.
async fn issuer(n: u64) {
    let setup = Setup::new(&standard_clients());
    setup.start().await.stop().await;
    let start = Instant::now();
    revoke_in_bulk(&setup, n).await;
    eprintln!(
        "issuer: {n} revocations written to the store in {:?}",
        start.elapsed()
    );

    let start = Instant::now();
    let server = setup.start().await;
    let loaded_in = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!(
        "issuer: started with them loaded in {loaded_in:?}; RSS {:.1} MiB, peak {:.1} MiB",
        mib(status_kib("VmRSS:")),
        mib(status_kib("VmHWM:"))
    );
    let rs = setup.pki.client_uri(RS_URI);
    std::fs::write(setup.path().join("rs.pem"), &rs.cert_pem).unwrap();
    std::fs::write(setup.path().join("rs.key"), rs.key_pem.as_bytes()).unwrap();
    println!("ready {} {}", server.addr.port(), setup.path().display());
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await
        .unwrap()
        .unwrap();
    server.stop().await;
}

/// This process: a verifier of the child's tokens, its RSS before and after it holds `n`.
async fn verifier(n: u64) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "issuer")
        .env("VERIFY_MEMORY_REVOCATIONS", n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("ready"), "the issuer failed: {line:?}");
    let port: u16 = words.next().unwrap().parse().unwrap();
    let dir = PathBuf::from(words.next().unwrap());
    let tls = tokenmint_verify::tls::client_config_from_files(
        tokenmint::tls::provider(),
        &dir.join("ca.pem"),
        &dir.join("rs.pem"),
        &dir.join("rs.key"),
    )
    .unwrap();

    let before = status_kib("VmRSS:");
    let start = Instant::now();
    let verifier = Verifier::builder(ISSUER)
        .audience(DEMO_AUDIENCE)
        .grpc_endpoint(format!("https://localhost:{port}"), Arc::new(tls))
        .build()
        .unwrap();
    loop {
        let health = verifier.health();
        if health.is_ready() && health.revoked_tokens >= n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "the verifier never took the snapshot: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_in = start.elapsed();
    let ready = status_kib("VmRSS:");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = status_kib("VmRSS:");
    let health = verifier.health();
    assert!(health.is_ready(), "{health:?}");
    println!(
        "verifier: ready with {} revoked tokens in {ready_in:?} ({} snapshot)",
        health.revoked_tokens, health.snapshots
    );
    for (label, after) in [("at ready", ready), ("2 s later", settled)] {
        let grown = after.saturating_sub(before);
        println!(
            "verifier: RSS {:.1} MiB → {:.1} MiB {label}: {:.1} MiB, {:.0} bytes per revocation",
            mib(before),
            mib(after),
            mib(grown),
            (grown * 1024) as f64 / n as f64
        );
    }
    println!("verifier: peak RSS {:.1} MiB", mib(status_kib("VmHWM:")));
    drop(verifier);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}
