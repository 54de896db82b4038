//! The signing-key lifecycle (SPEC §4–5) end to end: scheduled rotation and removal on a
//! manual clock, wall-clock jumps, the operator's RotateKeys/RevokeKey, WatchJwks, an
//! algorithm change, KEK rotation, a crash inside a key step, and refused policies.

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Output},
    sync::Arc,
    time::{Duration, Instant},
};

use tokenmint::{
    grpc::{
        duration_to_proto,
        proto::{
            GetJwksResponse, IssueTokenRequest, IssueTokenResponse, KeyInfo, ListKeysRequest,
            ListKeysResponse, RevokeKeyRequest, RotateKeysRequest, WatchJwksRequest,
            key_service_client::KeyServiceClient,
        },
    },
    pki::Issued,
};
use tokenmint_core::{
    clock::{Clock as _, ManualClock, SystemClock, from_unix_seconds, unix_seconds},
    crypto::Kek,
};
use tokenmint_store::{Store as _, sqlite::SqliteStore};
use tonic::{Code, Streaming};

use crate::{binary, support::*};

const HOUR: i64 = 3600;
/// The default policy (SPEC §4): rotate every 24 h, publish 1 h ahead, retain 2 h.
const ROTATION_PERIOD: i64 = 24 * HOUR;
const PUBLISH_AHEAD: i64 = HOUR;
const RETENTION: i64 = 2 * HOUR;
/// How long a stream message or a server may take (bounded waits only).
const WAIT: Duration = Duration::from_secs(5);

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.unsigned_abs())
}

/// Real now, so the certificates made in the test are valid for the TLS handshake.
fn real_now() -> i64 {
    unix_seconds(SystemClock.now())
}

/// A manual clock stopped at real now, and that time.
fn manual_clock() -> (Arc<ManualClock>, i64) {
    let t0 = real_now();
    (Arc::new(ManualClock::new(from_unix_seconds(t0))), t0)
}

async fn list_keys(server: &TestServer, admin: &Issued) -> ListKeysResponse {
    server
        .admin(admin)
        .list_keys(ListKeysRequest {})
        .await
        .unwrap()
        .into_inner()
}

fn in_state<'a>(keys: &'a [KeyInfo], state: &str) -> Vec<&'a KeyInfo> {
    keys.iter().filter(|k| k.state == state).collect()
}

/// The one key in `state`; fails if there are none or several.
fn the_one<'a>(keys: &'a [KeyInfo], state: &str) -> &'a KeyInfo {
    let found = in_state(keys, state);
    assert_eq!(found.len(), 1, "exactly one {state} key: {keys:#?}");
    found[0]
}

fn kid_set<'a>(kids: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    kids.into_iter().map(str::to_owned).collect()
}

/// The `kid`s of a JWK Set.
fn jwks_kids(jwks_json: &str) -> BTreeSet<String> {
    let set: serde_json::Value = serde_json::from_str(jwks_json).unwrap();
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// The JWK with `kid`, if published.
fn jwk<'a>(jwks: &'a serde_json::Value, kid: &str) -> Option<&'a serde_json::Value> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
}

fn header_of(token: &str) -> jsonwebtoken::Header {
    jsonwebtoken::decode_header(token).unwrap()
}

/// A token for `cert`, optionally with a requested lifetime.
async fn token(
    server: &TestServer,
    cert: &Issued,
    lifetime: Option<Duration>,
) -> IssueTokenResponse {
    let response = issue(
        server,
        cert,
        IssueTokenRequest {
            lifetime: lifetime.map(duration_to_proto),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        header_of(&response.access_token).kid.as_deref(),
        Some(response.key_id.as_str()),
        "key_id names the signing key"
    );
    response
}

/// Whether `token` introspects active for the resource server `rs`.
async fn active(server: &TestServer, rs: &Issued, token: &str) -> bool {
    introspect(server, rs, token, None).await.unwrap().active
}

/// Asserts an admin call was refused with `code` and the OAuth2 code in metadata.
fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code) -> String {
    let status = result.expect_err("the call must be refused");
    assert_eq!(status.code(), code, "status: {status:?}");
    assert!(
        status.metadata().get(OAUTH_ERROR).is_some(),
        "refusals carry the OAuth2 code: {status:?}"
    );
    status.message().to_owned()
}

const OAUTH_ERROR: &str = tokenmint::wire::OAUTH_ERROR_METADATA;

