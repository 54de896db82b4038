//! The `tokenmint` binary as an operator uses it.

use std::{
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_tokenmint");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn tokenmint(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("TOKENMINT_KEK")
        .env_remove("TOKENMINT_SERVER")
        .env("RUST_LOG", "warn")
        // Any free port for the operations listener: tests run side by side.
        .env("TOKENMINT__SERVER__OPS_LISTEN", "127.0.0.1:0");
    command
}

/// `tokenmint serve --dev` in a directory, on a free loopback port, as an operator runs it.
pub(crate) struct DevServer {
    child: std::process::Child,
    dir: std::path::PathBuf,
    pub(crate) port: u16,
}

impl DevServer {
    /// Starts it in `dir` with `env` over the defaults of [`tokenmint`]; its log goes to
    /// `dir/{log}` when given, else nowhere.
    pub(crate) fn start(dir: &Path, env: &[(&str, &str)], log: Option<&str>) -> Self {
        let port = free_port();
        let stderr = match log {
            Some(name) => Stdio::from(std::fs::File::create(dir.join(name)).unwrap()),
            None => Stdio::null(),
        };
        let child = tokenmint(dir)
            .args(["serve", "--dev"])
            .env("TOKENMINT__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self {
            child,
            dir: dir.to_owned(),
            port,
        }
    }

    /// The CLI against this server (`--server` added).
    pub(crate) fn cli(&self, args: &[&str]) -> std::process::Output {
        tokenmint(&self.dir)
            .args(args)
            .args(["--server", &format!("https://localhost:{}", self.port)])
            .output()
            .unwrap()
    }

    /// Waits (at most 60 s) until demo gets a token with the CLI, and returns that answer.
    pub(crate) fn wait_until_serving(&self) -> std::process::Output {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let output = self.cli(&["token", "issue"]);
            if output.status.success() {
                return output;
            }
            assert!(
                Instant::now() < deadline,
                "serve --dev never served: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A channel to it as `who` (`demo` or `admin`).
    pub(crate) fn channel(&self, who: &str) -> tonic::transport::Channel {
        let tls = crate::binary::dev_tls(&self.dir, who);
        tonic::transport::Channel::from_shared(format!("https://localhost:{}", self.port))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_lazy()
    }

    /// Sends it a signal (`TERM`, `HUP`).
    pub(crate) fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
    }

    /// Waits for it to exit.
    pub(crate) fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// Stops it with SIGTERM and asserts a clean exit.
    pub(crate) fn stop(self) {
        self.signal("TERM");
        let status = self.wait();
        assert!(
            status.success(),
            "serve exits cleanly on SIGTERM: {status:?}"
        );
    }
}

#[test]
fn serve_dev_in_an_empty_directory_issues_a_token_to_demo() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(dir.path(), &[], None);
    let output = server.wait_until_serving();
    let server_port = server.port;
    // Graceful stop on SIGTERM.
    server.stop();

