//! Revocation (SPEC §6–7): a token revoked is inactive at once and stays so across a hard
//! kill; only its owner or an admin may revoke it; the admin's revocations, cut-offs and
//! client switches; durable before OK; and the caps on live revocations.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokenmint::{
    grpc::proto::{
        DisableClientRequest, EnableClientRequest, IssueTokenRequest, ListRevocationsRequest,
        ListRevocationsResponse, RevokeClientTokensRequest, RevokeTokenIdRequest,
        admin_service_client::AdminServiceClient,
    },
    pki::Issued,
    wire::{OAUTH_ERROR_METADATA, RETRY_AFTER_METADATA},
};
use tokenmint_core::{
    clock::{Clock as _, SystemClock, unix_seconds},
    crypto::{b64url, b64url_decode},
};
use tokenmint_store::sqlite::SqliteStore;
use tonic::{Code, Status, transport::Channel};

use crate::{flaky::FlakyStore, support::*};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The payload of a compact JWS, as JSON (no verification).
fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(&b64url_decode(payload).expect("base64url payload")).unwrap()
}

fn jti_of(token: &str) -> String {
    claims_of(token)["jti"].as_str().unwrap().to_owned()
}

fn unix_now() -> i64 {
    unix_seconds(SystemClock.now())
}

/// A token for `cert`'s client with its defaults.
async fn token_for(server: &TestServer, cert: &Issued) -> String {
    issue(server, cert, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token
}

/// Whether `token` is active, as the resource server `rs` sees it.
async fn is_active(server: &TestServer, rs: &Issued, token: &str) -> bool {
    introspect(server, rs, token, None).await.unwrap().active
}

/// Asserts a call failed with `code` and, when given, the OAuth2 error code in metadata.
fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    oauth: Option<&str>,
) -> Status {
    let status = result.expect_err("the call must be refused");
    assert_eq!(status.code(), code, "status: {status:?}");
    if let Some(oauth) = oauth {
        let got = status
            .metadata()
            .get(OAUTH_ERROR_METADATA)
            .and_then(|v| v.to_str().ok());
        assert_eq!(got, Some(oauth), "status: {status:?}");
    }
    status
}