/// Scheduled rotation on the default policy, over real mTLS with a manual clock: the next key
/// is promoted after 24 h (having been published ≥ publish_ahead), the retired key stays
/// published while its tokens can be valid and is removed once retention has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_rotation_publishes_ahead_and_retires_after_retention() {
    let setup = Setup::new(&standard_clients());
    let (clock, t0) = manual_clock();
    let server = setup.start_with_clock(clock.clone()).await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);

    let start = list_keys(&server, &admin).await;
    assert_eq!(start.keys.len(), 2, "{start:#?}");
    let first = the_one(&start.keys, "current").clone();
    let second = the_one(&start.keys, "next").clone();
    assert_eq!(first.algorithm, "ES256");
    assert_eq!(second.algorithm, "ES256");
    assert_eq!(
        second.created_at, t0,
        "the next key is published from the start"
    );
    assert_eq!(
        start.next_step_at,
        t0 + ROTATION_PERIOD,
        "the first promotion is due a rotation period after the first key signs"
    );
    let jwks_start = server.jwks().await;
    assert_eq!(
        jwks_kids(&jwks_start.jwks_json),
        kid_set([first.key_id.as_str(), second.key_id.as_str()]),
        "current and next are both published"
    );

    let early = token(&server, &demo, None).await;
    assert_eq!(early.key_id, first.key_id);
    assert!(active(&server, &rs, &early.access_token).await);

    // Just before the promotion: nothing is due; a token with the client's longest lifetime
    // (10 min) will outlive the promotion.
    advance(&server, &clock, secs(ROTATION_PERIOD - 5 * 60)).await;
    server.rotator.tick().await.unwrap();
    assert_eq!(
        the_one(&list_keys(&server, &admin).await.keys, "current").key_id,
        first.key_id,
        "no promotion before the rotation period"
    );
    assert!(
        !active(&server, &rs, &early.access_token).await,
        "introspection reads the manual clock: the 5-minute token has expired"
    );
    let long = token(&server, &demo, Some(Duration::from_secs(600))).await;
    assert_eq!(long.expires_in, 600);
    assert_eq!(long.key_id, first.key_id);

    // The promotion.
    advance(&server, &clock, secs(5 * 60)).await;
    let promoted_at = t0 + ROTATION_PERIOD;
    server.rotator.tick().await.unwrap();
    let after = list_keys(&server, &admin).await;
    assert_eq!(after.keys.len(), 3, "{after:#?}");
    let current = the_one(&after.keys, "current");
    let retired = the_one(&after.keys, "retired");
    let third = the_one(&after.keys, "next");
    assert_eq!(current.key_id, second.key_id, "next became current");
    assert_eq!(retired.key_id, first.key_id, "current was retired");
    assert!(third.key_id != first.key_id && third.key_id != second.key_id);
    assert_eq!(current.activated_at, promoted_at);
    assert_eq!(retired.retired_at, promoted_at);
    assert_eq!(
        third.created_at, promoted_at,
        "a new next key at the promotion"
    );
    assert!(
        current.activated_at - current.created_at >= PUBLISH_AHEAD,
        "the new signing key was published for at least publish_ahead: {current:?}"
    );
    assert!(
        jwks_kids(&jwks_start.jwks_json).contains(&current.key_id),
        "it was in the key set long before it signed"
    );
    assert_eq!(after.current_key_age_seconds, 0);
    assert_eq!(
        after.next_step_at,
        promoted_at + RETENTION,
        "the next step is the retired key's removal"
    );

    let jwks = server.jwks().await;
    assert_ne!(jwks.version, jwks_start.version);
    assert_eq!(
        jwks_kids(&jwks.jwks_json),
        kid_set([
            current.key_id.as_str(),
            third.key_id.as_str(),
            retired.key_id.as_str()
        ]),
        "exactly current, the new next and the retired key"
    );
    // The token signed before the promotion still verifies and is active.
    assert_eq!(
        verify_with_jwks(&long.access_token, &jwks.jwks_json, DEMO_AUDIENCE)["sub"],
        "demo"
    );
    assert!(active(&server, &rs, &long.access_token).await);
    let fresh = token(&server, &demo, None).await;
    assert_eq!(
        fresh.key_id, current.key_id,
        "new tokens: the new current key"
    );
    verify_with_jwks(&fresh.access_token, &jwks.jwks_json, DEMO_AUDIENCE);

    // Through its retention the retired key stays published (the long token expires at
    // promotion + 5 min; retention outlasts any token it signed).
    advance(&server, &clock, secs(RETENTION - 1)).await;
    server.rotator.tick().await.unwrap();
    let almost = list_keys(&server, &admin).await;
    assert_eq!(the_one(&almost.keys, "retired").key_id, first.key_id);
    assert_eq!(server.jwks().await.version, jwks.version, "nothing changed");
    assert!(
        !active(&server, &rs, &long.access_token).await,
        "its own expiry has passed"
    );

    // Retention has passed: the retired key leaves the set.
    advance(&server, &clock, secs(1)).await;
    server.rotator.tick().await.unwrap();
    let removed = list_keys(&server, &admin).await;
    assert!(
        in_state(&removed.keys, "retired").is_empty(),
        "{removed:#?}"
    );
    assert!(removed.keys.iter().all(|k| k.key_id != first.key_id));
    assert_eq!(the_one(&removed.keys, "current").key_id, second.key_id);
    assert_eq!(the_one(&removed.keys, "next").key_id, third.key_id);
    let jwks_end = server.jwks().await;
    assert_ne!(jwks_end.version, jwks.version);
    assert_eq!(
        jwks_kids(&jwks_end.jwks_json),
        kid_set([second.key_id.as_str(), third.key_id.as_str()])
    );
    let long_kid = header_of(&long.access_token).kid.unwrap();
    let set: serde_json::Value = serde_json::from_str(&jwks_end.jwks_json).unwrap();
    assert!(
        jwk(&set, &long_kid).is_none(),
        "the old token's key is gone"
    );
    assert!(!active(&server, &rs, &long.access_token).await);
    server.stop().await;
}

