//! The PKCS#11 key custody (`keys.custody = "pkcs11"`) on the real binary, against SoftHSM2:
//! every test makes a token of its own, in a SoftHSM2 directory under its temporary directory
//! that only its child processes are pointed at (`SOFTHSM2_CONF`), so one test can take its
//! token away without touching another's. OpenSC's `pkcs11-tool` is the outside view of what
//! the token holds.
//!
//! What must hold: each algorithm's keys are made and sign in the token, sensitive and never
//! extractable, named by their `kid`, and their tokens verify from the published key set; the
//! token's private objects follow the stored keys through rotation, revocation and scheduled
//! removal; a token that goes away makes issuance UNAVAILABLE and readiness say why, and its
//! return brings signing back without a restart; two replicas share one token and one store
//! without duplicate keys; and a start-up that cannot reach the token names the cause.
//!
//! Without SoftHSM2 (Debian's softhsm2) or pkcs11-tool (Debian's opensc) each test says it
//! was skipped; under CI, where `.ci/run` installs them, it fails instead.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use jwt_simple::prelude::{
    ECDSAP256PublicKeyLike as _, ES256PublicKey, Ed25519PublicKey, EdDSAPublicKeyLike as _,
    JWTClaims, NoCustomClaims, PS256PublicKey, RS256PublicKey, RSAPublicKeyLike as _,
    VerificationOptions,
};
use serde_json::Value;
use tokenmint::grpc::proto::{
    IntrospectTokenRequest, IssueTokenRequest, IssueTokenResponse,
    token_service_client::TokenServiceClient,
};
use tokenmint_core::{crypto, jose, keys::ACCESS_TOKEN_TYP};
use tonic::{Code, transport::Channel};

use crate::binary::{self, Running, free_port, kids_in, parse_keys, skipped, stop};

const BIN: &str = env!("CARGO_BIN_EXE_tokenmint");
/// Where Debian puts SoftHSM2's module (`TOKENMINT_TEST_PKCS11_MODULE` names another).
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const USER_PIN: &str = "12345678";
const SO_PIN: &str = "87654321";
/// The `CKA_LABEL` tokenmint gives every private key it creates.
const KEY_LABEL: &str = "tokenmint signing key";
/// The variable the PIN is read from when `[pkcs11]` names no other source.
const PIN_ENV: &str = "TOKENMINT_PKCS11_PIN";
/// The longest a server may take to start serving (RSA keys are generated in the token).
const START: Duration = Duration::from_secs(60);

const DEMO_AUDIENCE: &str = "https://demo.tokenmint.dev";
const EDDSA_AUDIENCE: &str = "https://eddsa.example";
const RS256_AUDIENCE: &str = "https://rs256.example";
const PS256_AUDIENCE: &str = "https://ps256.example";

// --- the token ---

/// A SoftHSM2 token of one test's own: its configuration and token directory under the
/// test's temporary directory.
struct Token {
    conf: PathBuf,
    tokens: PathBuf,
    label: String,
    module: String,
}

/// One private-key object as `pkcs11-tool --list-objects` shows it.
#[derive(Debug, Clone)]
struct Object {
    /// The key type after "Private Key Object;": `EC`, `EC_EDWARDS`, `RSA`.
    kind: String,
    label: String,
    /// The `CKA_ID`, decoded from hex (tokenmint's kid, in ASCII).
    id: String,
    /// The "Access:" line: sensitive, never extractable, ….
    access: String,
}

