//! Interoperability with verifiers outside Rust, run as child processes against a real server
//! signing with every algorithm the build has (ES256 by default, EdDSA, and in the aws-lc build
//! RS256, PS256 and ML-DSA-65, one audience each): PyJWT, `jose` (npm, panva) and go-jose v2
//! read the default key set (`jwks_uri`, `GetJwks`) and verify every classical token, with
//! issuer, audience and `typ` checked, and refuse one with a changed signature byte or the wrong
//! audience. With the full set (`pq_jwks_uri`, `include_post_quantum`) each does what it does
//! with an `AKP` key: PyJWT skips it, jose takes the set (and verifies ML-DSA only where its
//! runtime's WebCrypto has ML-DSA), go-jose refuses the whole set — the reason the post-quantum
//! keys are published apart. The scripts are in tests/interop; a verifier that is not installed
//! makes its test say it skipped (under CI, fail: .ci/run installs them).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};
use tempfile::TempDir;
use tokenmint::grpc::proto::{GetJwksRequest, IssueTokenRequest};
use tokenmint_core::crypto::{self, Algorithm};

use crate::support::*;

/// One audience per algorithm, each signed with its own (`keys.audience_algorithms`).
const ES256_AUDIENCE: &str = "https://es256.example";
const EDDSA_AUDIENCE: &str = "https://eddsa.example";
const RS256_AUDIENCE: &str = "https://rs256.example";
const PS256_AUDIENCE: &str = "https://ps256.example";
const ML_DSA_65_AUDIENCE: &str = "https://ml-dsa-65.example";

const ML_DSA_65: &str = "ML-DSA-65";

/// The algorithms this build signs with, and their audiences: all five in the aws-lc build,
/// ES256 and EdDSA in the ring build (no RSA key generation, no ML-DSA).
fn lanes() -> Vec<(&'static str, &'static str)> {
    let mut lanes = vec![("ES256", ES256_AUDIENCE), ("EdDSA", EDDSA_AUDIENCE)];
    if post_quantum() {
        lanes.extend([
            ("RS256", RS256_AUDIENCE),
            ("PS256", PS256_AUDIENCE),
            (ML_DSA_65, ML_DSA_65_AUDIENCE),
        ]);
    }
    lanes
}

/// Whether this build signs ML-DSA (the aws-lc build).
fn post_quantum() -> bool {
    crypto::stack().supports(Algorithm::MlDsa65).is_ok()
}

fn clients() -> String {
    let audiences: Vec<&str> = lanes().iter().map(|(_, audience)| *audience).collect();
    format!(
        r#"
[[clients]]
id = "demo"
san_uri = "{DEMO_URI}"
scopes = ["demo:read"]
audiences = {audiences:?}
default_audiences = ["{ES256_AUDIENCE}"]
"#
    )
}

/// The `[keys]` lines: ES256 by default, the others in `also`, each audience to its algorithm.
fn keys_toml() -> String {
    let lanes = lanes();
    let also: Vec<&str> = lanes.iter().skip(1).map(|(alg, _)| *alg).collect();
    let by_audience: Vec<String> = lanes
        .iter()
        .map(|(alg, audience)| format!("\"{audience}\" = \"{alg}\""))
        .collect();
    format!(
        "algorithm = \"ES256\"\nalso = {also:?}\naudience_algorithms = {{ {} }}\n",
        by_audience.join(", ")
    )
}

/// What the verifiers are given: the two key sets and the tokens, as files in `dir`.
struct Fixture {
    dir: TempDir,
    /// The kids of the default set's keys.
    default_kids: Vec<String>,
    /// Whether the full set holds a post-quantum (`AKP`) key.
    full_has_akp: bool,
}