/// Wall-clock jumps between ticks: a retired key is not removed when only the wall clock
/// has passed retention, and there is exactly one current key throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_jumps_never_remove_a_key_early() {
    let setup = Setup::new(&standard_clients());
    let (clock, t0) = manual_clock();
    let server = setup.start_with_clock(clock.clone()).await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    let demo = setup.pki.client_uri(DEMO_URI);

    let start = list_keys(&server, &admin).await;
    let first = the_one(&start.keys, "current").key_id.clone();
    let second = the_one(&start.keys, "next").key_id.clone();

    advance(&server, &clock, secs(ROTATION_PERIOD)).await;
    server.rotator.tick().await.unwrap();
    let promoted_at = t0 + ROTATION_PERIOD;
    let after = list_keys(&server, &admin).await;
    assert_eq!(the_one(&after.keys, "current").key_id, second);
    assert_eq!(the_one(&after.keys, "retired").key_id, first);
    let third = the_one(&after.keys, "next").key_id.clone();
    let jwks = server.jwks().await;

    // Checks the state after a tick at wall time `wall`: the same three keys, one current.
    let check = async |wall: i64| {
        clock.set(from_unix_seconds(wall));
        server.rotator.tick().await.unwrap();
        let keys = list_keys(&server, &admin).await.keys;
        assert_eq!(keys.len(), 3, "at {wall}: {keys:#?}");
        assert_eq!(the_one(&keys, "current").key_id, second, "at {wall}");
        assert_eq!(the_one(&keys, "retired").key_id, first, "at {wall}");
        assert_eq!(the_one(&keys, "next").key_id, third, "at {wall}");
        assert_eq!(
            server.jwks().await.version,
            jwks.version,
            "at {wall}: the published set is unchanged"
        );
        assert_eq!(
            token(&server, &demo, None).await.key_id,
            second,
            "at {wall}"
        );
    };
    for _ in 0..2 {
        check(promoted_at + HOUR).await;
        check(promoted_at - HOUR).await;
    }
    // The wall clock jumps past retention (and past it by far) with no time elapsed.
    check(promoted_at + RETENTION).await;
    check(promoted_at + RETENTION + 3 * HOUR).await;
    check(promoted_at).await;

    // Retention elapses on both clocks: now the retired key goes.
    advance(&server, &clock, secs(RETENTION)).await;
    server.rotator.tick().await.unwrap();
    let keys = list_keys(&server, &admin).await.keys;
    assert_eq!(keys.len(), 2, "{keys:#?}");
    assert_eq!(the_one(&keys, "current").key_id, second);
    assert_eq!(the_one(&keys, "next").key_id, third);
    assert_eq!(
        jwks_kids(&server.jwks().await.jwks_json),
        kid_set([second.as_str(), third.as_str()])
    );
    server.stop().await;
}

