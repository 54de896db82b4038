//! What the in-process benches share: an issuing client and a resource server with real
//! X.509 certificates, a key ring, claims, and an `Authority` over them built as
//! `server::prepare_with_store` builds it, minus the store. Included by `paths.rs` (criterion)
//! and `instructions.rs` (callgrind) with `#[path]`, so both measure the same set-up.

use std::{sync::Arc, time::Duration};

use tokenmint::{
    authority::{Authority, Parts},
    pki::{CertificateAuthority, LeafSpec},
    server::VERIFIED_CACHE_CAPACITY,
};
use tokenmint_core::{
    audit::{IssuanceAudit, IssuanceMode},
    client::{Client, ClientId, ClientRegistry, PeerCertificate, Permission, Verification},
    clock::{Clock, SystemClock, UnixTime},
    crypto::{self, Algorithm, CertificateThumbprint, Kek, SecretHasher},
    identity::{CertificateIdentity, CertificateMatcher},
    keys::{KekRing, KeyRecord, KeyRing, KeyState},
    revocation::{Blocklist, Caps, State},
    token::{AccessTokenClaims, Audience, Confirmation, Issuer, RequestedLifetime, TokenRequest},
};
use tokio::sync::watch;

pub const ISSUER: &str = "https://tokenmint.bench";
pub const CLIENT_URI: &str = "spiffe://bench.example/billing";
pub const RS_URI: &str = "spiffe://bench.example/payments-api";
pub const AUDIENCE: &str = "https://payments.example";

pub fn now() -> UnixTime {
    SystemClock.unix_now()
}

/// A key ring whose current (signing) key uses `algorithm`.
pub fn key_ring(algorithm: Algorithm) -> KeyRing {
    let kek = Kek::generate().expect("KEK");
    let record = KeyRecord::generate(algorithm, KeyState::Current, &kek, now()).expect("key");
    let keks = KekRing::try_new(vec![kek]).expect("KEK ring");
    KeyRing::try_build(&[record], &keks).expect("key ring")
}

/// Claims of the shape the issuer produces: one audience, two scopes, `cnf` binding.
pub fn claims() -> AccessTokenClaims {
    let now = now();
    AccessTokenClaims {
        iss: ISSUER.into(),
        sub: "billing".into(),
        client_id: "billing".into(),
        aud: Audience::One(AUDIENCE.into()),
        scope: Some("payments:read payments:write".into()),
        iat: now,
        nbf: now,
        exp: now + Duration::from_secs(3600),
        jti: crypto::random_id().expect("random id"),
        cnf: Confirmation {
            x5t_s256: CertificateThumbprint::of_der(
                &crypto::random_bytes::<600>().expect("random bytes"),
            )
            .to_b64url(),
        },
        act: None,
        may_act: None,
        ancestors: Vec::new(),
    }
}

pub fn peer(ca: &CertificateAuthority, common_name: &str, uri: &str) -> PeerCertificate {
    let issued = ca
        .issue(&LeafSpec::client_uri(
            common_name,
            uri,
            Duration::from_secs(24 * 3600),
        ))
        .expect("leaf certificate");
    // What tls.rs does with a verified leaf.
    PeerCertificate {
        identity: CertificateIdentity::from_der(&issued.cert_der).expect("identity"),
        thumbprint: CertificateThumbprint::of_der(&issued.cert_der),
        verification: Verification::CaChain,
        admin_allowed: true,
    }
}

pub fn client(id: &str, uri: &str) -> Client {
    Client {
        id: ClientId::try_new(id).expect("client id"),
        matcher: CertificateMatcher::try_san_uri(uri).expect("matcher"),
        scopes: Vec::new(),
        default_scopes: Vec::new(),
        audiences: Vec::new(),
        default_audiences: Vec::new(),
        introspect_audiences: Vec::new(),
        permissions: Vec::new(),
        default_lifetime: Duration::from_secs(300),
        max_lifetime: Duration::from_secs(3600),
        enabled: true,
        secret_hash: None,
        exchange: Default::default(),
    }
}

/// An issuing client and a resource server, and an `Authority` over them built as
/// `server::prepare_with_store` builds it, minus the store .
pub struct Fixture {
    pub _keys_tx: watch::Sender<Arc<KeyRing>>,
    pub keys_rx: watch::Receiver<Arc<KeyRing>>,
    pub clients: Vec<Client>,
    pub blocklist: Arc<Blocklist>,
    pub client_peer: PeerCertificate,
    pub rs_peer: PeerCertificate,
}

impl Fixture {
    pub fn new() -> Self {
        let ca = CertificateAuthority::generate("bench CA").expect("CA");
        let client_peer = peer(&ca, "billing", CLIENT_URI);
        let rs_peer = peer(&ca, "payments-api", RS_URI);
        let billing = Client {
            scopes: vec!["payments:read".into(), "payments:write".into()],
            default_scopes: vec!["payments:read".into()],
            audiences: vec![AUDIENCE.into(), "https://ledger.example".into()],
            default_audiences: vec![AUDIENCE.into()],
            permissions: vec![Permission::Issue],
            ..client("billing", CLIENT_URI)
        };
        let rs = Client {
            introspect_audiences: vec![AUDIENCE.into()],
            permissions: vec![Permission::Introspect],
            ..client("payments-api", RS_URI)
        };
        let (keys_tx, keys_rx) = watch::channel(Arc::new(key_ring(Algorithm::Es256)));
        let blocklist = Arc::new(Blocklist::new(
            Caps::default(),
            Duration::from_secs(30),
            Duration::from_secs(3600),
        ));
        blocklist.load(&State::default(), now());
        Self {
            _keys_tx: keys_tx,
            keys_rx,
            clients: vec![billing, rs],
            blocklist,
            client_peer,
            rs_peer,
        }
    }

    /// A new authority with an empty verified-token cache, marked fresh, auditing issuance
    /// as counts (the default, as `serve` does).
    pub fn authority(&self) -> Authority {
        let authority = Authority::new(Parts {
            issuer: Issuer::new(ISSUER, Duration::from_secs(3600)),
            keys: self.keys_rx.clone(),
            clients: ClientRegistry::try_new(self.clients.clone()).expect("registry"),
            hasher: SecretHasher::new(&[7u8; 32]),
            clock: Arc::new(SystemClock),
            blocklist: self.blocklist.clone(),
            leeway: Duration::from_secs(30),
            verified_cache_capacity: VERIFIED_CACHE_CAPACITY,
            max_staleness: Duration::from_secs(3600),
            max_issue_staleness: Duration::from_secs(3600),
        })
        .with_issuance_audit(Arc::new(IssuanceAudit::new(IssuanceMode::Counts {
            interval: Duration::from_secs(60),
        })));
        authority.mark_fresh();
        authority
    }

    pub fn request() -> TokenRequest {
        TokenRequest {
            scopes: vec!["payments:read".into(), "payments:write".into()],
            audiences: vec![AUDIENCE.into()],
            lifetime: Some(RequestedLifetime {
                seconds: 3600,
                nanos: 0,
            }),
            ..TokenRequest::default()
        }
    }

    /// `n` distinct access tokens issued to the client.
    pub fn tokens(&self, n: usize) -> Vec<String> {
        let issuing = self.authority();
        let request = Self::request();
        (0..n)
            .map(|_| {
                issuing
                    .issue(Some(&self.client_peer), &request)
                    .expect("issue")
                    .access_token
            })
            .collect()
    }
}
