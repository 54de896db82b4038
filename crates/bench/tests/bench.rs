//! The load generator against a server it starts itself: the figures it reports are the ones
//! it counted, and a refused call is counted as an error by status, not as a success.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{path::PathBuf, process::Command};

const BENCH: &str = env!("CARGO_BIN_EXE_tokenmint-bench");

/// The server binary, built beside this one by the workspace's `cargo test`.
fn server_bin() -> PathBuf {
    let bin =
        PathBuf::from(BENCH).with_file_name(format!("tokenmint{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run the workspace's tests (`cargo test` from the root) or `cargo build -p tokenmint` first",
        bin.display()
    );
    bin
}

fn run(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BENCH)
        .args(["--spawn", "--json", "--warmup", "0s", "--server-bin"])
        .arg(server_bin())
        .arg("--dir")
        .arg(dir.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tokenmint-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn counts_every_request_and_reads_the_servers_cost() {
    let report = run(&[
        "--mode",
        "issue",
        "--requests",
        "200",
        "--connections",
        "2",
        "--streams",
        "4",
    ]);
    let median = &report["median"];
    assert_eq!(median["requests"], 200);
    assert_eq!(median["ok"], 200);
    assert_eq!(median["errors"], serde_json::json!({}));
    assert!(median["throughput_per_s"].as_f64().unwrap() > 0.0);
    let latency = &median["latency_us"];
    assert!(latency["p50"].as_u64().unwrap() <= latency["p99"].as_u64().unwrap());
    assert!(latency["p99"].as_u64().unwrap() <= latency["max"].as_u64().unwrap());
    let server = &median["server"];
    assert!(server["peak_rss_mib"].as_f64().unwrap() > 1.0);
    assert!(server["idle_rss_mib"].as_f64().unwrap() > 1.0);
    assert!(server["start_to_serving_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn introspects_a_pool_of_distinct_tokens_and_opens_a_connection_per_request() {
    let report = run(&["--mode", "introspect", "--pool", "20", "--requests", "60"]);
    assert_eq!(report["median"]["ok"], 60);
    assert_eq!(report["median"]["pool"], 20);
    let report = run(&[
        "--mode",
        "connect",
        "--requests",
        "10",
        "--connections",
        "2",
        "--streams",
        "1",
    ]);
    assert_eq!(report["median"]["ok"], 10);
}

/// The bench's connections agree the build's preferred group — the hybrid post-quantum
/// X25519MLKEM768 with aws-lc-rs, X25519 with ring — and `--kx-group` offers only the one
/// named (the expectation is read from the build's feature).
#[test]
fn reports_the_key_exchange_group_and_can_offer_only_a_classical_one() {
    let connect = [
        "--mode",
        "connect",
        "--requests",
        "4",
        "--connections",
        "1",
        "--streams",
        "1",
    ];
    let preferred = if cfg!(feature = "aws-lc") {
        "X25519MLKEM768"
    } else {
        "X25519"
    };
    let report = run(&connect);
    assert_eq!(report["median"]["key_exchange"], preferred);
    let report = run(&[&connect[..], &["--kx-group", "X25519"]].concat());
    assert_eq!(report["median"]["ok"], 4);
    assert_eq!(report["median"]["key_exchange"], "X25519");
    let refused = Command::new(BENCH)
        .args(["--kx-group", "X448", "--requests", "1"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--kx-group X448"));
}

#[test]
fn a_refused_call_is_counted_by_its_status() {
    // The demo client may not introspect: every call is refused, none counted as done.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BENCH)
        .args(["--spawn", "--json", "--warmup", "0s", "--server-bin"])
        .arg(server_bin())
        .arg("--dir")
        .arg(dir.path())
        .args(["--mode", "introspect", "--requests", "20"])
        .arg("--cert")
        .arg(dir.path().join("certs/demo.pem"))
        .arg("--key")
        .arg(dir.path().join("certs/demo.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["median"]["ok"], 0);
    assert_eq!(report["median"]["requests"], 20);
    assert_eq!(
        report["median"]["errors"],
        serde_json::json!({ "PermissionDenied": 20 })
    );
}