/// RotateKeys and RevokeKey over real mTLS: admin only; publish_ahead enforced unless forced;
/// a revoked key leaves the set and its tokens are inactive at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_rotate_and_revoke_keys() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let admin_cert = setup.pki.client_uri(ADMIN_URI);
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let mut admin = server.admin(&admin_cert);

    let start = list_keys(&server, &admin_cert).await;
    let first = the_one(&start.keys, "current").key_id.clone();
    let second = the_one(&start.keys, "next").key_id.clone();

    for cert in [&demo, &rs] {
        let mut other = server.admin(cert);
        for force in [false, true] {
            let message = assert_status(
                other.rotate_keys(RotateKeysRequest { force }).await,
                Code::PermissionDenied,
            );
            assert!(message.contains("admin"), "{message}");
        }
        assert_status(
            other
                .revoke_key(RevokeKeyRequest {
                    key_id: first.clone(),
                })
                .await,
            Code::PermissionDenied,
        );
        assert_status(
            other.list_keys(ListKeysRequest {}).await,
            Code::PermissionDenied,
        );
    }
    let unchanged = list_keys(&server, &admin_cert).await;
    assert_eq!(unchanged.keys, start.keys, "refused calls changed nothing");

    // Too early without force: the next key has been published for ~0 s.
    let message = assert_status(
        admin.rotate_keys(RotateKeysRequest { force: false }).await,
        Code::FailedPrecondition,
    );
    assert!(message.contains("keys.publish_ahead"), "{message}");
    assert!(message.contains(&second), "names the next key: {message}");
    assert!(
        message.contains("--force"),
        "says how to override: {message}"
    );
    assert_eq!(list_keys(&server, &admin_cert).await.keys, start.keys);

    let old = token(&server, &demo, Some(Duration::from_secs(600))).await;
    assert_eq!(old.key_id, first);

    // Forced: the emergency exception, with a warning.
    let rotated = admin
        .rotate_keys(RotateKeysRequest { force: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.current_key_id, second);
    assert_eq!(rotated.retired_key_id, first);
    assert!(rotated.forced_early);
    assert!(
        rotated.warning.contains("publish_ahead") && rotated.warning.contains("jwks_max_age"),
        "{}",
        rotated.warning
    );
    let keys = list_keys(&server, &admin_cert).await.keys;
    assert_eq!(the_one(&keys, "current").key_id, second);
    assert_eq!(the_one(&keys, "retired").key_id, first);
    let third = the_one(&keys, "next").key_id.clone();

    let signed_by_second = token(&server, &demo, None).await;
    assert_eq!(signed_by_second.key_id, second);
    let jwks = server.jwks().await;
    verify_with_jwks(
        &signed_by_second.access_token,
        &jwks.jwks_json,
        DEMO_AUDIENCE,
    );
    verify_with_jwks(&old.access_token, &jwks.jwks_json, DEMO_AUDIENCE);
    assert!(active(&server, &rs, &signed_by_second.access_token).await);
    assert!(active(&server, &rs, &old.access_token).await);

    // Revoking the current key: out of the set and inactive at once; next signs.
    let revoked = admin
        .revoke_key(RevokeKeyRequest {
            key_id: second.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.sequence > 0);
    let jwks_after = server.jwks().await;
    assert_ne!(jwks_after.version, jwks.version);
    let published = jwks_after.jwks_json.clone();
    assert!(!jwks_kids(&published).contains(&second), "{published}");
    assert!(
        !active(&server, &rs, &signed_by_second.access_token).await,
        "a token the revoked key signed is inactive at once"
    );
    assert!(
        active(&server, &rs, &old.access_token).await,
        "tokens of other keys are not affected"
    );
    let promoted = token(&server, &demo, None).await;
    assert_eq!(promoted.key_id, third, "the next key signs from now on");
    verify_with_jwks(&promoted.access_token, &published, DEMO_AUDIENCE);
    let keys = list_keys(&server, &admin_cert).await.keys;
    let revoked_info = keys.iter().find(|k| k.key_id == second).unwrap();
    assert_eq!(revoked_info.state, "revoked");
    assert!(revoked_info.revoked_at > 0);
    assert_eq!(the_one(&keys, "current").key_id, third);
    assert_eq!(the_one(&keys, "retired").key_id, first);
    let fourth = the_one(&keys, "next").key_id.clone();
    assert_eq!(
        jwks_kids(&published),
        kid_set([first.as_str(), third.as_str(), fourth.as_str()])
    );

    // Unknown key: NOT_FOUND. Already revoked: nothing to do, sequence 0.
    let message = assert_status(
        admin
            .revoke_key(RevokeKeyRequest {
                key_id: "no-such-key".into(),
            })
            .await,
        Code::NotFound,
    );
    assert!(message.contains("no-such-key"), "{message}");
    let again = admin
        .revoke_key(RevokeKeyRequest {
            key_id: second.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.sequence, 0);
    assert_eq!(server.jwks().await.version, jwks_after.version);

    // Revoking the retired key: its tokens are inactive too; the signer is unchanged.
    let retired = admin
        .revoke_key(RevokeKeyRequest {
            key_id: first.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(retired.sequence > revoked.sequence);
    assert!(!active(&server, &rs, &old.access_token).await);
    assert!(!jwks_kids(&server.jwks().await.jwks_json).contains(&first));
    assert_eq!(token(&server, &demo, None).await.key_id, third);

    // Revoking the next key: a new next key replaces it; the signer is unchanged.
    admin
        .revoke_key(RevokeKeyRequest {
            key_id: fourth.clone(),
        })
        .await
        .unwrap();
    let keys = list_keys(&server, &admin_cert).await.keys;
    assert_eq!(the_one(&keys, "current").key_id, third);
    let fifth = the_one(&keys, "next").key_id.clone();
    assert_ne!(fifth, fourth);
    assert_eq!(
        jwks_kids(&server.jwks().await.jwks_json),
        kid_set([third.as_str(), fifth.as_str()])
    );
    assert_eq!(token(&server, &demo, None).await.key_id, third);
    server.stop().await;
}

/// RotateKeys without force succeeds once the next key has been published for
/// publish_ahead, with no warning; the key it creates must wait publish_ahead in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rotation_on_time_needs_no_force() {
    let setup = Setup::new(&standard_clients());
    let (clock, t0) = manual_clock();
    let server = setup.start_with_clock(clock.clone()).await;
    let admin_cert = setup.pki.client_uri(ADMIN_URI);
    let demo = setup.pki.client_uri(DEMO_URI);
    let mut admin = server.admin(&admin_cert);
    let start = list_keys(&server, &admin_cert).await.keys;
    let first = the_one(&start, "current").key_id.clone();
    let second = the_one(&start, "next").key_id.clone();

    advance(&server, &clock, secs(PUBLISH_AHEAD - 1)).await;
    let message = assert_status(
        admin.rotate_keys(RotateKeysRequest { force: false }).await,
        Code::FailedPrecondition,
    );
    assert!(message.contains("keys.publish_ahead"), "{message}");

    advance(&server, &clock, secs(1)).await;
    let rotated = admin
        .rotate_keys(RotateKeysRequest { force: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.current_key_id, second);
    assert_eq!(rotated.retired_key_id, first);
    assert!(!rotated.forced_early);
    assert!(rotated.warning.is_empty(), "{}", rotated.warning);
    let keys = list_keys(&server, &admin_cert).await.keys;
    assert_eq!(the_one(&keys, "current").activated_at, t0 + PUBLISH_AHEAD);
    assert_eq!(token(&server, &demo, None).await.key_id, second);

    // The new next key was just created: too early again.
    assert_status(
        admin.rotate_keys(RotateKeysRequest { force: false }).await,
        Code::FailedPrecondition,
    );
    server.stop().await;
}

async fn next_set(stream: &mut Streaming<GetJwksResponse>) -> GetJwksResponse {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a key set in time")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

async fn assert_no_set(stream: &mut Streaming<GetJwksResponse>) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
        panic!("expected no key set, got {item:?}");
    }
}

/// WatchJwks needs no certificate: the set now, then each change, and nothing when nothing
/// changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_jwks_sends_the_set_then_each_change() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let admin_cert = setup.pki.client_uri(ADMIN_URI);
    let mut admin = server.admin(&admin_cert);

    let mut stream = tokio::time::timeout(
        WAIT,
        KeyServiceClient::new(server.public_channel()).watch_jwks(WatchJwksRequest::default()),
    )
    .await
    .expect("the watch starts in time")
    .unwrap()
    .into_inner();
    let first = next_set(&mut stream).await;
    let now = server.jwks().await;
    assert_eq!(first, now, "the first message is the current set");
    assert_no_set(&mut stream).await;

    let rotated = admin
        .rotate_keys(RotateKeysRequest { force: true })
        .await
        .unwrap()
        .into_inner();
    let second = next_set(&mut stream).await;
    assert_ne!(second.version, first.version);
    assert_eq!(second, server.jwks().await);
    assert_eq!(jwks_kids(&second.jwks_json).len(), 3);

    admin
        .revoke_key(RevokeKeyRequest {
            key_id: rotated.retired_key_id.clone(),
        })
        .await
        .unwrap();
    let third = next_set(&mut stream).await;
    assert_ne!(third.version, second.version);
    assert_eq!(third, server.jwks().await);
    assert!(!jwks_kids(&third.jwks_json).contains(&rotated.retired_key_id));

    // A tick with nothing due, and a republish of the same ring, send nothing.
    assert!(server.rotator.tick().await.unwrap().is_empty());
    server.rotator.publish().await.unwrap();
    assert_no_set(&mut stream).await;
    assert_eq!(server.jwks().await, third);
    server.stop().await;
}

/// Asked for, WatchJwks sends a heartbeat at least every second: no key set, the current
/// version unchanged, and when the set was last known current. A change still comes as a
/// whole set. Not asked for, nothing but sets arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_jwks_heartbeats_only_when_asked_for() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let admin_cert = setup.pki.client_uri(ADMIN_URI);
    let mut admin = server.admin(&admin_cert);
    let mut client = KeyServiceClient::new(server.public_channel());
    let mut stream = client
        .watch_jwks(WatchJwksRequest {
            progress: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = next_set(&mut stream).await;
    assert_eq!(first, server.jwks().await);
    for _ in 0..2 {
        let started = Instant::now();
        let beat = next_set(&mut stream).await;
        assert!(started.elapsed() < Duration::from_millis(2500));
        assert!(beat.jwks_json.is_empty(), "{beat:?}");
        assert_eq!(beat.version, first.version);
        let as_of = beat.progress.unwrap().as_of.unwrap();
        let age = unix_seconds(SystemClock.now()) - as_of.seconds;
        assert!((0..5).contains(&age), "as_of is recent: {age} s");
    }
    admin
        .rotate_keys(RotateKeysRequest { force: true })
        .await
        .unwrap();
    let changed = loop {
        let message = next_set(&mut stream).await;
        if message.progress.is_none() {
            break message;
        }
    };
    assert_ne!(changed.version, first.version);
    assert_eq!(changed, server.jwks().await);

    let mut silent = client
        .watch_jwks(WatchJwksRequest::default())
        .await
        .unwrap()
        .into_inner();
    next_set(&mut silent).await;
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(1500), silent.message()).await {
        panic!("no heartbeat for a watcher that did not ask: {item:?}");
    }
    server.stop().await;
}

/// Changing `algorithm` replaces `next` at start; the new-algorithm key is promoted on the
/// schedule like any other, and tokens of the old algorithm verify until their key goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_algorithm_change_takes_effect_at_the_next_promotion() {
    let mut setup = Setup::new(&standard_clients());
    let (clock, t0) = manual_clock();
    let admin = setup.pki.client_uri(ADMIN_URI);
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);

    let server = setup.start_with_clock(clock.clone()).await;
    let start = list_keys(&server, &admin).await.keys;
    assert!(start.iter().all(|k| k.algorithm == "ES256"), "{start:#?}");
    let first = the_one(&start, "current").key_id.clone();
    let es_next = the_one(&start, "next").key_id.clone();
    let es_token = token(&server, &demo, Some(Duration::from_secs(600))).await;
    assert_eq!(
        header_of(&es_token.access_token).alg,
        jsonwebtoken::Algorithm::ES256
    );
    server.stop().await;

    clock.advance(secs(60));
    setup.extra_toml = "algorithm = \"EdDSA\"".into();
    let server = setup.start_with_clock(clock.clone()).await;
    let keys = list_keys(&server, &admin).await.keys;
    assert_eq!(keys.len(), 2, "{keys:#?}");
    let current = the_one(&keys, "current");
    let next = the_one(&keys, "next");
    assert_eq!(current.key_id, first, "the signing key is not replaced");
    assert_eq!(current.algorithm, "ES256");
    assert_eq!(
        next.algorithm, "EdDSA",
        "next is replaced in the new algorithm"
    );
    assert_ne!(next.key_id, es_next);
    assert_eq!(next.created_at, t0 + 60, "replaced at start");
    let ed_next = next.key_id.clone();
    let jwks = server.jwks().await;
    assert_eq!(
        jwks_kids(&jwks.jwks_json),
        kid_set([first.as_str(), ed_next.as_str()]),
        "the replaced next key is no longer published"
    );
    let set: serde_json::Value = serde_json::from_str(&jwks.jwks_json).unwrap();
    assert_eq!(jwk(&set, &ed_next).unwrap()["kty"], "OKP");
    assert_eq!(jwk(&set, &ed_next).unwrap()["alg"], "EdDSA");
    verify_with_jwks(&es_token.access_token, &jwks.jwks_json, DEMO_AUDIENCE);
    assert!(active(&server, &rs, &es_token.access_token).await);
    assert_eq!(
        token(&server, &demo, None).await.key_id,
        first,
        "ES256 signs until the promotion"
    );

    // The emergency path promotes the EdDSA key now.
    let rotated = server
        .admin(&admin)
        .rotate_keys(RotateKeysRequest { force: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.current_key_id, ed_next);
    assert!(rotated.forced_early);
    let keys = list_keys(&server, &admin).await.keys;
    let current = the_one(&keys, "current");
    assert_eq!(current.key_id, ed_next);
    assert_eq!(current.algorithm, "EdDSA");
    assert_eq!(the_one(&keys, "retired").key_id, first);
    assert_eq!(the_one(&keys, "next").algorithm, "EdDSA");

    let ed_token = token(&server, &demo, None).await;
    assert_eq!(ed_token.key_id, ed_next);
    assert_eq!(
        header_of(&ed_token.access_token).alg,
        jsonwebtoken::Algorithm::EdDSA
    );
    let jwks = server.jwks().await;
    verify_with_jwks(&ed_token.access_token, &jwks.jwks_json, DEMO_AUDIENCE);
    assert!(active(&server, &rs, &ed_token.access_token).await);
    // The ES256 token still verifies against the published set and is active.
    verify_with_jwks(&es_token.access_token, &jwks.jwks_json, DEMO_AUDIENCE);
    assert!(active(&server, &rs, &es_token.access_token).await);
    assert_eq!(
        jwk(&serde_json::from_str(&jwks.jwks_json).unwrap(), &first).unwrap()["kty"],
        "EC"
    );
    server.stop().await;
}

/// A next key younger than publish_ahead is not promoted when the rotation period is up (here
/// the next key of a new algorithm, configured shortly before the scheduled rotation): the
/// promotion waits until it has been published for publish_ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_young_next_key_waits_for_publish_ahead() {
    let mut setup = Setup::new(&standard_clients());
    let (clock, t0) = manual_clock();
    let admin = setup.pki.client_uri(ADMIN_URI);
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);

    let server = setup.start_with_clock(clock.clone()).await;
    let first = the_one(&list_keys(&server, &admin).await.keys, "current")
        .key_id
        .clone();
    server.stop().await;

    // Half an hour before the scheduled rotation, the algorithm changes.
    clock.advance(secs(ROTATION_PERIOD - 30 * 60));
    let changed_at = t0 + ROTATION_PERIOD - 30 * 60;
    setup.extra_toml = "algorithm = \"EdDSA\"".into();
    let server = setup.start_with_clock(clock.clone()).await;
    let listed = list_keys(&server, &admin).await;
    let next = the_one(&listed.keys, "next").clone();
    assert_eq!(next.algorithm, "EdDSA");
    assert_eq!(next.created_at, changed_at);
    assert_eq!(
        listed.next_step_at,
        changed_at + PUBLISH_AHEAD,
        "the promotion waits for publish_ahead"
    );

    // The rotation period is up, but the next key is only 30 minutes old.
    advance(&server, &clock, secs(30 * 60)).await;
    server.rotator.tick().await.unwrap();
    assert_eq!(
        the_one(&list_keys(&server, &admin).await.keys, "current").key_id,
        first
    );
    advance(&server, &clock, secs(25 * 60)).await;
    let es_token = token(&server, &demo, Some(Duration::from_secs(600))).await;
    assert_eq!(es_token.key_id, first);
    advance(&server, &clock, secs(5 * 60 - 1)).await;
    server.rotator.tick().await.unwrap();
    assert_eq!(
        the_one(&list_keys(&server, &admin).await.keys, "current").key_id,
        first,
        "one second short of publish_ahead"
    );

    advance(&server, &clock, secs(1)).await;
    server.rotator.tick().await.unwrap();
    let keys = list_keys(&server, &admin).await.keys;
    let current = the_one(&keys, "current");
    assert_eq!(current.key_id, next.key_id);
    assert_eq!(current.activated_at - current.created_at, PUBLISH_AHEAD);
    assert_eq!(the_one(&keys, "retired").key_id, first);
    let ed_token = token(&server, &demo, None).await;
    assert_eq!(ed_token.key_id, next.key_id);
    assert_eq!(
        header_of(&ed_token.access_token).alg,
        jsonwebtoken::Algorithm::EdDSA
    );
    let jwks = server.jwks().await;
    verify_with_jwks(&es_token.access_token, &jwks.jwks_json, DEMO_AUDIENCE);
    verify_with_jwks(&ed_token.access_token, &jwks.jwks_json, DEMO_AUDIENCE);
    assert!(active(&server, &rs, &es_token.access_token).await);
    assert!(active(&server, &rs, &ed_token.access_token).await);
    server.stop().await;
}

