//! Client administration over the API: only admins, a registered client is served at once,
//! its secret is shown once, taken ids, matchers and served audiences are refused, listing
//! pages through all, a client's place in call chains round-trips.

use tokenmint::grpc::proto::{
    ClientSpec, GetClientRequest, IssueTokenRequest, ListClientsRequest, RegisterClientRequest,
};

use crate::support::*;

const NEW_URI: &str = "spiffe://tokenmint.test/new-service";

fn spec(id: &str, uri: &str) -> ClientSpec {
    ClientSpec {
        client_id: id.into(),
        san_uri: uri.into(),
        audiences: vec![DEMO_AUDIENCE.into()],
        scopes: vec!["orders:read".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_registers_a_client_that_is_served_at_once_and_sees_its_secret_once() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let admin = setup.pki.client_uri(ADMIN_URI);
    let demo = setup.pki.client_uri(DEMO_URI);

    // Not an admin: refused, nothing registered.
    let refused = server
        .admin(&demo)
        .register_client(RegisterClientRequest {
            client: Some(spec("new-service", NEW_URI)),
            with_secret: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    let registered = server
        .admin(&admin)
        .register_client(RegisterClientRequest {
            client: Some(spec("new-service", NEW_URI)),
            with_secret: true,
        })
        .await
        .unwrap()
        .into_inner();
    let secret = registered.client_secret.clone();
    assert!(secret.len() >= 32, "a real secret");
    assert!(
        !format!("{registered:?}").contains(&secret),
        "Debug hides the secret"
    );
    let info = registered.client.unwrap();
    assert_eq!(info.client_id, "new-service");
    assert_eq!(
        (info.matcher_kind.as_str(), info.matcher_value.as_str()),
        ("san_uri", NEW_URI)
    );
    assert_eq!(info.default_audiences, vec![DEMO_AUDIENCE.to_owned()]);
    assert_eq!(info.permissions, vec!["issue".to_owned()]);
    assert!(info.enabled && info.has_secret);

    // Served at once, with its secret (a second factor) and not without it.
    let cert = setup.pki.client_uri(NEW_URI);
    let without = issue(&server, &cert, IssueTokenRequest::default()).await;
    assert_refused(without, tonic::Code::Unauthenticated, "invalid_client");
    let token = issue(
        &server,
        &cert,
        IssueTokenRequest {
            client_secret: secret.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(token.scopes, vec!["orders:read".to_owned()]);

    // Later answers describe the client and never carry the secret.
    let got = server
        .admin(&admin)
        .get_client(GetClientRequest {
            client_id: "new-service".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.has_secret);
    assert!(!format!("{got:?}").contains(&secret));
    let missing = server
        .admin(&admin)
        .get_client(GetClientRequest {
            client_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_id_or_certificate_matcher_is_refused_and_bad_specs_say_why() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let admin = server.admin(&setup.pki.client_uri(ADMIN_URI));
    let register = |spec: ClientSpec| {
        let mut admin = admin.clone();
        async move {
            admin
                .register_client(RegisterClientRequest {
                    client: Some(spec),
                    with_secret: false,
                })
                .await
        }
    };
    // demo's certificate matcher, under a new id; demo's id with a new matcher.
    let taken = register(spec("copy-of-demo", DEMO_URI)).await.unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists, "{taken:?}");
    let taken = register(spec("demo", NEW_URI)).await.unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists, "{taken:?}");
    // Two matchers, a bad permission, a lifetime above the ceiling.
    let mut two = spec("two", NEW_URI);
    two.san_dns = "two.example".into();
    let bad = register(two).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("exactly one"), "{bad:?}");
    let mut perm = spec("perm", NEW_URI);
    perm.permissions = vec!["root".into()];
    assert!(
        register(perm)
            .await
            .unwrap_err()
            .message()
            .contains("permission")
    );
    let mut long = spec("long", NEW_URI);
    long.max_lifetime = Some(prost_types::Duration {
        seconds: 10 * 3600,
        nanos: 0,
    });
    assert!(
        register(long)
            .await
            .unwrap_err()
            .message()
            .contains("tokens.max_lifetime")
    );
    // A default lifetime above the client's maximum is refused, as the config file refuses
    // it, not lowered behind the operator's back.
    let mut above = spec("above", NEW_URI);
    above.max_lifetime = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    above.default_lifetime = Some(prost_types::Duration {
        seconds: 600,
        nanos: 0,
    });
    let refused = register(above).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("default_lifetime (10m)")
            && refused.message().contains("max_lifetime (1m)"),
        "{refused:?}"
    );
    // An audience is counted in characters by every face: 512 two-byte characters fit.
    let mut wide = spec("wide", NEW_URI);
    wide.audiences = vec!["é".repeat(512)];
    register(wide).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_clients_pages_through_every_client_in_id_order() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let mut admin = server.admin(&setup.pki.client_uri(ADMIN_URI));
    for i in 0..3 {
        admin
            .register_client(RegisterClientRequest {
                client: Some(spec(
                    &format!("svc-{i}"),
                    &format!("spiffe://tokenmint.test/svc-{i}"),
                )),
                with_secret: false,
            })
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_clients(ListClientsRequest {
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.clients.len() <= 2);
        seen.extend(page.clients.into_iter().map(|c| c.client_id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // admin, demo, other, rs + svc-0..2 = 7 clients: 4 pages of at most 2.
    assert_eq!(
        seen,
        vec!["admin", "demo", "other", "rs", "svc-0", "svc-1", "svc-2"]
    );
    assert_eq!(pages, 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_replaces_the_policy_keeps_the_secret_and_refuses_a_taken_matcher() {
    use tokenmint::grpc::proto::UpdateClientRequest;
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let mut admin = server.admin(&setup.pki.client_uri(ADMIN_URI));
    let secret = admin
        .register_client(RegisterClientRequest {
            client: Some(spec("new-service", NEW_URI)),
            with_secret: true,
        })
        .await
        .unwrap()
        .into_inner()
        .client_secret;

    // A second scope, granted by default from now on.
    let mut wider = spec("new-service", NEW_URI);
    wider.scopes = vec!["orders:read".into(), "orders:write".into()];
    let updated = admin
        .update_client(UpdateClientRequest {
            client: Some(wider),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(updated.has_secret, "the secret is kept");
    let cert = setup.pki.client_uri(NEW_URI);
    let token = issue(
        &server,
        &cert,
        IssueTokenRequest {
            client_secret: secret,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        token.scopes,
        vec!["orders:read".to_owned(), "orders:write".to_owned()]
    );

    // Unknown client; another client's matcher; not an admin.
    let unknown = admin
        .update_client(UpdateClientRequest {
            client: Some(spec("nobody", "spiffe://tokenmint.test/nobody")),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let taken = admin
        .update_client(UpdateClientRequest {
            client: Some(spec("new-service", DEMO_URI)),
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists, "{taken:?}");
    let not_admin = server
        .admin(&setup.pki.client_uri(DEMO_URI))
        .update_client(UpdateClientRequest {
            client: Some(spec("demo", DEMO_URI)),
        })
        .await
        .unwrap_err();
    assert_eq!(not_admin.code(), tonic::Code::PermissionDenied);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disable_that_lands_during_an_update_is_not_undone() {
    use std::sync::{Arc, atomic::Ordering};
    use tokenmint::grpc::proto::{DisableClientRequest, UpdateClientRequest};
    use tokenmint_store::Store as _;
    let setup = Setup::new(&standard_clients());
    let store = Arc::new(crate::flaky::FlakyStore::open(&setup).await);
    let server = setup.start_with_store(store.clone()).await;
    let admin_cert = setup.pki.client_uri(ADMIN_URI);
    let mut admin = server.admin(&admin_cert);
    admin
        .register_client(RegisterClientRequest {
            client: Some(spec("new-service", NEW_URI)),
            with_secret: false,
        })
        .await
        .unwrap();

    // The update reaches its write and waits there; meanwhile the client is disabled.
    store.hold_client_writes.store(true, Ordering::SeqCst);
    let mut wider = spec("new-service", NEW_URI);
    wider.scopes = vec!["orders:read".into(), "orders:write".into()];
    let mut updating = server.admin(&admin_cert);
    let update = tokio::spawn(async move {
        updating
            .update_client(UpdateClientRequest {
                client: Some(wider),
            })
            .await
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.client_writes_waiting.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the update never wrote"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    admin
        .disable_client(DisableClientRequest {
            client_id: "new-service".into(),
        })
        .await
        .unwrap();
    store.hold_client_writes.store(false, Ordering::SeqCst);
    let updated = update.await.unwrap().unwrap().into_inner();

    // The update applied its policy and kept the disable, in the store (what a restart or
    // another replica reads) and in its answer.
    let stored = store
        .clients()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id.as_str() == "new-service")
        .unwrap();
    assert!(!stored.enabled, "the disable was undone by the update");
    assert_eq!(stored.scopes, ["orders:read", "orders:write"]);
    assert!(!updated.enabled, "{updated:?}");
    server.stop().await;
}

const GATEWAY_URI: &str = "spiffe://tokenmint.test/gateway";
const GATEWAY_AUDIENCE: &str = "https://gateway.example";
const ORDERS_AUDIENCE: &str = "https://orders.example";

/// A client with a place in call chains: it serves the gateway's audience and may call orders
/// for demo, passing on `orders:read`.
fn gateway_spec(id: &str, uri: &str) -> ClientSpec {
    ClientSpec {
        audiences: vec![DEMO_AUDIENCE.into(), ORDERS_AUDIENCE.into()],
        serves: vec![GATEWAY_AUDIENCE.into()],
        act_for: vec!["demo".into()],
        delegate_audiences: vec![ORDERS_AUDIENCE.into()],
        delegate_scopes: vec!["orders:read".into()],
        asserts_txn_subjects: true,
        ..spec(id, uri)
    }
}

/// The four lists of a client's place in call chains, as an admin sees them.
fn exchange_of(info: &tokenmint::grpc::proto::ClientInfo) -> [Vec<String>; 4] {
    [
        info.serves.clone(),
        info.act_for.clone(),
        info.delegate_audiences.clone(),
        info.delegate_scopes.clone(),
    ]
}

fn strings<const N: usize>(values: [&str; N]) -> Vec<String> {
    values.into_iter().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_place_in_call_chains_round_trips_through_get_list_and_update() {
    use tokenmint::grpc::proto::UpdateClientRequest;
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let mut admin = server.admin(&setup.pki.client_uri(ADMIN_URI));
    let expected = [
        strings([GATEWAY_AUDIENCE]),
        strings(["demo"]),
        strings([ORDERS_AUDIENCE]),
        strings(["orders:read"]),
    ];

    let registered = admin
        .register_client(RegisterClientRequest {
            client: Some(gateway_spec("gateway", GATEWAY_URI)),
            with_secret: false,
        })
        .await
        .unwrap()
        .into_inner()
        .client
        .unwrap();
    assert_eq!(exchange_of(&registered), expected, "{registered:?}");

    // What the store kept, not what the request said.
    let got = admin
        .get_client(GetClientRequest {
            client_id: "gateway".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(exchange_of(&got), expected, "{got:?}");
    assert!(got.asserts_txn_subjects, "{got:?}");
    let listed = admin
        .list_clients(ListClientsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clients;
    let gateway = listed.iter().find(|c| c.client_id == "gateway").unwrap();
    assert_eq!(exchange_of(gateway), expected, "{gateway:?}");
    // A client without one shows four empty lists.
    let demo = listed.iter().find(|c| c.client_id == "demo").unwrap();
    assert_eq!(exchange_of(demo), <[Vec<String>; 4]>::default(), "{demo:?}");
    assert!(!demo.asserts_txn_subjects, "never by default");

    // An update replaces them: it serves another audience, acts for anyone, passes on no scope.
    let moved = ClientSpec {
        serves: strings(["https://gateway-v2.example"]),
        act_for: strings(["*"]),
        delegate_scopes: vec![],
        asserts_txn_subjects: false,
        ..gateway_spec("gateway", GATEWAY_URI)
    };
    admin
        .update_client(UpdateClientRequest {
            client: Some(moved),
        })
        .await
        .unwrap();
    let got = admin
        .get_client(GetClientRequest {
            client_id: "gateway".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        exchange_of(&got),
        [
            strings(["https://gateway-v2.example"]),
            strings(["*"]),
            strings([ORDERS_AUDIENCE]),
            vec![],
        ],
        "{got:?}"
    );
    assert!(!got.asserts_txn_subjects, "{got:?}");
    // The audience it no longer serves is free for another client.
    let mut successor = spec("gateway-next", "spiffe://tokenmint.test/gateway-next");
    successor.serves = strings([GATEWAY_AUDIENCE]);
    let successor = admin
        .register_client(RegisterClientRequest {
            client: Some(successor),
            with_secret: false,
        })
        .await
        .unwrap()
        .into_inner()
        .client
        .unwrap();
    assert_eq!(successor.serves, strings([GATEWAY_AUDIENCE]));
    server.stop().await;
}

/// A second client claiming an audience `gateway` serves, by RegisterClient and by
/// UpdateClient, is refused naming the audience and who serves it; nothing is stored.
async fn an_audience_served_twice_is_refused_over(setup: &Setup) {
    use tokenmint::grpc::proto::UpdateClientRequest;
    let server = setup.start().await;
    let mut admin = server.admin(&setup.pki.client_uri(ADMIN_URI));
    admin
        .register_client(RegisterClientRequest {
            client: Some(gateway_spec("gateway", GATEWAY_URI)),
            with_secret: false,
        })
        .await
        .unwrap();

    let mut rival = spec("rival", "spiffe://tokenmint.test/rival");
    rival.serves = strings(["https://rival.example", GATEWAY_AUDIENCE]);
    let refused = admin
        .register_client(RegisterClientRequest {
            client: Some(rival.clone()),
            with_secret: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    let message = refused.message();
    assert!(
        message.contains(&format!("serves `{GATEWAY_AUDIENCE}`"))
            && message.contains("client gateway already serves"),
        "{refused:?}"
    );
    assert!(!message.contains("rival.example"), "{refused:?}");
    let missing = admin
        .get_client(GetClientRequest {
            client_id: "rival".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "nothing was stored");

    // Registered without it, then updated to claim it: refused the same way, and kept as it was.
    rival.serves = strings(["https://rival.example"]);
    admin
        .register_client(RegisterClientRequest {
            client: Some(rival.clone()),
            with_secret: false,
        })
        .await
        .unwrap();
    rival.serves.push(GATEWAY_AUDIENCE.into());
    let refused = admin
        .update_client(UpdateClientRequest {
            client: Some(rival),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().contains(&format!(
            "serves `{GATEWAY_AUDIENCE}`, which client gateway"
        )),
        "{refused:?}"
    );
    let kept = admin
        .get_client(GetClientRequest {
            client_id: "rival".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.serves, strings(["https://rival.example"]));

    // The client that serves it may keep serving it through an update.
    admin
        .update_client(UpdateClientRequest {
            client: Some(gateway_spec("gateway", GATEWAY_URI)),
        })
        .await
        .unwrap();
    // A taken matcher is still called one, whatever the client serves.
    let mut copy = spec("copy-of-demo", DEMO_URI);
    copy.serves = strings(["https://copy.example"]);
    let taken = admin
        .register_client(RegisterClientRequest {
            client: Some(copy),
            with_secret: false,
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists, "{taken:?}");
    assert!(taken.message().contains("certificate matcher"), "{taken:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audience_another_client_serves_is_refused_naming_it() {
    an_audience_served_twice_is_refused_over(&Setup::new(&standard_clients())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audience_another_client_serves_is_refused_naming_it_on_postgres() {
    let Some(url) = crate::store_contract::postgres_url() else {
        println!("skipped: TOKENMINT_TEST_POSTGRES_URL is not set");
        return;
    };
    let database = crate::store_contract::TestDatabase::create(&url).await;
    let mut setup = Setup::new(&standard_clients());
    setup.store_url = database.url.clone();
    an_audience_served_twice_is_refused_over(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_outside_the_clients_audiences_or_without_act_for_is_refused_naming_the_field() {
    let setup = Setup::new(&standard_clients());
    let server = setup.start().await;
    let admin_cert = setup.pki.client_uri(ADMIN_URI);
    let register = async |spec: ClientSpec| {
        crate::pinned::register(&server, &admin_cert, spec)
            .await
            .unwrap_err()
    };

    // An audience it may not call, even for itself.
    let outside = ClientSpec {
        delegate_audiences: strings(["https://elsewhere.example"]),
        ..gateway_spec("gateway", GATEWAY_URI)
    };
    let refused = register(outside).await;
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("delegate_audiences `https://elsewhere.example` is not in audiences"),
        "{refused:?}"
    );

    // Whom without what: act_for needs delegate_audiences.
    let whom_only = ClientSpec {
        delegate_audiences: vec![],
        delegate_scopes: vec![],
        ..gateway_spec("gateway", GATEWAY_URI)
    };
    let refused = register(whom_only).await;
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("delegate_audiences is empty")
            && refused.message().contains("act_for is set"),
        "{refused:?}"
    );

    // Nothing was registered.
    let missing = server
        .admin(&admin_cert)
        .get_client(GetClientRequest {
            client_id: "gateway".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    server.stop().await;
}
