//! What a `WatchRevocations` watcher learns about other clients (docs/revocation.md, "What a
//! watcher learns"): the stream is not filtered by the watcher's `introspect_audiences`, so
//! it must carry nothing but what revocation needs — token ids and their expiries, the ids of
//! cut-off and disabled clients, revoked key ids — and never a token, a claim, an audience,
//! a scope, a secret, or which client a revoked token belonged to. Checked on the encoded
//! bytes of every message, snapshot and live.

use std::time::Duration;

use prost::Message as _;
use serde_json::Value;
use tokenmint::{
    grpc::proto::{
        ClientSpec, DisableClientRequest, IssueTokenRequest, RegisterClientRequest,
        RevocationEvent, RevokeClientTokensRequest, RevokeTokenIdRequest, WatchRevocationsRequest,
        revocation_event::{ClientCutoff, ClientDisabled, Event, TokenRevoked},
    },
    pki::Issued,
};
use tokenmint_core::crypto::b64url_decode;
use tonic::Streaming;

use crate::support::*;

/// How long any one event may take to arrive.
const WAIT: Duration = Duration::from_secs(5);

const LEDGER_ID: &str = "ledger-writer";
const LEDGER_URI: &str = "spiffe://tokenmint.test/ledger-writer";
const LEDGER_AUDIENCES: [&str; 2] = [
    "https://ledger.privacy.example",
    "https://vault.privacy.example",
];
const LEDGER_SCOPES: [&str; 2] = ["ledger:append-entries", "vault:unseal-drawer"];

const AUDITOR_URI: &str = "spiffe://tokenmint.test/auditor";

/// The standard clients and an auditor that may watch (it has `introspect`) but may
/// introspect none of the ledger writer's audiences.
fn clients() -> String {
    format!(
        r#"{}
[[clients]]
id = "auditor"
san_uri = "{AUDITOR_URI}"
permissions = ["introspect"]
introspect_audiences = ["https://unrelated.example"]
"#,
        standard_clients()
    )
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&b64url_decode(payload).unwrap()).unwrap()
}

fn jti_of(token: &str) -> String {
    claims_of(token)["jti"].as_str().unwrap().to_owned()
}