/// Registers a client "secretive" with a secret, as `tokenmint client add --with-secret`.
async fn register_secretive(setup: &Setup) -> String {
    let config = setup.config();
    let keks = tokenmint::server::load_keks(&config.keys.kek_files, None).unwrap();
    let store = tokenmint::server::open_store(&config).await.unwrap();
    let hasher = tokenmint::server::load_pepper(store.as_ref(), &keks)
        .await
        .unwrap();
    let secret = tokenmint_core::crypto::generate_client_secret().unwrap();
    let mut client = config.clients[0].clone();
    client.id = tokenmint_core::client::ClientId::try_new("secretive").unwrap();
    client.matcher = tokenmint_core::identity::CertificateMatcher::try_san_uri(
        "spiffe://tokenmint.test/secretive",
    )
    .unwrap();
    client.secret_hash = Some(hasher.hash(&secret));
    store
        .insert_client(
            &client,
            tokenmint_core::clock::UnixTime::EPOCH,
            &test_audit(),
        )
        .await
        .unwrap();
    secret.to_string()
}

/// `kek rotate` re-seals the keys and the pepper under the newest KEK: the server then starts
/// with only that KEK, keeps its keys, and secrets still check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kek_rotation_lets_the_old_kek_go() {
    let setup = Setup::new(&standard_clients());
    let secret = register_secretive(&setup).await;
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let secretive = setup.pki.client_uri("spiffe://tokenmint.test/secretive");
    let with_secret = |secret: &str| IssueTokenRequest {
        client_secret: secret.to_owned(),
        ..Default::default()
    };

    let server = setup.start().await;
    let old_token = token(&server, &demo, None).await;
    issue(&server, &secretive, with_secret(&secret))
        .await
        .unwrap();
    let jwks_before = server.jwks().await;
    server.stop().await;

    let old_path = setup.path().join("tokenmint.kek");
    let old_text = std::fs::read_to_string(&old_path).unwrap();
    let old_kek = Kek::try_from_base64(&old_text).unwrap();
    let new_kek = Kek::generate().unwrap();
    let new_path = setup.path().join("new.kek");
    std::fs::write(&new_path, new_kek.to_base64().as_bytes()).unwrap();

    // Before the rotation, the new KEK alone cannot open anything, and says so.
    std::fs::write(&old_path, new_kek.to_base64().as_bytes()).unwrap();
    let error = setup.prepare().await.unwrap_err().to_string();
    assert!(error.contains(old_kek.id()), "{error}");
    std::fs::write(&old_path, old_text.as_bytes()).unwrap();

    let config = setup.config();
    let keks = tokenmint::server::load_keks(&[&new_path, &old_path], None).unwrap();
    assert_eq!(keks.newest().id(), new_kek.id());
    let store = tokenmint::server::open_store(&config).await.unwrap();
    let done = tokenmint::server::rotate_kek(
        store.as_ref(),
        &keks,
        tokenmint_core::clock::UnixTime::EPOCH,
    )
    .await
    .unwrap();
    assert_eq!(done.keys, 2);
    assert!(done.pepper);
    drop(store);
    let stored = SqliteStore::open(&setup.path().join("tokenmint.db"))
        .await
        .unwrap();
    for key in stored.keys().await.unwrap() {
        assert_eq!(key.sealed().unwrap().kek_id, new_kek.id(), "{}", key.kid);
    }
    assert_eq!(stored.pepper().await.unwrap().unwrap().kek_id, new_kek.id());
    drop(stored);

    // Only the new KEK from now on.
    std::fs::write(&old_path, new_kek.to_base64().as_bytes()).unwrap();
    std::fs::remove_file(&new_path).unwrap();
    let server = setup.start().await;
    let jwks = server.jwks().await;
    assert_eq!(jwks.version, jwks_before.version, "the same keys");
    verify_with_jwks(&old_token.access_token, &jwks.jwks_json, DEMO_AUDIENCE);
    assert!(active(&server, &rs, &old_token.access_token).await);
    let fresh = token(&server, &demo, None).await;
    assert_eq!(fresh.key_id, old_token.key_id, "the same key signs");
    let got = issue(&server, &secretive, with_secret(&secret))
        .await
        .unwrap();
    assert_eq!(
        verify_with_jwks(&got.access_token, &jwks.jwks_json, DEMO_AUDIENCE)["sub"],
        "secretive"
    );
    assert_refused(
        issue(&server, &secretive, with_secret(&format!("{secret}x"))).await,
        Code::Unauthenticated,
        "invalid_client",
    );
    server.stop().await;
}

