//! The fuzz targets' seed corpus (`fuzz/corpus/<target>/`) and the key set the `jws` seeds are
//! signed under (`fuzz/jwks.json`), made from the project's own fixtures: every forgery vector
//! of `forgeries.rs` (by class), certificates and names from the test PKI, each proxy's
//! certificate header, the starter configuration, encoded gRPC requests.
//!
//! `TOKENMINT_WRITE_FUZZ_CORPUS=1 cargo test --test integration fuzz_corpus` writes them anew;
//! without it the test checks what is committed: every target has seeds, every forgery class
//! is there, and the control token verifies under `fuzz/jwks.json` with the core's own check.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use prost::Message as _;
use tokenmint::grpc::proto::{ClientSpec, IssueTokenRequest};
use tokenmint_core::jose;

use crate::forgeries::{CLASSES, control, offline_context, vectors};
use crate::support::*;

/// Every fuzz target (`fuzz/fuzz_targets/<name>.rs`).
const TARGETS: [&str; 7] = [
    "jws",
    "jwks",
    "identity",
    "forwarded",
    "oauth_form",
    "config",
    "proto",
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Replaces `target`'s seeds with `seeds` (name, bytes).
fn write_seeds(target: &str, seeds: Vec<(String, Vec<u8>)>) {
    let dir = fuzz_dir().join("corpus").join(target);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn numbered(prefix: &str, items: Vec<Vec<u8>>) -> Vec<(String, Vec<u8>)> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| (format!("{prefix}-{i:03}"), bytes))
        .collect()
}

/// The `jws` seeds (control and every forgery) and their key set; the `jwks` seeds.
fn write_tokens() {
    let ctx = offline_context();
    std::fs::write(fuzz_dir().join("jwks.json"), &ctx.jwks_json).unwrap();
    let mut seeds = vec![("control".to_owned(), control(&ctx).into_bytes())];
    for (i, forgery) in vectors(&ctx).into_iter().enumerate() {
        seeds.push((
            format!("{}-{i:03}", forgery.class),
            forgery.token.into_bytes(),
        ));
    }
    write_seeds("jws", seeds);
    let jwks = [
        ctx.jwks_json.clone(),
        "{\"keys\":[]}".into(),
        ctx.jwks_json.replace("\"ES256\"", "\"none\""),
        ctx.jwks_json.replace("\"sig\"", "\"enc\""),
        other_key_types(),
    ];
    write_seeds(
        "jwks",
        numbered("set", jwks.map(String::into_bytes).to_vec()),
    );
}

/// A set with an RSA key and an ML-DSA-44 (`AKP`) key, each under its thumbprint, made by
/// jwt-simple (so in either build).
fn other_key_types() -> String {
    use jwt_simple::prelude::{MLDSA44KeyPair, RS256KeyPair};
    let rsa = RS256KeyPair::generate(2048).unwrap().public_key();
    let rsa_kid = rsa.jwk_thumbprint();
    let rsa = rsa.with_key_id(&rsa_kid).to_jwk();
    let pq = MLDSA44KeyPair::generate().public_key();
    let pq_kid = pq.jwk_thumbprint();
    let pq = pq.with_key_id(&pq_kid).to_jwk();
    format!("{{\"keys\":[{rsa},{pq}]}}")
}