    let response: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(response["token_type"], "Bearer");
    assert_eq!(response["scope"], "demo:read");
    assert_eq!(response["audiences"][0], "https://demo.tokenmint.dev");
    let token = response["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&tokenmint_core::crypto::b64url_decode(payload).unwrap()).unwrap();
    assert_eq!(claims["sub"], "demo");
    // Under --dev the issuer follows the port it listens on.
    assert_eq!(claims["iss"], format!("https://localhost:{}", server_port));

    for file in [
        "certs/ca.pem",
        "certs/server.pem",
        "certs/server.key",
        "certs/admin.pem",
        "certs/admin.key",
        "certs/demo.pem",
        "certs/demo.key",
        "tokenmint.toml",
        "tokenmint.kek",
        "tokenmint.db",
    ] {
        assert!(dir.path().join(file).exists(), "{file} was written");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("tokenmint.kek"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the KEK file is private");
    }
}

#[test]
fn serve_without_dev_names_the_missing_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = tokenmint(dir.path()).args(["serve"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tokenmint.toml"), "{stderr}");
    assert!(
        !dir.path().join("certs").exists(),
        "nothing is generated without --dev"
    );
    assert!(!dir.path().join("tokenmint.kek").exists());
}

/// The stack this test binary was built with, read from the feature (not from the code under
/// test): the binary must say the same.
fn expected_stack() -> &'static str {
    if cfg!(feature = "fips") {
        "crypto: aws-lc-rs (FIPS module) (feature `fips`"
    } else if cfg!(feature = "aws-lc") {
        "crypto: aws-lc-rs (feature `aws-lc`)"
    } else {
        "crypto: ring (feature `ring`)"
    }
}

#[test]
fn version_and_check_config_name_the_crypto_stack() {
    let dir = tempfile::tempdir().unwrap();
    let version = tokenmint(dir.path()).arg("--version").output().unwrap();
    assert!(version.status.success());
    let stdout = String::from_utf8_lossy(&version.stdout);
    assert!(
        stdout.starts_with(&format!("tokenmint {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(stdout.contains(expected_stack()), "{stdout}");

    std::fs::write(
        dir.path().join("tokenmint.toml"),
        tokenmint::config::starter_toml(),
    )
    .unwrap();
    let check = tokenmint(dir.path()).arg("check-config").output().unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains("keys.algorithm ES256"), "{stdout}");
    assert!(stdout.contains("keys.custody sealed"), "{stdout}");
    assert!(stdout.contains(expected_stack()), "{stdout}");
    // A token's custody is checked as configuration (the token itself is opened by `serve`).
    let check = tokenmint(dir.path())
        .arg("check-config")
        .env("TOKENMINT__KEYS__CUSTODY", "pkcs11")
        .env(
            "TOKENMINT__PKCS11__MODULE",
            "/usr/lib/softhsm/libsofthsm2.so",
        )
        .env("TOKENMINT__PKCS11__TOKEN_LABEL", "tokenmint")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains("keys.custody pkcs11"), "{stdout}");
}

#[test]
fn check_config_names_the_invalid_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[keys]\nalgorithm = \"HS256\"\n", "keys.algorithm"),
        (
            "[keys]\npublish_ahead = \"5m\"\njwks_max_age = \"5m\"\n",
            "keys.publish_ahead",
        ),
        ("[tokens]\nmax_lifetime = \"5h\"\n", "keys.retention"),
        ("[server]\nlisten = \"localhost\"\n", "server.listen"),
        ("[server]\nlissen = \"127.0.0.1:1\"\n", "lissen"),
        ("[tokens]\nleeway = \"5 parsecs\"\n", "tokens.leeway"),
        (
            "[[clients]]\nid = \"x\"\nsan_uri = \"spiffe://a/x\"\nsan_dns = \"x.example\"\n",
            "clients[0]",
        ),
        (
            "[tokens]\ndefault_lifetime = \"1500ms\"\n",
            "tokens.default_lifetime",
        ),
        (
            "[[clients]]\nid = \"x\"\nsan_dns = \"*.example.com\"\n",
            "wildcard",
        ),
        (
            "[[clients]]\nid = \"a\"\nsan_uri = \"spiffe://a/x\"\n[[clients]]\nid = \"b\"\nsan_uri = \"spiffe://a/x\"\n",
            "certificate matchers must be unique",
        ),
    ];
    for (text, field) in cases {
        std::fs::write(dir.path().join("tokenmint.toml"), text).unwrap();
        let output = tokenmint(dir.path())
            .args(["check-config"])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{text} should be refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(field),
            "error for {text:?} names {field}: {stderr}"
        );
    }
    std::fs::write(
        dir.path().join("tokenmint.toml"),
        tokenmint::config::starter_toml(),
    )
    .unwrap();
    let output = tokenmint(dir.path())
        .args(["check-config"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn client_add_registers_offline_and_shows_a_secret_once() {
    let dir = tempfile::tempdir().unwrap();
    let init = tokenmint(dir.path()).args(["init"]).output().unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let add = tokenmint(dir.path())
        .args([
            "client",
            "add",
            "--id",
            "billing",
            "--san-uri",
            "spiffe://tokenmint.dev/billing",
            "--scope",
            "ledger:read",
            "--audience",
            "https://ledger.example",
            "--with-secret",
        ])
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let stdout = String::from_utf8_lossy(&add.stdout);
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client secret (shown once, store it now): "))
        .expect("the secret is printed once");
    assert_eq!(
        tokenmint_core::crypto::b64url_decode(secret).unwrap().len(),
        32,
        "256-bit secret"
    );

    let list = tokenmint(dir.path())
        .args(["client", "list"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with("billing\t"))
        .expect("listed");
    assert!(
        line.contains("san_uri=spiffe://tokenmint.dev/billing"),
        "{line}"
    );
    assert!(line.contains("secret"), "{line}");
    assert!(!listing.contains(secret), "the secret is never shown again");
    let db = std::fs::read(dir.path().join("tokenmint.db")).unwrap();
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is not stored in clear"
    );

    // The same certificate matcher again is refused; so is a malformed scope.
    let duplicate = tokenmint(dir.path())
        .args([
            "client",
            "add",
            "--id",
            "other",
            "--san-uri",
            "spiffe://tokenmint.dev/billing",
            "--audience",
            "https://x.example",
        ])
        .output()
        .unwrap();
    assert!(!duplicate.status.success());
    let stderr = String::from_utf8_lossy(&duplicate.stderr);
    assert!(stderr.contains("already registered"), "{stderr}");
    let bad_scope = tokenmint(dir.path())
        .args([
            "client",
            "add",
            "--id",
            "third",
            "--san-uri",
            "spiffe://tokenmint.dev/third",
            "--scope",
            "has\"quote",
        ])
        .output()
        .unwrap();
    assert!(!bad_scope.status.success());
    assert!(String::from_utf8_lossy(&bad_scope.stderr).contains("scope"));
}

#[test]
fn sighup_reloads_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // Only the signal may trigger the reload here.
    let server = DevServer::start(
        dir.path(),
        &[("TOKENMINT__TLS__RELOAD_INTERVAL", "1h")],
        None,
    );
    server.wait_until_serving();
    let issue_ok = || server.cli(&["token", "issue"]).status.success();

    // A new CA signs a new server certificate and the clients' CA file is replaced: until
    // SIGHUP the server still presents the old certificate, so a client trusting only the new
    // CA fails; after it, the client succeeds.
    let ca = tokenmint::pki::CertificateAuthority::generate("second development CA").unwrap();
    let fresh = ca.issue_localhost_server().unwrap();
    let old_ca = std::fs::read(dir.path().join("certs/ca.pem")).unwrap();
    std::fs::write(dir.path().join("certs/new-ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(
        dir.path().join("certs/server.key"),
        fresh.key_pem.as_bytes(),
    )
    .unwrap();
    std::fs::write(dir.path().join("certs/server.pem"), &fresh.cert_pem).unwrap();
    let issue_trusting_new_ca = || {
        server
            .cli(&["token", "issue", "--ca", "certs/new-ca.pem"])
            .status
            .success()
    };
    assert!(
        !issue_trusting_new_ca(),
        "the certificate changed before SIGHUP"
    );
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !issue_trusting_new_ca() {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The old CA no longer verifies the server.
    assert_eq!(
        std::fs::read(dir.path().join("certs/ca.pem")).unwrap(),
        old_ca
    );
    assert!(!issue_ok());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_ends_watches_with_a_clear_status_and_exits_cleanly() {
    use tokenmint::grpc::proto::{
        IssueTokenRequest, WatchJwksRequest, WatchRevocationsRequest,
        key_service_client::KeyServiceClient, revocation_service_client::RevocationServiceClient,
        token_service_client::TokenServiceClient,
    };
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(dir.path(), &[("RUST_LOG", "info")], Some("server.log"));
    tokio::task::block_in_place(|| server.wait_until_serving());
    let demo = TokenServiceClient::new(server.channel("demo"));
    let admin = server.channel("admin");
    let mut revocations = RevocationServiceClient::new(admin.clone())
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    revocations.message().await.unwrap().unwrap();
    let mut jwks = KeyServiceClient::new(admin)
        .watch_jwks(WatchJwksRequest::default())
        .await
        .unwrap()
        .into_inner();
    jwks.message().await.unwrap().unwrap();

    // Four callers issue in a loop until the server goes away.
    let mut load = Vec::new();
    for _ in 0..4 {
        let client = demo.clone();
        load.push(tokio::spawn(async move {
            let mut ok = 0u32;
            let give_up = Instant::now() + Duration::from_secs(30);
            while Instant::now() < give_up {
                if client
                    .clone()
                    .issue_token(IssueTokenRequest::default())
                    .await
                    .is_err()
                {
                    break;
                }
                ok += 1;
            }
            ok
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    let signalled = Instant::now();

    // Both watch streams end with UNAVAILABLE saying why, not with a silent end.
    for ended in [
        async {
            loop {
                match revocations.message().await {
                    Ok(Some(_)) => continue,
                    other => return other.map(|_| ()),
                }
            }
        }
        .await,
        async {
            loop {
                match jwks.message().await {
                    Ok(Some(_)) => continue,
                    other => return other.map(|_| ()),
                }
            }
        }
        .await,
    ] {
        let status = ended.expect_err("the stream ended without a status");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("shutting down"), "{status:?}");
    }
    let mut served = 0;
    for caller in load {
        served += caller.await.unwrap();
    }
    assert!(served > 0);
    // Exit 0 within the shutdown grace (10 s).
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(12),
        "{:?}",
        signalled.elapsed()
    );
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn json_logs_carry_the_request_span_and_never_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(
        dir.path(),
        &[("TOKENMINT_LOG_FORMAT", "json"), ("RUST_LOG", "info")],
        Some("server.log"),
    );
    let issued = server.wait_until_serving();
    let token: serde_json::Value = serde_json::from_slice(&issued.stdout).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    // The admin client has no default audience: refused, and logged inside its request span.
    let as_admin = server.cli(&[
        "token",
        "issue",
        "--cert",
        "certs/admin.pem",
        "--key",
        "certs/admin.key",
    ]);
    assert!(!as_admin.status.success());
    server.stop();

    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let refused = lines
        .iter()
        .find(|l| l["fields"]["message"] == "token refused")
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert_eq!(
        refused["span"]["rpc"],
        "/tokenmint.v1.TokenService/IssueToken"
    );
    assert_eq!(refused["span"]["name"], "request");
    assert!(!log.contains(&token), "a token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_clients_secret_never_reaches_the_log() {
    use tokenmint::grpc::proto::{
        ClientSpec, GetClientRequest, ListClientsRequest, RegisterClientRequest,
        admin_service_client::AdminServiceClient,
    };
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(dir.path(), &[("RUST_LOG", "debug")], Some("server.log"));
    tokio::task::block_in_place(|| server.wait_until_serving());
    let mut admin = AdminServiceClient::new(server.channel("admin"));
    let secret = admin
        .register_client(RegisterClientRequest {
            client: Some(ClientSpec {
                client_id: "with-secret".into(),
                san_uri: "spiffe://tokenmint.dev/with-secret".into(),
                audiences: vec!["https://demo.tokenmint.dev".into()],
                ..Default::default()
            }),
            with_secret: true,
        })
        .await
        .unwrap()
        .into_inner()
        .client_secret;
    admin
        .get_client(GetClientRequest {
            client_id: "with-secret".into(),
        })
        .await
        .unwrap();
    admin
        .list_clients(ListClientsRequest::default())
        .await
        .unwrap();
    tokio::task::block_in_place(|| server.stop());
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(log.contains("client registered"), "{log}");
    assert!(!secret.is_empty());
    assert!(!log.contains(&secret), "the secret reached the log");
}

#[test]
fn client_register_and_get_go_over_mtls_as_the_admin() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(dir.path(), &[], None);
    server.wait_until_serving();
    let run = |args: &[&str]| server.cli(args);
    let spec = [
        "client",
        "register",
        "--id",
        "billing",
        "--san-uri",
        "spiffe://tokenmint.dev/billing",
        "--audience",
        "https://demo.tokenmint.dev",
        "--with-secret",
    ];
    // demo is not an admin.
    let mut as_demo = spec.to_vec();
    as_demo.extend(["--cert", "certs/demo.pem", "--key", "certs/demo.key"]);
    let refused = run(&as_demo);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("admin"),
        "{refused:?}"
    );

    let registered = run(&spec);
    assert!(registered.status.success(), "{registered:?}");
    let out = String::from_utf8_lossy(&registered.stdout).into_owned();
    assert!(
        out.contains("registered client billing (san_uri spiffe://tokenmint.dev/billing)"),
        "{out}"
    );
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("client secret (shown once, store it now): "))
        .expect("the secret, once")
        .to_owned();

    let one = run(&["client", "get", "billing"]);
    assert!(one.status.success(), "{one:?}");
    let shown: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(shown["has_secret"], true);
    assert_eq!(shown["default_audiences"][0], "https://demo.tokenmint.dev");
    assert!(!String::from_utf8_lossy(&one.stdout).contains(&secret));
    let all = run(&["client", "get"]);
    let ids: Vec<String> = String::from_utf8_lossy(&all.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["client_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, vec!["admin", "billing", "demo", "demo-resource"]);
    // An update replaces the policy and keeps the secret.
    let updated = run(&[
        "client",
        "update",
        "--id",
        "billing",
        "--san-uri",
        "spiffe://tokenmint.dev/billing",
        "--audience",
        "https://demo.tokenmint.dev",
        "--scope",
        "billing:read",
    ]);
    assert!(updated.status.success(), "{updated:?}");
    // An update keeps the secret and the enabled state: it takes no flag for them.
    let refused = run(&[
        "client",
        "update",
        "--id",
        "billing",
        "--san-uri",
        "spiffe://tokenmint.dev/billing",
        "--with-secret",
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--with-secret"),
        "{refused:?}"
    );
    assert!(String::from_utf8_lossy(&updated.stdout).contains("updated client billing"));
    let shown: serde_json::Value =
        serde_json::from_slice(&run(&["client", "get", "billing"]).stdout).unwrap();
    assert_eq!(shown["scopes"], serde_json::json!(["billing:read"]));
    assert_eq!(shown["has_secret"], true);
    // Registering it again is refused.
    let again = run(&spec);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already registered"),
        "{again:?}"
    );
    server.stop();
}

/// Runs `serve --dev` in `dir` with issuance audited as `mode` and JSON logs to `log`, issues
/// `count` tokens to demo with the CLI, stops the server with SIGTERM, and returns the tokens.
fn serve_and_issue(dir: &Path, mode: &str, log: &str, count: usize) -> Vec<String> {
    let server = DevServer::start(
        dir,
        &[
            ("TOKENMINT__AUDIT__ISSUANCE", mode),
            // Used by the sampled mode only: one token in two.
            ("TOKENMINT__AUDIT__ISSUANCE_SAMPLE", "2"),
            ("TOKENMINT_LOG_FORMAT", "json"),
            ("RUST_LOG", "warn,tokenmint_core::audit::issuance=info"),
        ],
        Some(log),
    );
    let mut answers = vec![server.wait_until_serving()];
    while answers.len() < count {
        let output = server.cli(&["token", "issue"]);
        assert!(output.status.success(), "{output:?}");
        answers.push(output);
    }
    server.stop();
    answers
        .iter()
        .map(|output| {
            let response: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            response["access_token"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The JSON log lines of the issuance audit target.
fn issuance_events(dir: &Path, log: &str) -> (String, Vec<serde_json::Value>) {
    let text = std::fs::read_to_string(dir.join(log)).unwrap();
    let events = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "tokenmint_core::audit::issuance")
        .collect();
    (text, events)
}

#[test]
fn issuance_is_audited_on_its_own_log_target_per_token_sampled_or_as_counts_and_never_with_the_token()
 {
    let dir = tempfile::tempdir().unwrap();

    // Every token: one event each, naming its id, never holding it.
    let tokens = serve_and_issue(dir.path(), "every", "every.log", 3);
    let (text, events) = issuance_events(dir.path(), "every.log");
    let issued: Vec<_> = events
        .iter()
        .filter(|e| e["fields"]["event"] == "token.issued")
        .collect();
    assert_eq!(issued.len(), 3, "{text}");
    for (event, token) in issued.iter().zip(&tokens) {
        assert_eq!(event["fields"]["client_id"], "demo");
        assert_eq!(event["fields"]["subject"], "demo");
        assert_eq!(event["fields"]["exchanged_from"], "", "not exchanged");
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(event["fields"]["token_id"], claims["jti"]);
        assert!(!text.contains(token.as_str()), "a token reached the log");
    }

    // The default: per-client counts, written at each interval and at shutdown.
    let tokens = serve_and_issue(dir.path(), "counts", "counts.log", 2);
    let (text, events) = issuance_events(dir.path(), "counts.log");
    assert!(
        events
            .iter()
            .all(|e| e["fields"]["event"] != "token.issued"),
        "{text}"
    );
    let issued: u64 = events
        .iter()
        .filter(|e| e["fields"]["event"] == "token.counts" && e["fields"]["client_id"] == "demo")
        .map(|e| e["fields"]["issued"].as_u64().unwrap())
        .sum();
    assert_eq!(issued, 2, "{text}");
    assert!(tokens.iter().all(|t| !text.contains(t.as_str())));

    // Sampled, one in two: two of four tokens, each named by its id.
    let tokens = serve_and_issue(dir.path(), "sampled", "sampled.log", 4);
    let (text, events) = issuance_events(dir.path(), "sampled.log");
    let sampled: Vec<_> = events
        .iter()
        .filter(|e| e["fields"]["event"] == "token.issued")
        .collect();
    assert_eq!(sampled.len(), 2, "{text}");
    assert!(sampled.iter().all(|e| e["fields"]["sampled_one_in"] == 2));
    assert!(tokens.iter().all(|t| !text.contains(t.as_str())));

    // Off: nothing on the target.
    serve_and_issue(dir.path(), "off", "off.log", 1);
    let (text, events) = issuance_events(dir.path(), "off.log");
    assert!(events.is_empty(), "{text}");
}

#[test]
fn a_self_signed_client_is_registered_by_its_certificate_file_and_the_audit_list_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(dir.path(), &[], None);
    server.wait_until_serving();
    let run = |args: &[&str]| server.cli(args);
    // A device's own certificate, as openssl makes one.
    crate::support::self_signed(dir.path(), "device", "device.key", None);

    let registered = run(&[
        "client",
        "register",
        "--id",
        "device-7",
        "--pin-cert",
        "device.pem",
        "--audience",
        "https://demo.tokenmint.dev",
    ]);
    assert!(registered.status.success(), "{registered:?}");
    let shown: serde_json::Value =
        serde_json::from_slice(&run(&["client", "get", "device-7"]).stdout).unwrap();
    assert_eq!(shown["matcher"]["kind"], "self_signed");
    assert_eq!(shown["pinned_sha256"].as_array().unwrap().len(), 1);

    let issued = run(&[
        "token",
        "issue",
        "--cert",
        "device.pem",
        "--key",
        "device.key",
    ]);
    assert!(issued.status.success(), "{issued:?}");
    let response: serde_json::Value = serde_json::from_slice(&issued.stdout).unwrap();
    assert!(response["access_token"].as_str().unwrap().contains('.'));

    let audit = run(&["audit", "list", "--action", "client.registered"]);
    assert!(audit.status.success(), "{audit:?}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor"], "admin");
    assert_eq!(events[0]["target"], "device-7");
    assert_eq!(events[0]["detail"]["matcher"], "self_signed");

    server.stop();
}

/// Sends IssueToken as demo naming a `client_id` with a newline and an ANSI escape, then
/// stops the server and returns its log.
async fn log_after_a_forged_client_id(format: &str) -> String {
    use tokenmint::grpc::proto::{IssueTokenRequest, token_service_client::TokenServiceClient};
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(
        dir.path(),
        &[("TOKENMINT_LOG_FORMAT", format), ("RUST_LOG", "info")],
        Some("server.log"),
    );
    tokio::task::block_in_place(|| server.wait_until_serving());
    let refused = TokenServiceClient::new(server.channel("demo"))
        .issue_token(IssueTokenRequest {
            client_id: "evil\nFORGED level=ERROR \u{1b}[31mred".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    tokio::task::block_in_place(|| server.stop());
    std::fs::read_to_string(dir.path().join("server.log")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_or_escape_from_a_peer_cannot_forge_a_text_log_line() {
    let log = log_after_a_forged_client_id("text").await;
    let refusal = log
        .lines()
        .find(|l| l.contains("token refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(refusal.contains(r"evil\nFORGED"), "{refusal}");
    assert!(refusal.contains(r"\u{1b}[31m"), "{refusal}");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "a raw escape reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_or_escape_from_a_peer_stays_inside_its_json_log_string() {
    let log = log_after_a_forged_client_id("json").await;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    assert!(log.contains(r"evil\nFORGED"), "{log}");
    assert!(!log.contains('\u{1b}'), "a raw escape reached the log");
}

#[test]
fn an_unreachable_server_says_how_to_start_one_and_prints_no_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        tokenmint(dir.path())
            .args(["init"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let port = free_port();
    let out = tokenmint(dir.path())
        .args(["token", "issue"])
        .args(["--server", &format!("https://localhost:{port}")])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot reach tokenmint at"),
        "{stderr}"
    );
    assert!(stderr.contains("tokenmint serve --dev"), "{stderr}");
    assert!(stderr.contains("TOKENMINT_SERVER"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
}

#[test]
fn the_cli_finds_its_server_in_tokenmint_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(dir.path(), &[], None);
    server.wait_until_serving();
    let out = tokenmint(dir.path())
        .args(["token", "issue"])
        .env(
            "TOKENMINT_SERVER",
            format!("https://localhost:{}", server.port),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();
}

#[test]
fn a_clients_place_in_call_chains_is_added_listed_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let init = tokenmint(dir.path()).args(["init"]).output().unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let gateway = [
        "client",
        "add",
        "--id",
        "gateway",
        "--san-uri",
        "spiffe://tokenmint.dev/gateway",
        "--audience",
        "https://demo.tokenmint.dev",
        "--audience",
        "https://orders.example",
        "--serves",
        "https://gateway.example",
        "--serves",
        "https://gateway-admin.example",
        "--act-for",
        "demo",
        "--delegate-audience",
        "https://orders.example",
        "--delegate-scope",
        "orders:read",
        "--asserts-txn-subjects",
    ];
    let add = tokenmint(dir.path()).args(gateway).output().unwrap();
    assert!(add.status.success(), "{add:?}");
    let plain = tokenmint(dir.path())
        .args([
            "client",
            "add",
            "--id",
            "plain",
            "--san-uri",
            "spiffe://tokenmint.dev/plain",
        ])
        .output()
        .unwrap();
    assert!(plain.status.success(), "{plain:?}");

    // Offline: the listing shows where a client stands in call chains, and only where it has a
    // place in one.
    let list = tokenmint(dir.path())
        .args(["client", "list"])
        .output()
        .unwrap();
    assert!(list.status.success(), "{list:?}");
    let listing = String::from_utf8_lossy(&list.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with("gateway\t"))
        .expect("listed");
    for shown in [
        "\tserves=[https://gateway.example https://gateway-admin.example]",
        "\tact_for=[demo]",
        "\tdelegate_audiences=[https://orders.example]",
        "\tdelegate_scopes=[orders:read]",
        "\tasserts_txn_subjects",
    ] {
        assert!(line.contains(shown), "{shown:?} in {line}");
    }
    let plain = listing
        .lines()
        .find(|l| l.starts_with("plain\t"))
        .expect("listed");
    for key in ["serves=", "act_for=", "delegate_", "asserts_txn_subjects"] {
        assert!(!plain.contains(key), "{key:?} in {plain}");
    }

    // Another client serving one of its audiences is refused, naming the audience and who
    // serves it; so is delegating to an audience it may not call.
    let rival = tokenmint(dir.path())
        .args([
            "client",
            "add",
            "--id",
            "rival",
            "--san-uri",
            "spiffe://tokenmint.dev/rival",
            "--serves",
            "https://gateway-admin.example",
        ])
        .output()
        .unwrap();
    assert!(!rival.status.success());
    let stderr = String::from_utf8_lossy(&rival.stderr);
    assert!(
        stderr.contains(
            "serves `https://gateway-admin.example`, which client gateway already serves"
        ),
        "{stderr}"
    );
    let outside = tokenmint(dir.path())
        .args([
            "client",
            "add",
            "--id",
            "outside",
            "--san-uri",
            "spiffe://tokenmint.dev/outside",
            "--act-for",
            "*",
            "--delegate-audience",
            "https://orders.example",
        ])
        .output()
        .unwrap();
    assert!(!outside.status.success());
    let stderr = String::from_utf8_lossy(&outside.stderr);
    assert!(
        stderr.contains("delegate_audiences `https://orders.example` is not in audiences"),
        "{stderr}"
    );

    // Over the API: get shows the four lists, and an update replaces them.
    let server = DevServer::start(dir.path(), &[], None);
    server.wait_until_serving();
    let get = |id: &str| -> serde_json::Value {
        let out = server.cli(&["client", "get", id]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let shown = get("gateway");
    assert_eq!(
        shown["serves"],
        serde_json::json!(["https://gateway.example", "https://gateway-admin.example"])
    );
    assert_eq!(shown["act_for"], serde_json::json!(["demo"]));
    assert_eq!(
        shown["delegate_audiences"],
        serde_json::json!(["https://orders.example"])
    );
    assert_eq!(shown["delegate_scopes"], serde_json::json!(["orders:read"]));
    assert_eq!(get("plain")["serves"], serde_json::json!([]));
    assert_eq!(shown["asserts_txn_subjects"], true);
    assert_eq!(get("plain")["asserts_txn_subjects"], false);
    let updated = server.cli(&[
        "client",
        "update",
        "--id",
        "gateway",
        "--san-uri",
        "spiffe://tokenmint.dev/gateway",
        "--audience",
        "https://orders.example",
        "--serves",
        "https://gateway.example",
        "--act-for",
        "*",
        "--delegate-audience",
        "https://orders.example",
    ]);
    assert!(updated.status.success(), "{updated:?}");
    let shown = get("gateway");
    assert_eq!(
        shown["serves"],
        serde_json::json!(["https://gateway.example"])
    );
    assert_eq!(shown["act_for"], serde_json::json!(["*"]));
    assert_eq!(shown["delegate_scopes"], serde_json::json!([]));
    // The listing of every client carries them too.
    let all = server.cli(&["client", "get"]);
    assert!(all.status.success(), "{all:?}");
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&all.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let gateway = listed
        .iter()
        .find(|c| c["client_id"] == "gateway")
        .expect("listed");
    assert_eq!(gateway["act_for"], serde_json::json!(["*"]));
    // Registering a client that serves what gateway serves is refused over the API too.
    let rival = server.cli(&[
        "client",
        "register",
        "--id",
        "rival",
        "--san-uri",
        "spiffe://tokenmint.dev/rival",
        "--serves",
        "https://gateway.example",
    ]);
    assert!(!rival.status.success());
    assert!(
        String::from_utf8_lossy(&rival.stderr)
            .contains("serves `https://gateway.example`, which client gateway already serves"),
        "{rival:?}"
    );
    server.stop();
}

/// Output into a pipe whose reader has gone (`tokenmint … | head -c 10`) ends the command as a
/// pipe's writer ends, with status 141, never with a panic and its backtrace.
#[test]
fn a_closed_standard_output_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenmint.toml"),
        tokenmint::config::starter_toml(),
    )
    .unwrap();
    let mut child = tokenmint(dir.path())
        .arg("check-config")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes before the command has loaded its configuration, let alone written.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(141), "{stderr}");
}