// --- the real binary ---

const BIN: &str = env!("CARGO_BIN_EXE_tokenmint");

use binary::{free_port, kids_in, parse_keys, stop};

fn tokenmint(dir: &Path) -> Command {
    binary::command(Path::new(BIN), dir)
}

fn spawn_server(dir: &Path, port: u16, log: &str, failpoint: Option<&str>) -> binary::Running {
    binary::spawn_server(Path::new(BIN), dir, port, log, failpoint, &[])
}

fn admin_cli(dir: &Path, port: u16, args: &[&str]) -> Output {
    binary::admin_cli(Path::new(BIN), dir, port, args)
}

fn keys_list_when_up(
    dir: &Path,
    port: u16,
    server: &mut binary::Running,
    log: &str,
) -> Vec<(String, String, String)> {
    binary::keys_list_when_up(Path::new(BIN), dir, port, server, log)
}

/// A crash inside a key step (the real binary, aborted by a failpoint inside the
/// transaction) leaves the keys as they were; after a restart the rotation succeeds.
#[test]
fn a_crash_inside_a_key_step_leaves_the_keys_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    let mut server = spawn_server(dir, port, "server.log", Some("key-step"));
    let before = keys_list_when_up(dir, port, &mut server, "server.log");
    assert_eq!(before.len(), 2, "{before:?}");
    let current = kids_in(&before, "current");
    let next = kids_in(&before, "next");
    assert_eq!((current.len(), next.len()), (1, 1), "{before:?}");

    let rotate = admin_cli(dir, port, &["keys", "rotate", "--force"]);
    assert!(
        !rotate.status.success(),
        "the server aborted mid-step: {}",
        String::from_utf8_lossy(&rotate.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            panic!("the failpoint did not abort the server");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "aborted: {status:?}");
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap();
    assert!(log.contains("key-step"), "the failpoint fired: {log}");

    let port = free_port();
    let mut server = spawn_server(dir, port, "server2.log", None);
    let after = keys_list_when_up(dir, port, &mut server, "server2.log");
    assert_eq!(
        after, before,
        "the transaction rolled back: nothing half-written"
    );

    let rotate = admin_cli(dir, port, &["keys", "rotate", "--force"]);
    assert!(
        rotate.status.success(),
        "{}",
        String::from_utf8_lossy(&rotate.stderr)
    );
    let stdout = String::from_utf8_lossy(&rotate.stdout);
    assert!(
        stdout.contains(&format!("{} signs now", next[0])),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&rotate.stderr).contains("warning"),
        "a forced rotation warns"
    );
    let rotated = parse_keys(&admin_cli(dir, port, &["keys", "list"]));
    assert_eq!(kids_in(&rotated, "current"), next, "{rotated:?}");
    assert_eq!(kids_in(&rotated, "retired"), current, "{rotated:?}");
    assert_eq!(kids_in(&rotated, "next").len(), 1, "{rotated:?}");

    let issued = admin_cli(dir, port, &["token", "issue"]);
    stop(server);
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let response: serde_json::Value = serde_json::from_slice(&issued.stdout).unwrap();
    assert_eq!(response["key_id"], next[0].as_str());
}

