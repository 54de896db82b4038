//! Memory and lookup cost of the blocklist: RSS before and after inserting N revoked token
//! ids (default 1,000,000; `BLOCKLIST_ENTRIES`), and the median time of a lookup that hits.
//! `cargo bench --bench blocklist_memory`. Linux only (reads /proc/self/status).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use tokenmint_core::revocation::{Blocklist, Caps, Change, Event};

/// The server's allocator, so the figure is the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn main() {
    let n: u64 = std::env::var("BLOCKLIST_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let list = Blocklist::new(
        Caps {
            max_live: n * 2,
            per_client_max_live: n,
            per_client_per_second: 1_000_000,
        },
        Duration::from_secs(30),
        Duration::from_secs(3600),
    );
    let now = tokenmint_core::clock::UnixTime::from_secs(1_800_000_000);
    let before = rss_kib();
    let start = Instant::now();
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
                    expires_at: now + std::time::Duration::from_secs(3000),
                    client_id: Some(client.clone()),
                    revoked_by: client,
                },
            },
            now,
        );
    }
    list.run_pending_tasks();
    let inserted = start.elapsed();
    let after = rss_kib();
    let mut samples = Vec::with_capacity(10_000);
    for i in 0..10_000u64 {
        let id = format!("{:0>22}", (i * 7919) % n);
        let t = Instant::now();
        assert!(list.is_token_revoked(&id));
        samples.push(t.elapsed());
    }
    samples.sort();
    let per_million = (after.saturating_sub(before)) as f64 / 1024.0 * (1_000_000.0 / n as f64);
    println!(
        "blocklist: {n} entries inserted in {inserted:?} ({:.0} ns each)",
        inserted.as_nanos() as f64 / n as f64
    );
    println!(
        "RSS {:.1} MiB → {:.1} MiB: {per_million:.0} MiB per million entries",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    println!(
        "lookup (hit): median {:?}, p99 {:?}",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100]
    );
}