fn exp_of(token: &str) -> i64 {
    claims_of(token)["exp"].as_i64().unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The next event, within `WAIT`.
async fn next(stream: &mut Streaming<RevocationEvent>) -> RevocationEvent {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event in time")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

/// Events up to and including the first that `last` accepts.
async fn until(
    stream: &mut Streaming<RevocationEvent>,
    last: impl Fn(&RevocationEvent) -> bool,
) -> Vec<RevocationEvent> {
    let mut events = Vec::new();
    loop {
        let event = next(stream).await;
        let done = last(&event);
        events.push(event);
        if done {
            return events;
        }
    }
}

async fn watch(server: &TestServer, cert: &Issued) -> Streaming<RevocationEvent> {
    server
        .revocations(cert)
        .watch_revocations(WatchRevocationsRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn ledger_token(server: &TestServer, cert: &Issued, secret: &str) -> String {
    issue(
        server,
        cert,
        IssueTokenRequest {
            client_secret: secret.to_owned(),
            scopes: LEDGER_SCOPES.map(str::to_owned).to_vec(),
            audiences: LEDGER_AUDIENCES.map(str::to_owned).to_vec(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .access_token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_learns_token_ids_expiries_and_client_ids_but_no_claims_tokens_or_secrets() {
    let setup = Setup::new(&clients());
    let server = setup.start().await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    let auditor = setup.pki.client_uri(AUDITOR_URI);
    let ledger = setup.pki.client_uri(LEDGER_URI);

    let secret = server
        .admin(&admin)
        .register_client(RegisterClientRequest {
            client: Some(ClientSpec {
                client_id: LEDGER_ID.into(),
                san_uri: LEDGER_URI.into(),
                audiences: LEDGER_AUDIENCES.map(str::to_owned).to_vec(),
                scopes: LEDGER_SCOPES.map(str::to_owned).to_vec(),
                ..Default::default()
            }),
            with_secret: true,
        })
        .await
        .unwrap()
        .into_inner()
        .client_secret;
    assert!(!secret.is_empty());

    // The auditor's live stream: its snapshot holds nothing of the ledger writer yet.
    let mut live = watch(&server, &auditor).await;
    until(&mut live, |e| {
        matches!(e.event, Some(Event::SnapshotComplete(_)))
    })
    .await;

    let own = ledger_token(&server, &ledger, &secret).await;
    let by_id = ledger_token(&server, &ledger, &secret).await;
    let by_admin = ledger_token(&server, &ledger, &secret).await;
    let cut_off = ledger_token(&server, &ledger, &secret).await;
    let tokens = [&own, &by_id, &by_admin, &cut_off];
    assert_eq!(
        claims_of(&own)["sub"],
        LEDGER_ID,
        "the subject is the client id"
    );
    // The auditor may not introspect these tokens: their audiences are not its own.
    let answer = introspect(&server, &auditor, &cut_off, None).await.unwrap();
    assert!(!answer.active, "{answer:?}");

    revoke(&server, &ledger, &own).await.unwrap();
    server
        .admin(&admin)
        .revoke_token_id(RevokeTokenIdRequest {
            token_id: jti_of(&by_id),
        })
        .await
        .unwrap();
    revoke(&server, &admin, &by_admin).await.unwrap();
    let cutoff = server
        .admin(&admin)
        .revoke_client_tokens(RevokeClientTokensRequest {
            client_id: LEDGER_ID.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .issued_at_or_before;
    server
        .admin(&admin)
        .disable_client(DisableClientRequest {
            client_id: LEDGER_ID.into(),
        })
        .await
        .unwrap();

    let disabled = |e: &RevocationEvent| {
        e.event
            == Some(Event::ClientDisabled(ClientDisabled {
                client_id: LEDGER_ID.into(),
            }))
    };
    let live_events = until(&mut live, disabled).await;
    // A watcher arriving afterwards gets the same state as a snapshot.
    let mut late = watch(&server, &auditor).await;
    let snapshot = until(&mut late, |e| {
        matches!(e.event, Some(Event::SnapshotComplete(_)))
    })
    .await;

    // What must never be on the stream.
    let thumbprint = thumbprint_of(&ledger);
    let mut never: Vec<(&str, &str)> = vec![
        ("the client secret", &secret),
        ("the bound certificate's thumbprint", &thumbprint),
        ("the client's certificate name", LEDGER_URI),
        ("the issuer", ISSUER),
    ];
    never.extend(LEDGER_AUDIENCES.map(|a| ("an audience", a)));
    never.extend(LEDGER_SCOPES.map(|s| ("a scope", s)));
    for token in tokens {
        never.push(("a whole token", token));
        never.extend(token.split('.').map(|part| ("a part of a token", part)));
    }

    for (name, events) in [("live", &live_events), ("snapshot", &snapshot)] {
        // What is revealed: each revoked jti with an expiry, the cut-off, the disabled client.
        let revoked = |token: &str| {
            events
                .iter()
                .find_map(|e| match &e.event {
                    Some(Event::TokenRevoked(t)) if t.token_id == jti_of(token) => Some(t.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{name}: no TokenRevoked for {}", jti_of(token)))
        };
        for token in [&own, &by_admin] {
            assert_eq!(
                revoked(token),
                TokenRevoked {
                    token_id: jti_of(token),
                    expires_at: exp_of(token),
                },
                "{name}"
            );
        }
        // Revoked by id alone, the expiry is unknown: held for the longest a token lives.
        assert!(revoked(&by_id).expires_at >= exp_of(&by_id), "{name}");
        let cutoffs = events
            .iter()
            .filter(|e| {
                e.event
                    == Some(Event::ClientCutoff(ClientCutoff {
                        client_id: LEDGER_ID.into(),
                        issued_at_or_before: cutoff,
                    }))
            })
            .count();
        assert_eq!(cutoffs, 1, "{name}: the cut-off");
        assert_eq!(events.iter().filter(|e| disabled(e)).count(), 1, "{name}");

        // What is not, checked on the bytes a watcher receives.
        for event in events.iter() {
            let bytes = event.encode_to_vec();
            for (what, text) in &never {
                assert!(
                    !contains(&bytes, text.as_bytes()),
                    "{name}: {what} ({text}) in {event:?}"
                );
            }
            // The client id (which is also every ledger token's `sub`) only where the proto
            // names a client: in a TokenRevoked it would tell whose token was revoked.
            let names_the_client = matches!(
                &event.event,
                Some(Event::ClientCutoff(ClientCutoff { client_id, .. })
                    | Event::ClientDisabled(ClientDisabled { client_id }))
                    if client_id == LEDGER_ID
            );
            assert_eq!(
                contains(&bytes, LEDGER_ID.as_bytes()),
                names_the_client,
                "{name}: the client id in {event:?}"
            );
            if let Some(Event::TokenRevoked(revoked)) = &event.event {
                // The id is there, and nobody who revoked it ("admin" revoked two).
                assert!(contains(&bytes, revoked.token_id.as_bytes()), "{name}");
                assert!(
                    !contains(&bytes, b"admin"),
                    "{name}: the revoker in {event:?}"
                );
            }
        }
    }
    server.stop().await;
}