/// Policies that would let a verifier meet an unknown key, or drop a key while its tokens are
/// valid, are refused with the field named.
#[test]
fn check_config_refuses_unsafe_key_policies() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        std::fs::write(dir.path().join("tokenmint.toml"), text).unwrap();
        tokenmint(dir.path())
            .args(["check-config"])
            .output()
            .unwrap()
    };
    let refused = [
        (
            "[keys]\npublish_ahead = \"9m\"\njwks_max_age = \"5m\"\n",
            "keys.publish_ahead",
        ),
        (
            "[keys]\npublish_ahead = \"10m\"\njwks_max_age = \"5m1s\"\n",
            "keys.publish_ahead",
        ),
        ("[keys]\nretention = \"1h\"\n", "keys.retention"),
        (
            "[tokens]\nmax_lifetime = \"2h\"\n[keys]\nretention = \"2h29s\"\n",
            "keys.retention",
        ),
        ("[keys]\nrotation_period = \"1h\"\n", "keys.rotation_period"),
        (
            "[keys]\nrotation_period = \"30m\"\npublish_ahead = \"1h\"\n",
            "keys.rotation_period",
        ),
    ];
    for (text, field) in refused {
        let output = check(text);
        assert!(!output.status.success(), "{text} should be refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(field),
            "error for {text:?} names {field}: {stderr}"
        );
    }
    // The limits themselves are accepted.
    let output = check(
        "[tokens]\nmax_lifetime = \"1h\"\nleeway = \"30s\"\n\
         [keys]\njwks_max_age = \"5m\"\npublish_ahead = \"10m\"\n\
         rotation_period = \"10m1s\"\nretention = \"1h6m\"\n",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `kek rotate` run while a replica still has only the old KEK: that replica's next ring
/// reload fails, and it says so — not ready (gRPC health `""` NOT_SERVING), and a key step it
/// is asked for answers that the step was saved, never that nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_load_the_stored_keys_is_not_ready_and_says_what_was_saved() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let mut setup = Setup::new(&standard_clients());
    setup.store_toml = "catch_up_interval = \"200ms\"\n".into();
    let server = setup.start().await;
    let admin = setup.pki.client_uri(ADMIN_URI);

    // Another operator re-seals the store under a new KEK this server does not have.
    let old_path = setup.path().join("tokenmint.kek");
    let new_path = setup.path().join("new.kek");
    std::fs::write(&new_path, Kek::generate().unwrap().to_base64().as_bytes()).unwrap();
    let keks = tokenmint::server::load_keks(&[&new_path, &old_path], None).unwrap();
    let store = tokenmint::server::open_store(&setup.config())
        .await
        .unwrap();
    tokenmint::server::rotate_kek(
        store.as_ref(),
        &keks,
        tokenmint_core::clock::UnixTime::EPOCH,
    )
    .await
    .unwrap();
    drop(store);

    // A key step: saved in the store, and the answer says so.
    let refused = server
        .admin(&admin)
        .rotate_keys(RotateKeysRequest { force: true })
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("was saved")
            && !refused.message().contains("nothing was changed"),
        "{refused:?}"
    );
    // Not ready, within a few catch-up rounds.
    let mut health = HealthClient::new(server.public_channel());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == ServingStatus::NotServing as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready with keys it cannot load"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