impl Token {
    /// A fresh token labelled `label` under `dir/softhsm`; `None` (and a line saying the test
    /// was skipped, or a failure under CI) where SoftHSM2 or pkcs11-tool is missing.
    fn create(dir: &Path, label: &str) -> Option<Self> {
        let module =
            std::env::var("TOKENMINT_TEST_PKCS11_MODULE").unwrap_or_else(|_| DEFAULT_MODULE.into());
        let runs = |tool: &str, arg: &str| {
            Command::new(tool)
                .arg(arg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        if !Path::new(&module).is_file() || !runs("softhsm2-util", "--version") {
            skipped("SoftHSM2 (Debian package softhsm2)");
            return None;
        }
        if !runs("pkcs11-tool", "--help") {
            skipped("OpenSC's pkcs11-tool (Debian package opensc)");
            return None;
        }
        let home = dir.join("softhsm");
        let tokens = home.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = home.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        let token = Self {
            conf,
            tokens,
            label: label.to_owned(),
            module,
        };
        let init = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &token.conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", USER_PIN])
            .output()
            .unwrap();
        assert!(init.status.success(), "softhsm2-util: {}", said(&init));
        Some(token)
    }

    /// The environment of a server holding its keys in this token (the PIN in
    /// `TOKENMINT_PKCS11_PIN`).
    fn env(&self) -> Vec<(String, String)> {
        [
            ("SOFTHSM2_CONF", self.conf.to_str().unwrap()),
            ("TOKENMINT__KEYS__CUSTODY", "pkcs11"),
            ("TOKENMINT__PKCS11__MODULE", &self.module),
            ("TOKENMINT__PKCS11__TOKEN_LABEL", &self.label),
            (PIN_ENV, USER_PIN),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The private-key objects in the token, as pkcs11-tool (logged in) lists them.
    fn objects(&self) -> Vec<Object> {
        let output = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--module", &self.module, "--token-label", &self.label])
            .args(["--login", "--pin", USER_PIN])
            .args(["--list-objects", "--type", "privkey"])
            .output()
            .unwrap();
        assert!(output.status.success(), "pkcs11-tool: {}", said(&output));
        let mut objects = Vec::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some(kind) = line.strip_prefix("Private Key Object;") {
                objects.push(Object {
                    kind: kind.trim().to_owned(),
                    label: String::new(),
                    id: String::new(),
                    access: String::new(),
                });
                continue;
            }
            let (Some(object), Some((field, value))) = (objects.last_mut(), line.split_once(':'))
            else {
                continue;
            };
            let value = value.trim();
            match field.trim() {
                "label" => object.label = value.to_owned(),
                "ID" => object.id = String::from_utf8(unhex(value)).unwrap(),
                "Access" => object.access = value.to_owned(),
                _ => {}
            }
        }
        objects
    }

    /// The kids of the private objects tokenmint made, sorted (each must appear once).
    fn key_ids(&self) -> BTreeSet<String> {
        let objects = self.objects();
        let ids: Vec<String> = objects
            .iter()
            .filter(|o| o.label == KEY_LABEL)
            .map(|o| o.id.clone())
            .collect();
        let set: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(set.len(), ids.len(), "one object per kid: {objects:?}");
        set
    }

    /// The token's own directory under the token directory (SoftHSM2 names it by a UUID).
    fn directory(&self) -> PathBuf {
        let dirs: Vec<PathBuf> = std::fs::read_dir(&self.tokens)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        assert_eq!(dirs.len(), 1, "one token directory: {dirs:?}");
        dirs[0].clone()
    }
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "hex: {text}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A `tokenmint.toml` of the dev set-up's three clients, the demo client also allowed the
/// audiences `extra` (`serve --dev` keeps a config it finds and writes the PKI and KEK).
fn write_config(dir: &Path, extra: &[&str]) {
    let audiences: Vec<String> = std::iter::once(DEMO_AUDIENCE)
        .chain(extra.iter().copied())
        .map(|a| format!("\"{a}\""))
        .collect();
    let audiences = audiences.join(", ");
    std::fs::write(
        dir.join("tokenmint.toml"),
        format!(
            r#"[[clients]]
id = "demo"
san_uri = "spiffe://tokenmint.dev/demo"
scopes = ["demo:read"]
audiences = [{audiences}]
default_audiences = ["{DEMO_AUDIENCE}"]

[[clients]]
id = "admin"
san_uri = "spiffe://tokenmint.dev/admin"
permissions = ["issue", "introspect", "admin"]

[[clients]]
id = "demo-resource"
san_uri = "spiffe://tokenmint.dev/demo-resource"
permissions = ["introspect"]
introspect_audiences = [{audiences}]
"#
        ),
    )
    .unwrap();
}

/// `pairs` as owned environment entries.
fn env_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

// --- the server ---

/// `serve --dev` in `dir` as a process, its stderr in `dir/<log>`.
struct Server {
    dir: PathBuf,
    port: u16,
    ops_port: u16,
    log: PathBuf,
    process: Running,
}

/// `serve --dev` in `dir` with `env` (nothing of the test's own PKCS#11 PIN inherited):
/// the command, ready to spawn.
fn serve_command(
    dir: &Path,
    port: u16,
    ops_port: u16,
    log: &Path,
    env: &[(String, String)],
) -> Command {
    let mut command = binary::command(Path::new(BIN), dir);
    command
        .args(["serve", "--dev"])
        .env_remove(PIN_ENV)
        .env("TOKENMINT__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "TOKENMINT__SERVER__OPS_LISTEN",
            format!("127.0.0.1:{ops_port}"),
        )
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    command
}

impl Server {
    /// Started, not yet waited for.
    fn spawn(dir: &Path, log: &str, env: &[(String, String)]) -> Self {
        let (port, ops_port, log) = (free_port(), free_port(), dir.join(log));
        let process = serve_command(dir, port, ops_port, &log, env)
            .spawn()
            .unwrap();
        Self {
            dir: dir.to_owned(),
            port,
            ops_port,
            log,
            process: Running::from(process),
        }
    }

    /// Started and serving: a demo token was issued.
    async fn start(dir: &Path, log: &str, env: &[(String, String)]) -> Self {
        let mut server = Self::spawn(dir, log, env);
        server.wait_serving().await;
        server
    }

    async fn wait_serving(&mut self) {
        let deadline = Instant::now() + START;
        loop {
            if self.issue(None).await.is_ok() {
                return;
            }
            assert!(
                self.process.try_wait().unwrap().is_none(),
                "the server exited: {}",
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "the server never served: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        assert!(
            self.process.try_wait().unwrap().is_none(),
            "the server exited: {}",
            self.log()
        );
    }

    async fn channel(&self, who: &str) -> Result<Channel, tonic::transport::Error> {
        Channel::from_shared(format!("https://localhost:{}", self.port))
            .unwrap()
            .tls_config(binary::dev_tls(&self.dir, who))?
            .timeout(Duration::from_secs(10))
            .connect()
            .await
    }

    /// A demo token for `audience` (the client's default when `None`).
    async fn issue(&self, audience: Option<&str>) -> Result<IssueTokenResponse, tonic::Status> {
        let channel = self
            .channel("demo")
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connecting: {e}")))?;
        TokenServiceClient::new(channel)
            .issue_token(IssueTokenRequest {
                audiences: audience.into_iter().map(str::to_owned).collect(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Whether `token` is active as the admin introspects it here.
    async fn active(&self, token: &str) -> bool {
        TokenServiceClient::new(self.channel("admin").await.unwrap())
            .introspect_token(IntrospectTokenRequest {
                token: token.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .active
    }

    /// The published key set, over HTTPS without a client certificate.
    async fn jwks(&self) -> String {
        let client = binary::dev_https(&self.dir, None).build().unwrap();
        let url = format!("https://localhost:{}/.well-known/jwks.json", self.port);
        let response = client.get(url).send().await.unwrap();
        assert!(response.status().is_success(), "{response:?}");
        response.text().await.unwrap()
    }

    /// The value of the unlabelled metric `name`.
    async fn metric(&self, name: &str) -> Option<f64> {
        crate::support::install_provider();
        let url = format!("http://127.0.0.1:{}/metrics", self.ops_port);
        let text = reqwest::get(url).await.ok()?.text().await.ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// `/readyz`: whether it answered 200, and its text.
    async fn readyz(&self) -> (bool, String) {
        crate::support::install_provider();
        let url = format!("http://127.0.0.1:{}/readyz", self.ops_port);
        let response = reqwest::get(url).await.unwrap();
        let ok = response.status().is_success();
        (ok, response.text().await.unwrap())
    }

    /// The admin CLI against this server.
    fn cli(&self, args: &[&str]) -> Output {
        binary::admin_cli(Path::new(BIN), &self.dir, self.port, args)
    }

    /// `keys list`: (kid, algorithm, state) each.
    fn keys(&self) -> Vec<(String, String, String)> {
        let output = self.cli(&["keys", "list"]);
        assert!(output.status.success(), "keys list: {}", said(&output));
        parse_keys(&output)
    }
}

/// The kids of the stored keys that are not revoked.
fn live_kids(keys: &[(String, String, String)]) -> BTreeSet<String> {
    keys.iter()
        .filter(|k| k.2 != "revoked")
        .map(|k| k.0.clone())
        .collect()
}

/// The one kid in `state` of `algorithm`.
fn kid_of(keys: &[(String, String, String)], algorithm: &str, state: &str) -> String {
    let kids: Vec<&String> = keys
        .iter()
        .filter(|k| k.1 == algorithm && k.2 == state)
        .map(|k| &k.0)
        .collect();
    assert_eq!(kids.len(), 1, "one {state} {algorithm} key: {keys:?}");
    kids[0].clone()
}

/// The protected header of a compact JWS.
fn header_of(token: &str) -> Value {
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&crypto::b64url_decode(part).unwrap()).unwrap()
}

/// Verifies `token` against the JWK Set text `jwks` with tokenmint's own verifier: the kid.
fn verify_with_set(token: &str, jwks: &str) -> String {
    let parsed = jose::parse_jwks(jwks).unwrap();
    assert!(
        parsed.skipped.is_empty(),
        "keys left out: {:?}",
        parsed.skipped
    );
    let verified: jose::VerifiedJws<Value> =
        jose::verify_compact(token, &parsed.keys, &[ACCESS_TOKEN_TYP]).unwrap();
    verified.kid
}

/// Verifies `token` with jwt-simple from the JWK named by its kid in `jwks` alone.
fn verify_independently(
    token: &str,
    jwks: &str,
    issuer: &str,
    audience: &str,
) -> JWTClaims<NoCustomClaims> {
    let kid = header_of(token)["kid"].as_str().unwrap().to_owned();
    let set: Value = serde_json::from_str(jwks).unwrap();
    let jwk = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("{kid} is not published: {jwks}"))
        .to_string();
    let options = || VerificationOptions {
        required_signature_type: Some(ACCESS_TOKEN_TYP.into()),
        allowed_issuers: Some(HashSet::from([issuer.to_owned()])),
        allowed_audiences: Some(HashSet::from([audience.to_owned()])),
        time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(5)),
        ..VerificationOptions::default()
    };
    let alg = header_of(token)["alg"].as_str().unwrap().to_owned();
    match alg.as_str() {
        "ES256" => ES256PublicKey::from_jwk(&jwk)
            .unwrap()
            .verify_token(token, Some(options())),
        "EdDSA" => Ed25519PublicKey::from_jwk(&jwk)
            .unwrap()
            .verify_token(token, Some(options())),
        "RS256" => RS256PublicKey::from_jwk(&jwk)
            .unwrap()
            .verify_token(token, Some(options())),
        "PS256" => PS256PublicKey::from_jwk(&jwk)
            .unwrap()
            .verify_token(token, Some(options())),
        other => panic!("unexpected alg {other}"),
    }
    .unwrap_or_else(|e| panic!("{alg} token does not verify: {e}"))
}

/// Waits up to `bound` for `done`, polling every 100 ms: how long it took.
async fn wait_for(bound: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

// --- the tests ---

/// ES256 by default and EdDSA, RS256 and PS256 beside it, each audience's tokens signed with
/// its algorithm by the token (the ring build makes no RSA keys of its own: these come from
/// the token), each verifying from the published set with tokenmint's verifier and
/// jwt-simple; the token holds one private object per stored key, named by its kid,
/// sensitive and never extractable, of the algorithm's key type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_algorithm_signs_in_the_token_and_verifies_from_the_published_keys() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let Some(token) = Token::create(dir.path(), "tm-algorithms") else {
        return;
    };
    write_config(
        dir.path(),
        &[EDDSA_AUDIENCE, RS256_AUDIENCE, PS256_AUDIENCE],
    );
    let mut env = token.env();
    let by_audience = format!(
        "{{ \"{EDDSA_AUDIENCE}\" = \"EdDSA\", \"{RS256_AUDIENCE}\" = \"RS256\", \"{PS256_AUDIENCE}\" = \"PS256\" }}"
    );
    env.extend(env_of(&[
        ("TOKENMINT__KEYS__ALSO", r#"["EdDSA", "RS256", "PS256"]"#),
        ("TOKENMINT__KEYS__AUDIENCE_ALGORITHMS", &by_audience),
    ]));
    let server = Server::start(dir.path(), "serve.log", &env).await;
    let issuer = format!("https://localhost:{}", server.port);

    let keys = server.keys();
    assert_eq!(
        keys.len(),
        8,
        "a current and a next key per algorithm: {keys:?}"
    );
    let jwks = server.jwks().await;
    for (audience, alg) in [
        (DEMO_AUDIENCE, "ES256"),
        (EDDSA_AUDIENCE, "EdDSA"),
        (RS256_AUDIENCE, "RS256"),
        (PS256_AUDIENCE, "PS256"),
    ] {
        let current = kid_of(&keys, alg, "current");
        let issued = server.issue(Some(audience)).await.unwrap();
        let header = header_of(&issued.access_token);
        assert_eq!(header["alg"], alg, "{audience}: {header}");
        assert_eq!(header["kid"], current.as_str(), "{audience}: {header}");
        assert_eq!(issued.key_id, current, "{audience}");
        assert_eq!(verify_with_set(&issued.access_token, &jwks), current);
        let claims = verify_independently(&issued.access_token, &jwks, &issuer, audience);
        assert_eq!(claims.subject.as_deref(), Some("demo"));
    }

    // The outside view: one private object per stored key, as tokenmint made it.
    let objects = token.objects();
    assert_eq!(objects.len(), keys.len(), "{objects:?}");
    let kinds: BTreeMap<&str, &str> = [
        ("ES256", "EC"),
        ("EdDSA", "EC_EDWARDS"),
        ("RS256", "RSA"),
        ("PS256", "RSA"),
    ]
    .into();
    for (kid, alg, _) in &keys {
        let object = objects
            .iter()
            .find(|o| &o.id == kid)
            .unwrap_or_else(|| panic!("no object with the id of {kid}: {objects:?}"));
        assert_eq!(object.label, KEY_LABEL, "{object:?}");
        assert_eq!(object.kind, kinds[alg.as_str()], "{alg}: {object:?}");
        for property in ["sensitive", "always sensitive", "never extractable"] {
            assert!(
                object.access.split(", ").any(|p| p == property),
                "{alg} key {kid} is not {property}: {object:?}"
            );
        }
    }
    let stored: BTreeSet<String> = keys.iter().map(|k| k.0.clone()).collect();
    assert_eq!(token.key_ids(), stored);
    stop(server.process);
    println!(
        "hsm: four algorithms signed in the token in {:?}",
        started.elapsed()
    );
}

/// A forced rotation makes the new next key in the token; revoking a retired key and a next
/// key destroys their objects as soon as the revocation answers; the next key made in place
/// of the revoked one is in the token too. Then, restarted with key timings of seconds, the
/// scheduled rotation retires the current key and removes it after the retention: its object
/// is destroyed too, and the token holds exactly the stored keys that are not revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_creates_and_revocation_destroys_objects_in_the_token() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let Some(token) = Token::create(dir.path(), "tm-rotation") else {
        return;
    };
    write_config(dir.path(), &[]);
    let mut env = token.env();
    env.extend(env_of(&[("TOKENMINT__STORE__CATCH_UP_INTERVAL", "200ms")]));
    let server = Server::start(dir.path(), "serve.log", &env).await;

    let before = server.keys();
    let (c0, n0) = (
        kid_of(&before, "ES256", "current"),
        kid_of(&before, "ES256", "next"),
    );
    assert_eq!(token.key_ids(), BTreeSet::from([c0.clone(), n0.clone()]));

    // Rotation: the new next key is a new object in the token.
    let rotated = server.cli(&["keys", "rotate", "--force"]);
    assert!(rotated.status.success(), "{}", said(&rotated));
    let keys = server.keys();
    assert_eq!(kid_of(&keys, "ES256", "current"), n0, "{keys:?}");
    assert_eq!(
        kids_in(&keys, "retired"),
        std::slice::from_ref(&c0),
        "{keys:?}"
    );
    let n1 = kid_of(&keys, "ES256", "next");
    assert_eq!(
        token.key_ids(),
        BTreeSet::from([c0.clone(), n0.clone(), n1.clone()]),
        "one more object, the new next key's"
    );
    let object = token.objects().into_iter().find(|o| o.id == n1).unwrap();
    assert!(object.access.contains("never extractable"), "{object:?}");

    // Revoking the retired key and the next key: their objects are gone when it answers.
    for (kid, was) in [(&c0, "retired"), (&n1, "next")] {
        let revoked = server.cli(&["keys", "revoke", kid]);
        assert!(revoked.status.success(), "revoke {was}: {}", said(&revoked));
        assert!(
            !token.key_ids().contains(kid),
            "the revoked {was} key {kid} is still in the token"
        );
        let keys = server.keys();
        assert!(
            keys.iter().any(|k| &k.0 == kid && k.2 == "revoked"),
            "{keys:?}"
        );
    }
    // A new next key replaces the revoked one (the scheduled task): in the token as well.
    let mut n2 = String::new();
    wait_for(
        Duration::from_secs(10),
        "a new next key in the token",
        async || {
            let keys = server.keys();
            let next = kids_in(&keys, "next");
            if next.len() != 1 || next[0] == n1 {
                return false;
            }
            n2 = next[0].clone();
            token.key_ids() == live_kids(&keys)
        },
    )
    .await;
    assert_eq!(
        token.key_ids(),
        BTreeSet::from([n0.clone(), n2.clone()]),
        "exactly the keys that are not revoked"
    );
    let issued = server.issue(None).await.unwrap();
    assert_eq!(issued.key_id, n0, "the current key still signs");
    stop(server.process);
    let rotation_phase = started.elapsed();

    // Key timings of seconds: n0 is retired within seconds, and removed after the retention.
    env.extend(env_of(&[
        ("TOKENMINT__KEYS__JWKS_MAX_AGE", "1s"),
        ("TOKENMINT__KEYS__PUBLISH_AHEAD", "2s"),
        ("TOKENMINT__KEYS__ROTATION_PERIOD", "3s"),
        ("TOKENMINT__KEYS__RETENTION", "4s"),
        ("TOKENMINT__TOKENS__MAX_LIFETIME", "2s"),
        ("TOKENMINT__TOKENS__DEFAULT_LIFETIME", "1s"),
        ("TOKENMINT__TOKENS__LEEWAY", "0s"),
        ("TOKENMINT__STORE__MAX_ISSUE_STALENESS", "1s"),
    ]));
    let server = Server::start(dir.path(), "short.log", &env).await;
    let removal = wait_for(
        Duration::from_secs(15),
        "n0 removed from the store",
        async || !server.keys().iter().any(|k| k.0 == n0),
    )
    .await;
    wait_for(
        Duration::from_secs(5),
        "n0's object destroyed",
        async || !token.key_ids().contains(&n0),
    )
    .await;
    assert!(
        server.metric("tokenmint_hsm_keys_destroyed_total").await >= Some(1.0),
        "the destruction is counted"
    );
    // Rotation goes on every few seconds: between steps, the token holds exactly the stored
    // keys that are not revoked (no orphan, none missing).
    wait_for(
        Duration::from_secs(10),
        "the token in step with the store",
        async || {
            let objects = token.key_ids();
            let stored = live_kids(&server.keys());
            objects == stored && objects == token.key_ids()
        },
    )
    .await;
    for gone in [&c0, &n1, &n0] {
        assert!(
            !token.key_ids().contains(gone),
            "{gone} is still in the token"
        );
    }
    stop(server.process);
    println!(
        "hsm: rotation and revocation in {rotation_phase:?}; the scheduled removal {removal:?} after the restart; {:?} in all",
        started.elapsed()
    );
}

/// The token taken away mid-traffic (its directory moved): issuance answers UNAVAILABLE over
/// gRPC and temporarily_unavailable over HTTP, readiness says the key custody cannot sign, the
/// metrics say the token is down; put back, the same server is ready again within seconds
/// and signs with the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_failing_mid_traffic_makes_issuance_unavailable_and_it_recovers_without_a_restart()
 {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let Some(token) = Token::create(dir.path(), "tm-failing") else {
        return;
    };
    write_config(dir.path(), &[]);
    let mut server = Server::start(dir.path(), "serve.log", &token.env()).await;
    let mut kids = BTreeSet::new();
    for _ in 0..5 {
        kids.insert(server.issue(None).await.unwrap().key_id);
    }
    assert_eq!(kids.len(), 1, "{kids:?}");
    let kid = kids.pop_first().unwrap();
    assert_eq!(server.metric("tokenmint_hsm_up").await, Some(1.0));
    assert_eq!(server.readyz().await, (true, "ready\n".into()));

    let (home, away) = (token.directory(), dir.path().join("away"));
    std::fs::rename(&home, &away).unwrap();
    let moved = Instant::now();

    // Issuance fails, and says why in a way a client can act on.
    let mut refused = None;
    wait_for(
        Duration::from_secs(5),
        "an issuance refused",
        async || match server.issue(None).await {
            Ok(_) => false,
            Err(status) => {
                refused = Some(status);
                true
            }
        },
    )
    .await;
    let refused = refused.unwrap();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("the signing keys are unavailable for now; try again shortly"),
        "{refused:?}"
    );
    for _ in 0..3 {
        let status = server.issue(None).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    let http = binary::dev_https(dir.path(), Some("demo")).build().unwrap();
    let answer = http
        .post(format!("https://localhost:{}/oauth2/token", server.port))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");

    // Readiness and the metrics say so (the custody is checked every 2 s).
    let mut why = String::new();
    let noticed = wait_for(Duration::from_secs(10), "not ready", async || {
        let (ready, text) = server.readyz().await;
        why = text;
        !ready
    })
    .await;
    assert!(
        why.starts_with("not ready: the key custody cannot sign"),
        "{why}"
    );
    assert!(why.contains(&token.label), "names the token: {why}");
    assert_eq!(server.metric("tokenmint_hsm_up").await, Some(0.0));
    assert_eq!(server.metric("tokenmint_key_custody_up").await, Some(0.0));
    assert!(server.metric("tokenmint_hsm_failures_total").await >= Some(1.0));
    server.assert_running();

    // Back: ready, signing with the same key, without a restart.
    std::fs::rename(&away, &home).unwrap();
    let back = Instant::now();
    let recovered = wait_for(Duration::from_secs(20), "ready again", async || {
        server.readyz().await.0
    })
    .await;
    let issued = server.issue(None).await.unwrap();
    assert_eq!(issued.key_id, kid, "the same key signs again");
    let jwks = server.jwks().await;
    assert_eq!(verify_with_set(&issued.access_token, &jwks), kid);
    assert!(server.metric("tokenmint_hsm_recoveries_total").await >= Some(1.0));
    assert_eq!(server.metric("tokenmint_hsm_up").await, Some(1.0));
    assert_eq!(server.metric("tokenmint_key_custody_up").await, Some(1.0));
    server.assert_running();
    println!(
        "hsm: not ready {noticed:?} after the token went (away for {:?}); ready again {recovered:?} after it came back",
        back - moved
    );

    // Gone while nobody asks for a token: the periodic check looks for the signing keys, so
    // an idle replica leaves the load balancer too, and comes back.
    std::fs::rename(&home, &away).unwrap();
    let idle_noticed = wait_for(
        Duration::from_secs(10),
        "not ready while idle",
        async || !server.readyz().await.0,
    )
    .await;
    assert_eq!(server.metric("tokenmint_key_custody_up").await, Some(0.0));
    std::fs::rename(&away, &home).unwrap();
    wait_for(
        Duration::from_secs(20),
        "ready again after idle",
        async || server.readyz().await.0,
    )
    .await;
    assert_eq!(server.issue(None).await.unwrap().key_id, kid);
    println!("hsm: an idle replica went not ready {idle_noticed:?} after its token went");
    stop(server.process);
    println!("hsm: the failure test took {:?}", started.elapsed());
}

/// Two replicas on one PostgreSQL store and one token, started at the same moment in one dev
/// directory (its PKI made first): one set of keys stored, the loser's destroyed, both sign
/// with the same kid, a token from one is active at the other and verifies from its key set,
/// a rotation at either reaches the other without a refused request, and the token holds one
/// object per stored key throughout.
///
/// SoftHSM2 2.6 re-reads a token another process changed only when the token's generation
/// counter moved past the one this process last wrote, so a replica may not see a key the
/// other made: a key not found re-initialises the module once and looks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_token_and_one_store() {
    let Some(url) = crate::store_contract::postgres_url() else {
        println!("skipped: TOKENMINT_TEST_POSTGRES_URL is not set");
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let Some(token) = Token::create(dir.path(), "tm-replicas") else {
        return;
    };
    let database = crate::store_contract::TestDatabase::create(&url).await;
    write_config(dir.path(), &[]);
    // One issuer for both, as behind one name (`serve --dev` would make each port its own).
    let issuer = "https://tokenmint.replicas.test";
    let mut env = token.env();
    env.extend(env_of(&[
        ("TOKENMINT__STORE__URL", &database.url),
        ("TOKENMINT__STORE__CATCH_UP_INTERVAL", "200ms"),
        ("TOKENMINT__SERVER__ISSUER", issuer),
    ]));
    // The development PKI first (a sealed-custody run on a file store of its own), so the
    // two replicas can then start at the same moment: both make first keys in the token, one
    // store keeps one set, and the other replica destroys what it made.
    let pki = Server::start(dir.path(), "pki.log", &[]).await;
    stop(pki.process);
    let mut a = Server::spawn(dir.path(), "a.log", &env);
    let mut b = Server::spawn(dir.path(), "b.log", &env);
    a.wait_serving().await;
    b.wait_serving().await;

    let keys = a.keys();
    assert_eq!(keys.len(), 2, "one set of first keys: {keys:?}");
    assert_eq!(b.keys(), keys, "one store");
    let current = kid_of(&keys, "ES256", "current");
    assert_eq!(
        token.key_ids(),
        live_kids(&keys),
        "one object per stored key: the replica that lost destroyed its own"
    );
    assert_eq!(token.objects().len(), 2, "nothing else in the token");
    let mut made_less_destroyed = 0.0;
    for server in [&a, &b] {
        made_less_destroyed += server
            .metric("tokenmint_hsm_keys_generated_total")
            .await
            .unwrap_or(0.0)
            - server
                .metric("tokenmint_hsm_keys_destroyed_total")
                .await
                .unwrap_or(0.0);
    }
    assert_eq!(
        made_less_destroyed, 2.0,
        "every key made is stored or destroyed"
    );

    let from_a = a.issue(None).await.unwrap();
    let from_b = b.issue(None).await.unwrap();
    assert_eq!(
        (from_a.key_id.as_str(), from_b.key_id.as_str()),
        (current.as_str(), current.as_str())
    );
    assert!(b.active(&from_a.access_token).await, "A's token at B");
    assert!(a.active(&from_b.access_token).await, "B's token at A");
    let b_jwks = b.jwks().await;
    assert_eq!(verify_with_set(&from_a.access_token, &b_jwks), current);
    verify_independently(&from_a.access_token, &b_jwks, issuer, DEMO_AUDIENCE);

    // A rotation at A: B signs with the new key within a bounded time.
    let next = kid_of(&keys, "ES256", "next");
    let rotated = a.cli(&["keys", "rotate", "--force"]);
    assert!(rotated.status.success(), "{}", said(&rotated));
    assert!(
        String::from_utf8_lossy(&rotated.stdout).contains(&format!("{next} signs now")),
        "{}",
        said(&rotated)
    );
    assert_eq!(a.issue(None).await.unwrap().key_id, next);
    let caught_up = wait_for(
        Duration::from_secs(10),
        "B signing with the new key",
        // Meanwhile B signs with the old key: never refused.
        async || {
            let kid = b.issue(None).await.unwrap().key_id;
            assert!(kid == current || kid == next, "{kid}");
            kid == next
        },
    )
    .await;
    let keys = b.keys();
    assert_eq!(kid_of(&keys, "ES256", "current"), next, "{keys:?}");
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(
        token.key_ids(),
        live_kids(&keys),
        "one object per stored key"
    );
    assert_eq!(token.objects().len(), 3, "nothing else in the token");
    // The token from before the rotation still verifies at B (the retired key is published).
    let b_jwks = b.jwks().await;
    assert_eq!(verify_with_set(&from_a.access_token, &b_jwks), current);

    // And back: a rotation at B, whose new next key A has never seen in the token (SoftHSM
    // re-reads a token another process changed only when told to): A signs with B's key
    // without refusing a request.
    let newest_next = kid_of(&keys, "ES256", "next");
    let rotated = b.cli(&["keys", "rotate", "--force"]);
    assert!(rotated.status.success(), "{}", said(&rotated));
    assert_eq!(b.issue(None).await.unwrap().key_id, newest_next);
    wait_for(
        Duration::from_secs(10),
        "A signing with B's rotated key",
        async || {
            let kid = a.issue(None).await.unwrap().key_id;
            assert!(kid == next || kid == newest_next, "{kid}");
            kid == newest_next
        },
    )
    .await;
    let keys = a.keys();
    assert_eq!(
        token.key_ids(),
        live_kids(&keys),
        "one object per stored key"
    );
    a.assert_running();
    b.assert_running();
    stop(a.process);
    stop(b.process);
    println!(
        "hsm: B signed with A's rotated key {caught_up:?} after the rotation; {:?} in all",
        started.elapsed()
    );
}

/// Runs `serve --dev` in `dir` with `env` until it exits (bounded): its status and stderr.
async fn run_to_exit(dir: &Path, log: &str, env: &[(String, String)]) -> (ExitStatus, String) {
    let log = dir.join(log);
    let mut process = Running::from(
        serve_command(dir, free_port(), free_port(), &log, env)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = process.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server started: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (status, std::fs::read_to_string(&log).unwrap())
}

/// A start-up that cannot use the token stops with the cause on stderr: a wrong PIN, a label
/// no token has (the tokens there are named), the PIN variable unset. A PIN in a file
/// (`pkcs11.pin_file`) works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_errors_name_the_cause() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let Some(token) = Token::create(dir.path(), "tm-start-up") else {
        return;
    };
    write_config(dir.path(), &[]);
    let with = |changes: &[(&str, Option<&str>)]| {
        let mut env = token.env();
        for (key, value) in changes {
            env.retain(|(k, _)| k != key);
            if let Some(value) = value {
                env.push(((*key).to_owned(), (*value).to_owned()));
            }
        }
        env
    };

    let (status, stderr) =
        run_to_exit(dir.path(), "pin.log", &with(&[(PIN_ENV, Some("87654320"))])).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("logging in to the token") && stderr.contains("PIN"),
        "a wrong PIN: {stderr}"
    );
    assert!(
        !stderr.contains("87654320"),
        "the PIN is not logged: {stderr}"
    );

    let (status, stderr) = run_to_exit(
        dir.path(),
        "label.log",
        &with(&[("TOKENMINT__PKCS11__TOKEN_LABEL", Some("tm-no-such-token"))]),
    )
    .await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("tm-no-such-token") && stderr.contains(&token.label),
        "names the label asked for and the token there is: {stderr}"
    );

    let (status, stderr) = run_to_exit(dir.path(), "unset.log", &with(&[(PIN_ENV, None)])).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("TOKENMINT_PKCS11_PIN is not set"),
        "the PIN variable unset: {stderr}"
    );

    // A PIN file (with a trailing newline, as an editor leaves it): it starts and issues.
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{USER_PIN}\n")).unwrap();
    let env = with(&[
        (PIN_ENV, None),
        ("TOKENMINT__PKCS11__PIN_FILE", pin_file.to_str()),
    ]);
    let server = Server::start(dir.path(), "file.log", &env).await;
    let issued = server.issue(None).await.unwrap();
    assert!(
        token.key_ids().contains(&issued.key_id),
        "signed by a key in the token"
    );
    stop(server.process);
    println!("hsm: start-up errors checked in {:?}", started.elapsed());
}

/// The PIN changed on the token while a replica ran: when the replica must log in again (the
/// token came back after an outage) the token refuses the PIN it has. It does not offer that
/// PIN again every check (a device may lock the user, or erase its keys, after a few wrong
/// PINs): readiness says so until a restart with the right PIN, which then signs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_the_token_refuses_is_not_offered_again() {
    let dir = tempfile::tempdir().unwrap();
    let Some(token) = Token::create(dir.path(), "tm-pin") else {
        return;
    };
    write_config(dir.path(), &[]);
    let mut server = Server::start(dir.path(), "serve.log", &token.env()).await;
    let kid = server.issue(None).await.unwrap().key_id;
    let new_pin = "24681357";
    let changed = Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &token.conf)
        .args(["--module", &token.module, "--token-label", &token.label])
        .args([
            "--login",
            "--pin",
            USER_PIN,
            "--change-pin",
            "--new-pin",
            new_pin,
        ])
        .output()
        .unwrap();
    assert!(changed.status.success(), "pkcs11-tool: {}", said(&changed));
    // An outage makes the replica initialise the module and log in again.
    let (home, away) = (token.directory(), dir.path().join("away"));
    std::fs::rename(&home, &away).unwrap();
    wait_for(Duration::from_secs(10), "an issuance refused", async || {
        server.issue(None).await.is_err()
    })
    .await;
    std::fs::rename(&away, &home).unwrap();
    let mut why = String::new();
    wait_for(Duration::from_secs(15), "the PIN refused", async || {
        why = server.readyz().await.1;
        why.contains("not tried again")
    })
    .await;
    assert!(why.contains("PIN"), "{why}");
    // Three more checks: the PIN is not offered again.
    tokio::time::sleep(3 * Duration::from_millis(2_100)).await;
    let refusals = server.log().matches("the token refused the PIN").count();
    assert_eq!(refusals, 1, "offered once only: {}", server.log());
    assert!(server.issue(None).await.is_err());
    assert!(!server.log().contains(USER_PIN), "the PIN is never logged");
    server.assert_running();
    stop(server.process);

    // Restarted with the right PIN: the same key signs.
    let mut env = token.env();
    env.retain(|(k, _)| k != PIN_ENV);
    env.push((PIN_ENV.to_owned(), new_pin.to_owned()));
    let mut server = Server::start(dir.path(), "serve2.log", &env).await;
    assert_eq!(server.issue(None).await.unwrap().key_id, kid);
    server.assert_running();
    stop(server.process);
}
