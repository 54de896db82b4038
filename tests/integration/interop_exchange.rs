//! Token exchange (RFC 8693) from a client outside Rust: tests/interop/exchange_requests.py,
//! Python `requests` over mutual TLS with no project code, takes A's token, exchanges it as B
//! to call C on A's behalf (delegation), narrows that token to one scope (down-scoping), asks
//! for more than it has (refused), and checks each token with PyJWT against the published
//! keys. This test runs it against a real server with the chain of `exchange.rs`, and checks
//! its report again from here. Without PyJWT or requests it says it skipped (under CI, fails:
//! .ci/run installs tests/interop/requirements.txt).

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    binary::Running,
    exchange::{ACCESS_TOKEN, B_AUD, C_AUD, Parties, chain_clients},
    support::*,
};

/// How long the script may take before it is killed.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `command` to its end or to [`DEADLINE`] (then kills it): success, stdout, stderr.
fn run_bounded(mut command: Command) -> (bool, String, String) {
    let mut child: Running = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
        .into();
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).map(|_| text)
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            // Dropping `child` kills it; its pipes close, and so the readers end.
            drop(child);
            panic!(
                "{command:?} still running after {DEADLINE:?}, killed: {}\n{}",
                stderr.join().unwrap().unwrap_or_default(),
                stdout.join().unwrap().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.success(),
        stdout.join().unwrap().unwrap(),
        stderr.join().unwrap().unwrap(),
    )
}

/// Whether python3 has PyJWT and requests.
fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import jwt, requests"])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_delegates_and_down_scopes_over_http() {
    if !python_ready() {
        crate::binary::skipped(
            "PyJWT and requests (pip install -r tests/interop/requirements.txt)",
        );
        return;
    }
    let setup = Setup::new(&chain_clients());
    let server = setup.start().await;
    let parties = Parties::of(&setup);

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, setup.pki.ca.cert_pem()).unwrap();
    for (name, issued) in [("a", &parties.a), ("b", &parties.b)] {
        std::fs::write(dir.path().join(format!("{name}.pem")), &issued.cert_pem).unwrap();
        std::fs::write(
            dir.path().join(format!("{name}.key")),
            issued.key_pem.as_bytes(),
        )
        .unwrap();
    }
    let mut command = Command::new("python3");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/exchange_requests.py"))
        .arg(format!("https://localhost:{}", server.addr.port()))
        .arg(ISSUER)
        .arg(&ca)
        .arg(dir.path());
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || run_bounded(command))
        .await
        .unwrap();
    assert!(ok, "exchange_requests.py failed: {stderr}\n{stdout}");
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("no report ({e}): {stdout}\n{stderr}"));
    println!("exchange_requests.py: {report}");

    let b_thumbprint = thumbprint_of(&parties.b);
    assert_eq!(report["issuer"], ISSUER, "{report}");
    let a = &report["subject"];
    assert_eq!((&a["sub"], &a["client_id"]), (&json!("a"), &json!("a")));
    assert_eq!(a["aud"], B_AUD, "{report}");
    assert_eq!(a["scope"], "orders:read orders:write", "{report}");
    assert_eq!(a["x5t#S256"], thumbprint_of(&parties.a), "{report}");

    // B for A, to C: both of A's scopes passed on, bound to B, no later than A's token.
    let delegation = &report["delegation"];
    assert_eq!(delegation["issued_token_type"], ACCESS_TOKEN, "{report}");
    assert_eq!(delegation["token_type"], "Bearer", "{report}");
    assert_eq!(delegation["sub"], "a", "{report}");
    assert_eq!(delegation["client_id"], "b", "{report}");
    assert_eq!(delegation["act"], json!({ "sub": "b" }), "{report}");
    assert_eq!(delegation["aud"], C_AUD, "{report}");
    assert_eq!(delegation["scope"], "orders:read orders:write", "{report}");
    assert_eq!(
        delegation["response_scope"], delegation["scope"],
        "{report}"
    );
    assert_eq!(delegation["x5t#S256"], b_thumbprint, "{report}");
    assert_eq!(
        delegation["b_thumbprint"], b_thumbprint,
        "Python's thumbprint"
    );
    assert!(delegation["exp"].as_i64() <= a["exp"].as_i64(), "{report}");

    // B's own token narrowed: one scope, still for A, acted and held by B.
    let narrowed = &report["down_scoping"];
    assert_eq!(narrowed["issued_token_type"], ACCESS_TOKEN, "{report}");
    assert_eq!(narrowed["sub"], "a", "{report}");
    assert_eq!(narrowed["client_id"], "b", "{report}");
    assert_eq!(narrowed["act"], json!({ "sub": "b" }), "{report}");
    assert_eq!(narrowed["aud"], C_AUD, "{report}");
    assert_eq!(narrowed["scope"], "orders:read", "{report}");
    assert_eq!(narrowed["response_scope"], "orders:read", "{report}");
    assert_eq!(narrowed["x5t#S256"], b_thumbprint, "{report}");
    assert!(
        narrowed["exp"].as_i64() <= delegation["exp"].as_i64(),
        "{report}"
    );

    // More than the narrowed token has: refused as RFC 6749 says.
    let refusal = &report["refusal"];
    assert_eq!(refusal["status"], 400, "{report}");
    assert_eq!(refusal["error"], "invalid_scope", "{report}");

    server.stop().await;
}