impl Fixture {
    fn default_set(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    fn full_set(&self) -> PathBuf {
        self.dir.path().join("jwks-all.json")
    }

    fn tokens(&self) -> PathBuf {
        self.dir.path().join("tokens.json")
    }
}

/// `name` of a genuine token signed with `alg`.
fn genuine(alg: &str) -> String {
    alg.to_owned()
}

/// `name` of `alg`'s token with one signature byte changed.
fn forged(alg: &str) -> String {
    format!("{alg} with a changed signature")
}

/// `name` of the ES256 token presented for another audience than its own.
const WRONG_AUDIENCE: &str = "ES256 for another audience";

/// Starts a server signing with every lane, issues one token per algorithm, and writes the
/// default and the full key set as its HTTP face serves them (the same as over gRPC), and the
/// tokens (each genuine one, its forgery, and one for the wrong audience).
async fn fixture() -> Fixture {
    let mut setup = Setup::new(&clients());
    setup.extra_toml = keys_toml();
    let server = setup.start().await;
    let demo = setup.pki.client_uri(DEMO_URI);

    let default_grpc = server.jwks().await.jwks_json;
    let full_grpc = server
        .jwks_of(GetJwksRequest {
            include_post_quantum: true,
        })
        .await
        .jwks_json;
    // What a verifier configured from the metadata fetches.
    install_provider();
    let ca = reqwest::Certificate::from_pem(setup.pki.ca.cert_pem().as_bytes()).unwrap();
    let https = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", server.addr.port());
    let get = |path: String| {
        let request = https.get(format!("{base}{path}"));
        async move {
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{response:?}");
            response.text().await.unwrap()
        }
    };
    let metadata: Value =
        serde_json::from_str(&get("/.well-known/oauth-authorization-server".into()).await).unwrap();
    let path_of = |member: &str| {
        metadata[member]
            .as_str()
            .unwrap()
            .strip_prefix(ISSUER)
            .unwrap()
            .to_owned()
    };
    let default_text = get(path_of("jwks_uri")).await;
    let full_text = get(path_of("pq_jwks_uri")).await;
    let default_set: Value = serde_json::from_str(&default_text).unwrap();
    let full_set: Value = serde_json::from_str(&full_text).unwrap();
    assert_eq!(
        default_set,
        serde_json::from_str::<Value>(&default_grpc).unwrap()
    );
    assert_eq!(full_set, serde_json::from_str::<Value>(&full_grpc).unwrap());

    let ktys = |set: &Value| -> Vec<String> {
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kty"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        !ktys(&default_set).contains(&"AKP".to_owned()),
        "{default_text}"
    );
    let full_has_akp = ktys(&full_set).contains(&"AKP".to_owned());
    assert_eq!(full_has_akp, post_quantum(), "{full_text}");
    let default_kids: Vec<String> = default_set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();

    let mut tokens = Vec::new();
    for (alg, audience) in lanes() {
        let request = IssueTokenRequest {
            audiences: vec![audience.to_owned()],
            ..Default::default()
        };
        let token = issue(&server, &demo, request).await.unwrap().access_token;
        let header: Value = serde_json::from_slice(
            &crypto::b64url_decode(token.split('.').next().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], alg, "{audience}");
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut bytes = crypto::b64url_decode(signature).unwrap();
        bytes[0] ^= 1;
        let changed = format!("{input}.{}", crypto::b64url(&bytes));
        tokens.push(json!({ "name": genuine(alg), "audience": audience, "token": token }));
        tokens.push(json!({ "name": forged(alg), "audience": audience, "token": changed }));
        if alg == "ES256" {
            tokens.push(
                json!({ "name": WRONG_AUDIENCE, "audience": EDDSA_AUDIENCE, "token": token }),
            );
        }
    }
    server.stop().await;

    let fixture = Fixture {
        dir: tempfile::tempdir().unwrap(),
        default_kids,
        full_has_akp,
    };
    std::fs::write(fixture.default_set(), default_text).unwrap();
    std::fs::write(fixture.full_set(), full_text).unwrap();
    std::fs::write(fixture.tokens(), Value::Array(tokens).to_string()).unwrap();
    fixture
}

/// tests/interop.
fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Whether `program args…` runs and succeeds.
fn runs(command: &mut Command) -> bool {
    command.output().is_ok_and(|out| out.status.success())
}

/// Runs a verifier (`command` plus ISSUER, the set and the tokens file); its JSON report.
fn report_of(mut command: Command, set: &Path, fixture: &Fixture) -> Value {
    let out = command
        .arg(ISSUER)
        .arg(set)
        .arg(fixture.tokens())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{command:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{command:?} printed no report ({e}): {stdout}"));
    println!("{}: {report}", set.file_name().unwrap().to_string_lossy());
    report
}

/// The result for the token `name` in a verifier's report.
fn result<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no result for {name}: {report}"))
}

/// A genuine classical token verified (its algorithm, the demo client as subject); its forgery
/// and the token for the wrong audience refused.
fn assert_classical_verified(report: &Value) {
    assert_eq!(report["set"]["ok"], true, "{report}");
    for (alg, _) in lanes().into_iter().filter(|(alg, _)| *alg != ML_DSA_65) {
        let genuine = result(report, &genuine(alg));
        assert_eq!(genuine["ok"], true, "{alg}: {report}");
        assert_eq!(genuine["alg"], alg, "{report}");
        assert_eq!(genuine["sub"], "demo", "{report}");
        assert_eq!(result(report, &forged(alg))["ok"], false, "{report}");
    }
    assert_eq!(result(report, WRONG_AUDIENCE)["ok"], false, "{report}");
}

/// The ML-DSA token and its forgery refused, with `error` (the verifier's "no such key").
fn assert_ml_dsa_refused(report: &Value, error: &str) {
    if !post_quantum() {
        return;
    }
    for name in [genuine(ML_DSA_65), forged(ML_DSA_65)] {
        let refused = result(report, &name);
        assert_eq!(refused["ok"], false, "{report}");
        assert!(
            refused["error"].as_str().unwrap().contains(error),
            "{name}: {report}"
        );
    }
}

#[tokio::test]
async fn pyjwt_reads_the_default_key_set() {
    let ready =
        runs(Command::new("python3").args(["-c", "import jwt, cryptography; jwt.PyJWKSet"]));
    if !ready {
        crate::binary::skipped("PyJWT (pip install -r tests/interop/requirements.txt)");
        return;
    }
    let fixture = fixture().await;
    let pyjwt = || {
        let mut command = Command::new("python3");
        command.arg(interop_dir().join("verify_pyjwt.py"));
        command
    };

    let default = report_of(pyjwt(), &fixture.default_set(), &fixture);
    assert_eq!(default["set"]["kids"], json!(fixture.default_kids));
    assert_classical_verified(&default);
    assert_ml_dsa_refused(&default, "no key for kid");

    // PyJWKSet skips a key it has no algorithm for (PyJWT has no ML-DSA): the full set loads,
    // the AKP key is left out of it, and the ML-DSA token finds no key.
    let full = report_of(pyjwt(), &fixture.full_set(), &fixture);
    assert_eq!(full["set"]["kids"], json!(fixture.default_kids));
    assert_classical_verified(&full);
    assert_ml_dsa_refused(&full, "no key for kid");
}

#[tokio::test]
async fn jose_reads_the_default_key_set() {
    let ready = runs(Command::new("node").arg("--version"))
        && interop_dir()
            .join("node_modules/jose/package.json")
            .exists();
    if !ready {
        crate::binary::skipped("node and jose (npm ci in tests/interop)");
        return;
    }
    let fixture = fixture().await;
    let jose = || {
        let mut command = Command::new("node");
        command.arg(interop_dir().join("verify_jose.mjs"));
        command
    };

    let default = report_of(jose(), &fixture.default_set(), &fixture);
    assert_classical_verified(&default);
    assert_ml_dsa_refused(&default, "ERR_JWKS_NO_MATCHING_KEY");

    // createLocalJWKSet takes the full set (keys are imported only when a token asks for one),
    // and the classical tokens verify as before. jose knows ML-DSA but verifies it through
    // WebCrypto: where the runtime has no ML-DSA (Node.js 20) importing the AKP key fails and
    // the token is refused; where it has, the token verifies.
    let full = report_of(jose(), &fixture.full_set(), &fixture);
    assert_classical_verified(&full);
    if post_quantum() {
        let ml_dsa = result(&full, &genuine(ML_DSA_65));
        if full["webcrypto_ml_dsa_65"] == true {
            assert_eq!(ml_dsa["ok"], true, "{full}");
            assert_eq!(ml_dsa["sub"], "demo", "{full}");
        } else {
            assert_eq!(ml_dsa["ok"], false, "{full}");
            assert!(
                ml_dsa["error"]
                    .as_str()
                    .unwrap()
                    .contains("NotSupportedError"),
                "{full}"
            );
        }
        assert_eq!(result(&full, &forged(ML_DSA_65))["ok"], false, "{full}");
    }
}

#[tokio::test]
async fn go_jose_reads_the_default_key_set_and_refuses_the_full_one() {
    let work = tempfile::tempdir().unwrap();
    let go = |args: &[&str]| {
        let mut command = Command::new("go");
        command
            .args(args)
            .current_dir(interop_dir())
            // GOPATH mode, offline: go-jose v2 from Debian's package under /usr/share/gocode.
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env(
                "GOPATH",
                format!("{}:/usr/share/gocode", work.path().display()),
            )
            .env("GOCACHE", work.path().join("cache"));
        command
    };
    let ready =
        runs(&mut go(&["version"])) && runs(&mut go(&["list", "gopkg.in/square/go-jose.v2/jwt"]));
    if !ready {
        crate::binary::skipped(
            "go and go-jose v2 (Debian golang-go golang-gopkg-square-go-jose.v2-dev)",
        );
        return;
    }
    let binary = work.path().join("verify_go");
    let built = go(&["build", "-o", binary.to_str().unwrap(), "./verify_go"])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let fixture = fixture().await;

    let default = report_of(Command::new(&binary), &fixture.default_set(), &fixture);
    assert_eq!(default["set"]["kids"], json!(fixture.default_kids));
    assert_classical_verified(&default);
    assert_ml_dsa_refused(&default, "0 keys for kid");

    // One key of a type go-jose does not know fails the whole set's unmarshalling: no token
    // could be verified with it, classical or not.
    let full = report_of(Command::new(&binary), &fixture.full_set(), &fixture);
    if fixture.full_has_akp {
        assert_eq!(full["set"]["ok"], false, "{full}");
        assert_eq!(
            full["set"]["error"], "square/go-jose: unknown json web key type 'AKP'",
            "{full}"
        );
    } else {
        // Without post-quantum keys the full set is the default one.
        assert_classical_verified(&full);
    }
}