/// The `retry-after` hint of a refusal, in seconds.
fn retry_after(status: &Status) -> u64 {
    status
        .metadata()
        .get(RETRY_AFTER_METADATA)
        .unwrap_or_else(|| panic!("a retry-after hint: {status:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn list_revocations(admin: &mut AdminServiceClient<Channel>) -> ListRevocationsResponse {
    admin
        .list_revocations(ListRevocationsRequest::default())
        .await
        .unwrap()
        .into_inner()
}

fn listed_token_ids(list: &ListRevocationsResponse) -> Vec<String> {
    list.tokens.iter().map(|t| t.token_id.clone()).collect()
}

async fn revoke_id(admin: &mut AdminServiceClient<Channel>, token_id: &str) -> Result<u64, Status> {
    admin
        .revoke_token_id(RevokeTokenIdRequest {
            token_id: token_id.to_owned(),
        })
        .await
        .map(|r| r.into_inner().sequence)
}

/// The certificates of the standard clients.
struct Certs {
    demo: Issued,
    admin: Issued,
    rs: Issued,
    other: Issued,
}

impl Certs {
    fn new(setup: &Setup) -> Self {
        Self {
            demo: setup.pki.client_uri(DEMO_URI),
            admin: setup.pki.client_uri(ADMIN_URI),
            rs: setup.pki.client_uri(RS_URI),
            other: setup.pki.client_uri(OTHER_URI),
        }
    }
}

/// The standard clients preceded by `sections` (e.g. `[tokens]` or `[revocation]`), which the
/// test config places after `[keys]`.
fn setup_with(sections: &str) -> Setup {
    Setup::new(&format!("{sections}\n{}", standard_clients()))
}

// ---------------------------------------------------------------------------------------
// Revocation by the token's owner
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_inactive_at_once() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let certs = Certs::new(&setup);

    let token = token_for(&server, &certs.demo).await;
    assert!(is_active(&server, &certs.rs, &token).await);
    revoke(&server, &certs.demo, &token).await.unwrap();
    assert!(
        !is_active(&server, &certs.rs, &token).await,
        "inactive on the very next introspection"
    );
    let answer = introspect(&server, &certs.rs, &token, None).await.unwrap();
    assert_eq!(
        answer,
        Default::default(),
        "a revoked token gets the bare `active: false`"
    );
    // Another token of the same client is untouched.
    let other = token_for(&server, &certs.demo).await;
    assert!(is_active(&server, &certs.rs, &other).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_or_an_admin_may_revoke_and_unverifiable_tokens_are_no_ops() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let certs = Certs::new(&setup);
    let demo_token = token_for(&server, &certs.demo).await;
    let other_token = token_for(&server, &certs.other).await;

    // Another client may not revoke demo's token; it stays active.
    let status = assert_status(
        revoke(&server, &certs.other, &demo_token).await,
        Code::PermissionDenied,
        Some("unauthorized_client"),
    );
    assert!(
        status.message().starts_with("unauthorized_client"),
        "{status:?}"
    );
    assert!(is_active(&server, &certs.rs, &demo_token).await);

    // A forged token: other's claims rewritten to name demo, under demo's header and
    // signature. It does not verify, so nothing is revoked — least of all other's jti.
    let mut forged_claims = claims_of(&other_token);
    forged_claims["client_id"] = "demo".into();
    forged_claims["sub"] = "demo".into();
    let parts: Vec<&str> = demo_token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64url(&serde_json::to_vec(&forged_claims).unwrap()),
        parts[2]
    );
    revoke(&server, &certs.demo, &forged).await.unwrap();
    revoke(&server, &certs.admin, &forged).await.unwrap();
    assert!(
        is_active(&server, &certs.rs, &other_token).await,
        "a forged token revokes nothing"
    );
    assert!(is_active(&server, &certs.rs, &demo_token).await);

    // Garbage and well-formed but unknown tokens are OK no-ops.
    let unknown = format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"ES256","typ":"at+jwt","kid":"no-such-key"}"#),
        parts[1],
        parts[2]
    );
    for junk in ["", "garbage", "a.b.c", &unknown] {
        revoke(&server, &certs.demo, junk)
            .await
            .unwrap_or_else(|e| panic!("revoking {junk:?} is an OK no-op: {e:?}"));
    }
    let mut admin = server.admin(&certs.admin);
    assert!(
        list_revocations(&mut admin).await.tokens.is_empty(),
        "no-ops store nothing"
    );

    // An admin may revoke any client's token.
    revoke(&server, &certs.admin, &demo_token).await.unwrap();
    assert!(!is_active(&server, &certs.rs, &demo_token).await);
    // Revoking again is OK, by anyone entitled, and changes nothing.
    revoke(&server, &certs.admin, &demo_token).await.unwrap();
    revoke(&server, &certs.demo, &demo_token).await.unwrap();
    assert!(!is_active(&server, &certs.rs, &demo_token).await);
    let list = list_revocations(&mut admin).await;
    assert_eq!(listed_token_ids(&list), [jti_of(&demo_token)]);
    assert_eq!(list.tokens[0].client_id, "demo");

    // The owner revokes its own; twice is OK.
    revoke(&server, &certs.other, &other_token).await.unwrap();
    revoke(&server, &certs.other, &other_token).await.unwrap();
    assert!(!is_active(&server, &certs.rs, &other_token).await);
    assert_eq!(list_revocations(&mut admin).await.tokens.len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_expired_token_stores_nothing() {
    // With no leeway a 1-second token is expired two seconds later.
    let setup = setup_with("[tokens]\nleeway = \"0s\"\n");
    let server = setup.start().await;
    let certs = Certs::new(&setup);

    let short = issue(
        &server,
        &certs.demo,
        IssueTokenRequest {
            lifetime: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(short.expires_in, 1);
    let live = token_for(&server, &certs.demo).await;
    let exp = claims_of(&short.access_token)["exp"].as_i64().unwrap();
    while unix_now() <= exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!is_active(&server, &certs.rs, &short.access_token).await);

    revoke(&server, &certs.demo, &short.access_token)
        .await
        .unwrap();
    // The control: a live token's revocation is stored.
    revoke(&server, &certs.demo, &live).await.unwrap();
    let list = list_revocations(&mut server.admin(&certs.admin)).await;
    assert_eq!(
        listed_token_ids(&list),
        [jti_of(&live)],
        "the expired token left no entry"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Durability across a hard kill, with the real binary
// ---------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_tokenmint");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tokenmint(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("TOKENMINT_KEK")
        .env("RUST_LOG", "warn")
        // Any free port for the operations listener: tests run side by side.
        .env("TOKENMINT__SERVER__OPS_LISTEN", "127.0.0.1:0");
    command
}

/// A `tokenmint serve --dev` process, SIGKILLed when dropped.
struct ServeProcess(Child);

impl ServeProcess {
    fn start(dir: &Path, port: u16, log: &str) -> Self {
        let log = std::fs::File::create(dir.join(log)).unwrap();
        let child = tokenmint(dir)
            .args(["serve", "--dev"])
            .env("TOKENMINT__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self(child)
    }

    /// SIGKILL (std's `Child::kill` on Unix): no shutdown, no flush, nothing graceful.
    fn hard_kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `tokenmint args…` in `dir` until it succeeds (the server may still be starting).
fn run_until_ok(dir: &Path, args: &[&str]) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = tokenmint(dir).args(args).output().unwrap();
        if output.status.success() {
            return output;
        }
        assert!(
            Instant::now() < deadline,
            "tokenmint {args:?} kept failing: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn introspect_cli(dir: &Path, server: &str, token_file: &str) -> serde_json::Value {
    let output = run_until_ok(
        dir,
        &[
            "token",
            "introspect",
            "--server",
            server,
            "--token-file",
            token_file,
        ],
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_revocation_survives_a_hard_kill() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    let server = format!("https://localhost:{port}");
    let mut process = ServeProcess::start(dir, port, "serve-1.log");

    for file in ["revoked.jwt", "kept.jwt"] {
        let output = run_until_ok(dir, &["token", "issue", "--server", &server]);
        let response: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        std::fs::write(
            dir.join(file),
            response["access_token"].as_str().unwrap().as_bytes(),
        )
        .unwrap();
    }
    let revoked = tokenmint(dir)
        .args([
            "token",
            "revoke",
            "--server",
            &server,
            "--token-file",
            "revoked.jwt",
            "--cert",
            "certs/demo.pem",
            "--key",
            "certs/demo.key",
        ])
        .output()
        .unwrap();
    assert!(
        revoked.status.success(),
        "demo revokes its own token: {}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    // Straight after the OK: no graceful shutdown gets a chance to write anything.
    process.hard_kill();

    let _restarted = ServeProcess::start(dir, port, "serve-2.log");
    let after = introspect_cli(dir, &server, "revoked.jwt");
    assert_eq!(
        after,
        serde_json::json!({ "active": false }),
        "the revocation was durable before OK"
    );
    let control = introspect_cli(dir, &server, "kept.jwt");
    assert_eq!(
        control["active"], true,
        "a token not revoked is active after the restart: {control}"
    );
    assert_eq!(control["client_id"], "demo");
}

// ---------------------------------------------------------------------------------------
// Administration
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_revokes_token_ids_cuts_off_disables_and_enables_clients() {
    // A small leeway, so the cut-off (now + leeway) can be waited out.
    let setup = setup_with("[tokens]\nleeway = \"2s\"\n");
    let server = setup.start().await;
    let certs = Certs::new(&setup);
    let mut admin = server.admin(&certs.admin);

    // RevokeTokenId: by jti alone.
    let by_id = token_for(&server, &certs.demo).await;
    assert!(is_active(&server, &certs.rs, &by_id).await);
    let sequence = revoke_id(&mut admin, &jti_of(&by_id)).await.unwrap();
    assert!(sequence > 0);
    assert!(!is_active(&server, &certs.rs, &by_id).await);
    assert_eq!(
        revoke_id(&mut admin, &jti_of(&by_id)).await.unwrap(),
        0,
        "already revoked: nothing new"
    );
    for bad in ["", "has space", &"x".repeat(129)] {
        assert_status(
            revoke_id(&mut admin, bad).await,
            Code::InvalidArgument,
            Some("invalid_request"),
        );
    }

    // RevokeClientTokens: every earlier demo token; other's tokens untouched.
    let earlier = [
        token_for(&server, &certs.demo).await,
        token_for(&server, &certs.demo).await,
    ];
    let other_token = token_for(&server, &certs.other).await;
    for t in &earlier {
        assert!(is_active(&server, &certs.rs, t).await);
    }
    let before = unix_now();
    let cutoff = admin
        .revoke_client_tokens(RevokeClientTokensRequest {
            client_id: "demo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cutoff.sequence > sequence);
    assert!(
        (before + 2..=unix_now() + 2).contains(&cutoff.issued_at_or_before),
        "cut-off = now + leeway: {}",
        cutoff.issued_at_or_before
    );
    for t in &earlier {
        assert!(!is_active(&server, &certs.rs, t).await, "cut off");
    }
    assert!(is_active(&server, &certs.rs, &other_token).await);

    // Issuance to demo is temporarily unavailable until the cut-off passes.
    let refused = issue(&server, &certs.demo, IssueTokenRequest::default()).await;
    let status = assert_status(refused, Code::Unavailable, Some("temporarily_unavailable"));
    let hint = retry_after(&status);
    assert!((1..=3).contains(&hint), "retry-after {hint}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match issue(&server, &certs.demo, IssueTokenRequest::default()).await {
            Ok(issued) => break issued.access_token,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(Instant::now() < deadline, "the cut-off never passed");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    assert!(claims_of(&after)["iat"].as_i64().unwrap() > cutoff.issued_at_or_before);
    assert!(
        is_active(&server, &certs.rs, &after).await,
        "a token issued after the cut-off is active"
    );
    for t in &earlier {
        assert!(!is_active(&server, &certs.rs, t).await, "still cut off");
    }

    // DisableClient: demo's tokens are inactive and it gets none.
    let disabled = admin
        .disable_client(DisableClientRequest {
            client_id: "demo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(disabled.sequence > cutoff.sequence);
    assert!(!is_active(&server, &certs.rs, &after).await);
    assert_refused(
        issue(&server, &certs.demo, IssueTokenRequest::default()).await,
        Code::Unauthenticated,
        "invalid_client",
    );
    assert!(is_active(&server, &certs.rs, &other_token).await);

    // ListRevocations shows the token revocation, the cut-off and the disabled client.
    let list = list_revocations(&mut admin).await;
    assert_eq!(listed_token_ids(&list), [jti_of(&by_id)]);
    assert_eq!(list.tokens[0].client_id, "", "revoked by id alone");
    assert_eq!(list.tokens[0].sequence, sequence);
    assert_eq!(list.cutoffs.len(), 1, "{list:?}");
    assert_eq!(list.cutoffs[0].client_id, "demo");
    assert_eq!(
        list.cutoffs[0].issued_at_or_before,
        cutoff.issued_at_or_before
    );
    assert_eq!(list.disabled_clients, ["demo"]);
    assert!(list.next_page_token.is_empty());

    // EnableClient: its tokens are active again and it gets new ones.
    let enabled = admin
        .enable_client(EnableClientRequest {
            client_id: "demo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(enabled.sequence > disabled.sequence);
    assert!(is_active(&server, &certs.rs, &after).await);
    let fresh = token_for(&server, &certs.demo).await;
    assert!(is_active(&server, &certs.rs, &fresh).await);
    assert!(
        !is_active(&server, &certs.rs, &by_id).await,
        "enabling does not undo a token revocation"
    );
    assert!(
        list_revocations(&mut admin)
            .await
            .disabled_clients
            .is_empty()
    );

    // Unknown clients are refused, and nothing is committed.
    assert_status(
        admin
            .revoke_client_tokens(RevokeClientTokensRequest {
                client_id: "nobody".into(),
            })
            .await,
        Code::InvalidArgument,
        Some("invalid_request"),
    );
    assert_status(
        admin
            .disable_client(DisableClientRequest {
                client_id: "nobody".into(),
            })
            .await,
        Code::NotFound,
        Some("invalid_request"),
    );
    assert_status(
        admin
            .enable_client(EnableClientRequest {
                client_id: "nobody".into(),
            })
            .await,
        Code::NotFound,
        Some("invalid_request"),
    );
    let list = list_revocations(&mut admin).await;
    assert_eq!(list.cutoffs.len(), 1);
    assert!(list.disabled_clients.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_service_needs_the_admin_permission() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let certs = Certs::new(&setup);
    let token = token_for(&server, &certs.demo).await;

    for cert in [&certs.demo, &certs.rs, &certs.other] {
        let mut admin = server.admin(cert);
        assert_status(
            admin
                .list_revocations(ListRevocationsRequest::default())
                .await,
            Code::PermissionDenied,
            Some("unauthorized_client"),
        );
        assert_status(
            revoke_id(&mut admin, &jti_of(&token)).await,
            Code::PermissionDenied,
            Some("unauthorized_client"),
        );
        assert_status(
            admin
                .revoke_client_tokens(RevokeClientTokensRequest {
                    client_id: "demo".into(),
                })
                .await,
            Code::PermissionDenied,
            Some("unauthorized_client"),
        );
        assert_status(
            admin
                .disable_client(DisableClientRequest {
                    client_id: "demo".into(),
                })
                .await,
            Code::PermissionDenied,
            Some("unauthorized_client"),
        );
        assert_status(
            admin
                .enable_client(EnableClientRequest {
                    client_id: "demo".into(),
                })
                .await,
            Code::PermissionDenied,
            Some("unauthorized_client"),
        );
    }
    let mut anonymous = AdminServiceClient::new(server.public_channel());
    assert_status(
        anonymous
            .list_revocations(ListRevocationsRequest::default())
            .await,
        Code::Unauthenticated,
        Some("invalid_client"),
    );
    assert_status(
        revoke_id(&mut anonymous, &jti_of(&token)).await,
        Code::Unauthenticated,
        Some("invalid_client"),
    );

    // Nothing the refused callers asked for happened.
    assert!(is_active(&server, &certs.rs, &token).await);
    assert!(
        issue(&server, &certs.demo, IssueTokenRequest::default())
            .await
            .is_ok()
    );
    let list = list_revocations(&mut server.admin(&certs.admin)).await;
    assert!(list.tokens.is_empty() && list.cutoffs.is_empty() && list.disabled_clients.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_undoes_no_revocation_cut_off_or_disable() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let certs = Certs::new(&setup);
    let mut admin = server.admin(&certs.admin);
    let revoked = token_for(&server, &certs.demo).await;
    let kept = token_for(&server, &certs.demo).await;
    let other_token = token_for(&server, &certs.other).await;
    revoke(&server, &certs.demo, &revoked).await.unwrap();
    admin
        .revoke_client_tokens(RevokeClientTokensRequest {
            client_id: "other".into(),
        })
        .await
        .unwrap();
    let disabled = admin
        .disable_client(DisableClientRequest {
            client_id: "demo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    server.stop().await;

    // The config file still says demo is enabled; the store's incident response wins.
    let server = setup.start().await;
    let mut admin = server.admin(&certs.admin);
    assert_refused(
        issue(&server, &certs.demo, IssueTokenRequest::default()).await,
        Code::Unauthenticated,
        "invalid_client",
    );
    for t in [&revoked, &kept, &other_token] {
        assert!(!is_active(&server, &certs.rs, t).await);
    }
    assert_status(
        issue(&server, &certs.other, IssueTokenRequest::default()).await,
        Code::Unavailable,
        Some("temporarily_unavailable"),
    );
    let list = list_revocations(&mut admin).await;
    assert_eq!(listed_token_ids(&list), [jti_of(&revoked)]);
    assert_eq!(list.disabled_clients, ["demo"]);
    assert_eq!(list.cutoffs.len(), 1);

    // Sequences continue where they were.
    let enabled = admin
        .enable_client(EnableClientRequest {
            client_id: "demo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enabled.sequence, disabled.sequence + 1);
    assert!(is_active(&server, &certs.rs, &kept).await);
    assert!(!is_active(&server, &certs.rs, &revoked).await);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Durable before OK
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_answers_unavailable_and_revokes_nothing() {
    let setup = Setup::new(&standard_clients());
    let store = Arc::new(FlakyStore::open(&setup).await);
    let server = setup.start_with_store(store.clone()).await;
    let certs = Certs::new(&setup);
    let mut admin = server.admin(&certs.admin);
    let token = token_for(&server, &certs.demo).await;

    store.fail_commits.store(true, Ordering::SeqCst);
    for cert in [&certs.demo, &certs.admin] {
        assert_status(
            revoke(&server, cert, &token).await,
            Code::Unavailable,
            Some("temporarily_unavailable"),
        );
    }
    assert!(
        is_active(&server, &certs.rs, &token).await,
        "nothing was committed, so nothing changed"
    );
    assert_status(
        revoke_id(&mut admin, &jti_of(&token)).await,
        Code::Unavailable,
        Some("temporarily_unavailable"),
    );
    assert_status(
        admin
            .disable_client(DisableClientRequest {
                client_id: "demo".into(),
            })
            .await,
        Code::Unavailable,
        Some("temporarily_unavailable"),
    );
    assert_status(
        admin
            .revoke_client_tokens(RevokeClientTokensRequest {
                client_id: "demo".into(),
            })
            .await,
        Code::Unavailable,
        Some("temporarily_unavailable"),
    );
    assert!(is_active(&server, &certs.rs, &token).await);
    assert!(
        issue(&server, &certs.demo, IssueTokenRequest::default())
            .await
            .is_ok(),
        "no cut-off or disable took effect"
    );
    assert!(list_revocations(&mut admin).await.tokens.is_empty());

    // Once the store is back, the same revocation works.
    store.fail_commits.store(false, Ordering::SeqCst);
    revoke(&server, &certs.demo, &token).await.unwrap();
    assert!(!is_active(&server, &certs.rs, &token).await);
    assert_eq!(
        listed_token_ids(&list_revocations(&mut admin).await),
        [jti_of(&token)]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_writer_runs_with_synchronous_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("tokenmint.db"))
        .await
        .unwrap();
    assert_eq!(store.writer_synchronous().await.unwrap(), 2, "FULL");
    // And again on a file that already exists (migrations done, WAL present).
    drop(store);
    let store = SqliteStore::open(&dir.path().join("tokenmint.db"))
        .await
        .unwrap();
    assert_eq!(store.writer_synchronous().await.unwrap(), 2, "FULL");
}

// ---------------------------------------------------------------------------------------
// Caps on live revocations
// ---------------------------------------------------------------------------------------

const CAPS: &str = "[revocation]\nmax_live = 20\nper_client_max_live = 3\nper_client_rate = 1000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_has_its_own_cap_and_admins_are_not_bound_by_it() {
    let setup = setup_with(CAPS);
    let server = setup.start().await;
    let certs = Certs::new(&setup);
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(token_for(&server, &certs.demo).await);
    }

    for t in &tokens[..3] {
        revoke(&server, &certs.demo, t).await.unwrap();
    }
    let status = assert_status(
        revoke(&server, &certs.demo, &tokens[3]).await,
        Code::ResourceExhausted,
        Some("temporarily_unavailable"),
    );
    assert!(retry_after(&status) >= 1);
    assert!(
        is_active(&server, &certs.rs, &tokens[3]).await,
        "a refused revocation leaves the token active"
    );
    // Another client's own cap is its own.
    let other_token = token_for(&server, &certs.other).await;
    revoke(&server, &certs.other, &other_token).await.unwrap();

    // An admin revoking demo's token is not held to demo's cap.
    revoke(&server, &certs.admin, &tokens[3]).await.unwrap();
    for t in &tokens {
        assert!(!is_active(&server, &certs.rs, t).await);
    }
    assert!(
        !is_active(&server, &certs.rs, &tokens[0]).await,
        "nothing was evicted to make room"
    );
    let list = list_revocations(&mut server.admin(&certs.admin)).await;
    assert_eq!(list.tokens.len(), 5);
    server.stop().await;

    // The count is rebuilt from the store on start: a restart does not reset the cap.
    let server = setup.start().await;
    let fifth = token_for(&server, &certs.demo).await;
    assert_status(
        revoke(&server, &certs.demo, &fifth).await,
        Code::ResourceExhausted,
        Some("temporarily_unavailable"),
    );
    assert!(!is_active(&server, &certs.rs, &tokens[0]).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_cap_keeps_a_reserve_for_admins() {
    let setup = setup_with(CAPS);
    let server = setup.start().await;
    let certs = Certs::new(&setup);
    let mut admin = server.admin(&certs.admin);
    let other_token = token_for(&server, &certs.other).await;

    // 90% of 20 by the admin.
    let mut ids: Vec<String> = (0..18).map(|i| format!("bare-{i}")).collect();
    for id in &ids {
        assert!(revoke_id(&mut admin, id).await.unwrap() > 0);
    }
    // A client revoking its own token is now refused (the global cap, not its own: it
    // has revoked nothing yet).
    let status = assert_status(
        revoke(&server, &certs.other, &other_token).await,
        Code::ResourceExhausted,
        Some("temporarily_unavailable"),
    );
    assert!(status.message().contains("18"), "{status:?}");
    assert!(is_active(&server, &certs.rs, &other_token).await);

    // The admins' reserve: up to 20.
    for i in 18..20 {
        let id = format!("bare-{i}");
        assert!(revoke_id(&mut admin, &id).await.unwrap() > 0);
        ids.push(id);
    }
    assert_status(
        revoke_id(&mut admin, "bare-20").await,
        Code::ResourceExhausted,
        Some("temporarily_unavailable"),
    );
    assert_status(
        revoke(&server, &certs.admin, &other_token).await,
        Code::ResourceExhausted,
        Some("temporarily_unavailable"),
    );
    assert!(is_active(&server, &certs.rs, &other_token).await);
    // Re-revoking a revoked id is still an OK no-op at the cap.
    assert_eq!(revoke_id(&mut admin, "bare-0").await.unwrap(), 0);

    // Nothing was evicted.
    let mut listed = listed_token_ids(&list_revocations(&mut admin).await);
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_revocation_is_rate_limited_with_a_retry_hint() {
    let setup = setup_with("[revocation]\nper_client_rate = 1\n");
    let server = setup.start().await;
    let certs = Certs::new(&setup);
    let tokens = [
        token_for(&server, &certs.demo).await,
        token_for(&server, &certs.demo).await,
    ];

    revoke(&server, &certs.demo, &tokens[0]).await.unwrap();
    let status = assert_status(
        revoke(&server, &certs.demo, &tokens[1]).await,
        Code::ResourceExhausted,
        Some("temporarily_unavailable"),
    );
    let hint = retry_after(&status);
    assert!((1..=2).contains(&hint), "retry-after {hint}");
    assert!(is_active(&server, &certs.rs, &tokens[1]).await);
    // The admin is not rate limited.
    let admin_token = token_for(&server, &certs.demo).await;
    revoke(&server, &certs.admin, &admin_token).await.unwrap();

    // After the hint, the client may revoke again.
    tokio::time::sleep(Duration::from_secs(hint) + Duration::from_millis(100)).await;
    revoke(&server, &certs.demo, &tokens[1]).await.unwrap();
    assert!(!is_active(&server, &certs.rs, &tokens[1]).await);
    server.stop().await;
}