/// Names, matcher values and certificates (`identity`); each proxy's header and paths
/// (`forwarded`).
fn write_certificates() {
    let pki = Pki::new();
    let demo = pki.client_uri(DEMO_URI);
    let mut identity: Vec<Vec<u8>> = [
        "CN=demo,O=tokenmint,C=SE",
        "CN=a\\,b+OU=x\\+y,O=\"q\"",
        "CN=#0403616263",
        "1.2.3.4=#0c03616263,CN=\\20lead\\20",
        DEMO_URI,
        "demo.tokenmint.test",
        "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec();
    identity.extend([demo.cert_der.clone(), pki.server.cert_der.clone()]);
    write_seeds("identity", numbered("seed", identity));

    let escaped = crate::authz::percent_encode(&demo.cert_pem);
    let der = base64::engine::general_purpose::STANDARD.encode(&demo.cert_der);
    let forwarded = [
        escaped.clone(),
        format!("{der},{der}"),
        format!("By=spiffe://proxy;Hash=00;Cert=\"{escaped}\";URI={DEMO_URI}"),
        format!("Cert=\"{escaped}\",Cert=\"{escaped}\""),
        "/public/%2e%2e/admin?x=1".into(),
        "http://host:8080//a/./b/../c".into(),
    ];
    write_seeds(
        "forwarded",
        numbered("seed", forwarded.map(String::into_bytes).to_vec()),
    );
}

/// Bodies (`oauth_form`), configuration files (`config`), encoded requests (`proto`).
fn write_requests() {
    let forms = [
        "\ngrant_type=client_credentials&scope=demo%3Aread+demo:write&resource=https%3A%2F%2Fa",
        "Basic ZGVtbzpzM2NyZXQ=\ngrant_type=client_credentials",
        "\ngrant_type=client_credentials&client_id=demo&client_secret=x&scope=a&scope=b",
        "\ntoken=eyJhbGciOiJFUzI1NiJ9.e30.AA&token_type_hint=access_token",
        "\ntoken=t&presented_certificate_thumbprint=",
    ];
    write_seeds(
        "oauth_form",
        numbered("seed", forms.map(|s| s.as_bytes().to_vec()).to_vec()),
    );
    let configs = [
        tokenmint::config::starter_toml(),
        format!("[server]\nissuer = \"{ISSUER}\"\n{}", standard_clients()),
        "[authz]\nlisten = \"unix:a.sock\"\n[authz.required_scopes]\n\"/admin\" = [\"x\"]\n".into(),
        "[keys]\nrotation_period = \"1h\"\npublish_ahead = \"1m\"\n".into(),
    ];
    write_seeds(
        "config",
        numbered("seed", configs.map(String::into_bytes).to_vec()),
    );
    let issue = IssueTokenRequest {
        scopes: vec!["demo:read".into()],
        audiences: vec!["https://demo.tokenmint.dev".into()],
        lifetime: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    };
    let spec = ClientSpec {
        client_id: "svc".into(),
        san_uri: "spiffe://tokenmint.dev/svc".into(),
        scopes: vec!["a".into()],
        audiences: vec!["https://a".into()],
        permissions: vec!["issue".into()],
        max_lifetime: Some(prost_types::Duration {
            seconds: 600,
            nanos: 0,
        }),
        ..Default::default()
    };
    write_seeds(
        "proto",
        numbered("seed", vec![issue.encode_to_vec(), spec.encode_to_vec()]),
    );
}

#[test]
fn the_fuzz_corpus_seeds_every_target_and_every_forgery_class() {
    if std::env::var_os("TOKENMINT_WRITE_FUZZ_CORPUS").is_some() {
        write_tokens();
        write_certificates();
        write_requests();
    }
    let dir = fuzz_dir();
    let mut shims: Vec<String> = std::fs::read_dir(dir.join("fuzz_targets"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    shims.sort_unstable();
    let mut targets = TARGETS.map(str::to_owned).to_vec();
    targets.sort_unstable();
    assert_eq!(
        shims, targets,
        "fuzz/fuzz_targets and TARGETS name the same targets"
    );
    for target in TARGETS {
        let seeds = std::fs::read_dir(dir.join("corpus").join(target)).map_or(0, Iterator::count);
        assert!(
            seeds > 0,
            "no seeds for {target}: write them (see the module docs)"
        );
    }
    let jws: Vec<String> = std::fs::read_dir(dir.join("corpus/jws"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for class in CLASSES {
        assert!(
            jws.iter()
                .any(|name| name.starts_with(&format!("{class}-"))),
            "no jws seed of class {class}"
        );
    }
    let keys = jose::parse_jwks(&std::fs::read_to_string(dir.join("jwks.json")).unwrap())
        .unwrap()
        .keys;
    let control = std::fs::read_to_string(dir.join("corpus/jws/control")).unwrap();
    let verified = tokenmint_core::token::verify_signature(&control, &keys, ISSUER);
    assert!(verified.is_ok(), "the control seed verifies: {verified:?}");
}
