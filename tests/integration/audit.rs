//! The audit trail (SPEC §8): revocations, key rotations and admin changes are persisted with
//! the change they record and listed by `ListAuditEvents`, with their actor, and never with a
//! token or a secret.

use tokenmint::grpc::proto::{
    AuditEvent, ClientSpec, DisableClientRequest, EnableClientRequest, IssueTokenRequest,
    ListAuditEventsRequest, RegisterClientRequest, RevokeClientTokensRequest, RevokeKeyRequest,
    RevokeTokenIdRequest, RevokeTokenRequest, RotateKeysRequest, UpdateClientRequest,
};
use tonic::Code;

use crate::support::*;

const NEW_URI: &str = "spiffe://tokenmint.test/audited";

fn spec(scopes: &[&str]) -> ClientSpec {
    ClientSpec {
        client_id: "audited".into(),
        san_uri: NEW_URI.into(),
        audiences: vec![DEMO_AUDIENCE.into()],
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// Every audit event, a page of `page_size` at a time, with `filter` applied.
async fn all_events(
    server: &TestServer,
    admin: &tokenmint::pki::Issued,
    page_size: u32,
    filter: ListAuditEventsRequest,
) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = server
            .admin(admin)
            .list_audit_events(ListAuditEventsRequest {
                page_size,
                page_token: page_token.clone(),
                ..filter.clone()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= page_size.max(1) as usize);
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_rotations_and_admin_changes_are_listed_with_their_actor_and_no_secret() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    let demo = setup.pki.client_uri(DEMO_URI);
    let mut api = server.admin(&admin);

    let secret = api
        .register_client(RegisterClientRequest {
            client: Some(spec(&["orders:read"])),
            with_secret: true,
        })
        .await
        .unwrap()
        .into_inner()
        .client_secret;
    api.update_client(UpdateClientRequest {
        client: Some(spec(&["orders:read", "orders:write"])),
    })
    .await
    .unwrap();
    api.disable_client(DisableClientRequest {
        client_id: "audited".into(),
    })
    .await
    .unwrap();
    api.enable_client(EnableClientRequest {
        client_id: "audited".into(),
    })
    .await
    .unwrap();
    // A token revoked by an admin, by id, and one by its owner.
    let by_admin = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    let claims = verify_with_jwks(&by_admin, &server.jwks().await.jwks_json, DEMO_AUDIENCE);
    let jti = claims["jti"].as_str().unwrap().to_owned();
    api.revoke_token_id(RevokeTokenIdRequest {
        token_id: jti.clone(),
    })
    .await
    .unwrap();
    let by_owner = issue(&server, &demo, IssueTokenRequest::default())
        .await
        .unwrap()
        .access_token;
    let owner_jti =
        verify_with_jwks(&by_owner, &server.jwks().await.jwks_json, DEMO_AUDIENCE)["jti"]
            .as_str()
            .unwrap()
            .to_owned();
    server
        .client(&demo)
        .await
        .revoke_token(RevokeTokenRequest {
            token: by_owner.clone(),
        })
        .await
        .unwrap();
    api.revoke_client_tokens(RevokeClientTokensRequest {
        client_id: "demo".into(),
    })
    .await
    .unwrap();
    let rotated = api
        .rotate_keys(RotateKeysRequest { force: true })
        .await
        .unwrap()
        .into_inner();
    api.revoke_key(RevokeKeyRequest {
        key_id: rotated.retired_key_id.clone(),
    })
    .await
    .unwrap();

    let events = all_events(&server, &admin, 3, ListAuditEventsRequest::default()).await;
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str()))
        .collect();
    // Start-up synced the configured clients; then the calls above, in order.
    assert!(
        seen.contains(&("config", "client.synced", "demo")),
        "{seen:?}"
    );
    let after_start: Vec<_> = seen
        .iter()
        .filter(|(actor, _, _)| *actor != "config" && *actor != "tokenmint")
        .copied()
        .collect();
    assert_eq!(
        after_start,
        vec![
            ("admin", "client.registered", "audited"),
            ("admin", "client.updated", "audited"),
            ("admin", "client.disabled", "audited"),
            ("admin", "client.enabled", "audited"),
            ("admin", "token.revoked", jti.as_str()),
            ("demo", "token.revoked", owner_jti.as_str()),
            ("admin", "client.tokens_revoked", "demo"),
            ("admin", "key.rotated", rotated.current_key_id.as_str()),
            ("admin", "key.revoked", rotated.retired_key_id.as_str()),
        ]
    );
    let registered = events
        .iter()
        .find(|e| e.action == "client.registered")
        .unwrap();
    assert_eq!(registered.detail["with_secret"], "true");
    assert_eq!(registered.detail["matcher"], "san_uri");

    // Nothing secret in any event.
    let everything = format!("{events:?}");
    assert!(secret.len() >= 32);
    for (what, value) in [
        ("the client secret", secret.as_str()),
        ("a token", by_admin.as_str()),
        ("a token", by_owner.as_str()),
    ] {
        assert!(!everything.contains(value), "{what} is in the audit trail");
    }

    // Filters.
    let disabled = all_events(
        &server,
        &admin,
        100,
        ListAuditEventsRequest {
            action: "client.disabled".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].target, "audited");
    let by_demo = all_events(
        &server,
        &admin,
        100,
        ListAuditEventsRequest {
            actor: "demo".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_demo.len(), 1);
    assert_eq!(by_demo[0].action, "token.revoked");
    let about_audited = all_events(
        &server,
        &admin,
        100,
        ListAuditEventsRequest {
            target: "audited".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(about_audited.len(), 4);
    let future = all_events(
        &server,
        &admin,
        100,
        ListAuditEventsRequest {
            since: i64::MAX / 2,
            ..Default::default()
        },
    )
    .await;
    assert!(future.is_empty());

    // The trail outlives the process.
    server.stop().await;
    let server = setup.start().await;
    let again = all_events(&server, &admin, 1000, ListAuditEventsRequest::default()).await;
    assert_eq!(
        again[..events.len()],
        events[..],
        "the same events after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_list_the_audit_trail_and_bad_requests_are_refused() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    let demo = setup.pki.client_uri(DEMO_URI);

    let refused = server
        .admin(&demo)
        .list_audit_events(ListAuditEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let refused = server
        .admin(&admin)
        .list_audit_events(ListAuditEventsRequest {
            page_token: "not-a-cursor".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = server
        .admin(&admin)
        .list_audit_events(ListAuditEventsRequest {
            actor: "x".repeat(10_000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().len() < 500, "the input is not echoed");
    // The limit is 256 bytes: at it the filter is served (and matches nothing), past it refused.
    for (len, ok) in [(256, true), (257, false)] {
        let answer = server
            .admin(&admin)
            .list_audit_events(ListAuditEventsRequest {
                target: "t".repeat(len),
                ..Default::default()
            })
            .await;
        match answer {
            Ok(page) => {
                assert!(ok, "{len} bytes served");
                assert!(page.into_inner().events.is_empty());
            }
            Err(status) => {
                assert!(!ok, "{len} bytes refused: {status:?}");
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            }
        }
    }

    // A page size past the maximum is capped, not refused.
    let page = server
        .admin(&admin)
        .list_audit_events(ListAuditEventsRequest {
            page_size: u32::MAX,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !page.events.is_empty(),
        "start-up synced the configured clients"
    );
}