/// The README's safe order for a running fleet: the new KEK first everywhere (new keys are
/// sealed under it), `kek rotate` while serving (the server stays ready and keeps serving),
/// then the old KEK dropped (the server starts and every token still verifies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kek_rotation_in_the_safe_order_keeps_a_running_server_ready() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let mut setup = Setup::new(&standard_clients());
    setup.store_toml = "catch_up_interval = \"200ms\"\n".into();
    let demo = setup.pki.client_uri(DEMO_URI);
    let rs = setup.pki.client_uri(RS_URI);
    let admin = setup.pki.client_uri(ADMIN_URI);
    let server = setup.start().await;
    let old_token = token(&server, &demo, None).await;
    server.stop().await;

    // 1. Both KEKs, the new one first: a key made now is sealed under it.
    let new_kek = Kek::generate().unwrap();
    std::fs::write(setup.path().join("new.kek"), new_kek.to_base64().as_bytes()).unwrap();
    setup.kek_files = vec!["new.kek".into(), "tokenmint.kek".into()];
    let server = setup.start().await;
    let stored = SqliteStore::open(&setup.path().join("tokenmint.db"))
        .await
        .unwrap();
    let before: BTreeSet<String> = stored
        .keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid.to_string())
        .collect();
    server
        .admin(&admin)
        .rotate_keys(RotateKeysRequest { force: true })
        .await
        .unwrap();
    let made: Vec<_> = stored
        .keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| !before.contains(&k.kid.to_string()))
        .collect();
    assert_eq!(made.len(), 1, "the rotation made a new next key");
    assert_eq!(
        made[0].sealed().unwrap().kek_id,
        new_kek.id(),
        "a new key under the new KEK"
    );

    // 2. kek rotate while it serves: it stays ready and keeps issuing.
    let config = setup.config();
    let keks = tokenmint::server::load_keks(&config.keys.kek_files, None).unwrap();
    tokenmint::server::rotate_kek(&stored, &keks, tokenmint_core::clock::UnixTime::EPOCH)
        .await
        .unwrap();
    for key in stored.keys().await.unwrap() {
        assert_eq!(key.sealed().unwrap().kek_id, new_kek.id(), "{}", key.kid);
    }
    drop(stored);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = HealthClient::new(server.public_channel())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    token(&server, &demo, None).await;
    server.stop().await;

    // 3. The old KEK dropped: it starts, and the token from before still verifies.
    setup.kek_files = vec!["new.kek".into()];
    let server = setup.start().await;
    token(&server, &demo, None).await;
    assert!(
        introspect(&server, &rs, &old_token.access_token, None)
            .await
            .unwrap()
            .active
    );
    server.stop().await;
}
