//! The development set-up `init` and `serve --dev` write: the resource server's identity in a
//! new directory, and in one an older version wrote.

use std::{path::Path, sync::Arc};

use rustls::{
    pki_types::{CertificateDer, UnixTime, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokenmint::config::{Config, resource_client_toml, starter_toml};
use tokenmint_core::client::Permission;

use crate::cli::{DevServer, tokenmint};

const RESOURCE_URI: &str = "spiffe://tokenmint.dev/demo-resource";

/// The files an `init` from before the resource server's pair wrote.
const OLD_FILES: [&str; 10] = [
    "certs/ca.pem",
    "certs/ca.key",
    "certs/server.pem",
    "certs/server.key",
    "certs/admin.pem",
    "certs/admin.key",
    "certs/demo.pem",
    "certs/demo.key",
    "tokenmint.toml",
    "tokenmint.kek",
];

/// `tokenmint init` in `dir`, which must succeed.
fn init(dir: &Path) -> std::process::Output {
    let output = tokenmint(dir).arg("init").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A directory as an older `init` left it: the resource pair gone, and the starter file
/// without its client.
fn old_style(dir: &Path) {
    init(dir);
    for file in ["certs/resource.pem", "certs/resource.key"] {
        std::fs::remove_file(dir.join(file)).unwrap();
    }
    let old = starter_toml().replace(resource_client_toml(), "");
    std::fs::write(dir.join("tokenmint.toml"), old).unwrap();
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap()
}

/// Whether the PEM certificate `leaf` is a client certificate that chains to the CA `ca`.
fn chains_to(ca: &[u8], leaf: &[u8]) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca).unwrap())
        .unwrap();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), tokenmint::tls::provider())
            .build()
            .unwrap();
    let leaf = CertificateDer::from_pem_slice(leaf).unwrap();
    verifier
        .verify_client_cert(&leaf, &[], UnixTime::now())
        .map(|_| ())
}

/// The SAN URIs of a PEM certificate.
fn san_uris(pem: &[u8]) -> Vec<String> {
    let der = CertificateDer::from_pem_slice(pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

#[cfg(unix)]
fn assert_private(dir: &Path, file: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join(file))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{file} is readable by its owner only");
}

#[cfg(not(unix))]
fn assert_private(_: &Path, _: &str) {}

#[test]
fn init_writes_the_resource_servers_certificate_from_the_dev_ca_and_a_client_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = init(dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for file in ["certs/resource.pem", "certs/resource.key"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("wrote ") && l.ends_with(file)),
            "{stdout}"
        );
    }
    assert!(output.stderr.is_empty(), "no note for a new directory");
    assert_private(dir.path(), "certs/resource.key");

    let (ca, resource) = (
        read(dir.path(), "certs/ca.pem"),
        read(dir.path(), "certs/resource.pem"),
    );
    assert_eq!(san_uris(&resource), [RESOURCE_URI]);
    chains_to(&ca, &resource).unwrap();
    let other = tokenmint::pki::CertificateAuthority::generate("another CA").unwrap();
    assert!(chains_to(other.cert_pem().as_bytes(), &resource).is_err());

    // The starter file's client for it: introspect, for the demo audience, nothing to issue.
    let config = Config::load(
        &dir.path().join("tokenmint.toml"),
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    let client = config
        .clients
        .iter()
        .find(|c| c.id.as_str() == "demo-resource")
        .unwrap();
    assert_eq!(client.permissions, [Permission::Introspect]);
    assert_eq!(client.introspect_audiences, ["https://demo.tokenmint.dev"]);
    let check = tokenmint(dir.path()).arg("check-config").output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("(3 clients;"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn init_in_an_older_directory_issues_the_resource_pair_from_its_ca_and_rewrites_nothing() {
    let dir = tempfile::tempdir().unwrap();
    old_style(dir.path());
    // The config is complete again, so that only the PKI is under test here.
    std::fs::write(dir.path().join("tokenmint.toml"), starter_toml()).unwrap();
    let before: Vec<Vec<u8>> = OLD_FILES.iter().map(|f| read(dir.path(), f)).collect();

    let output = init(dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let wrote: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("wrote "))
        .collect();
    assert_eq!(wrote.len(), 2, "{stdout}");
    assert!(wrote[0].ends_with("certs/resource.pem"), "{stdout}");
    assert!(wrote[1].ends_with("certs/resource.key"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("kept ")).count(),
        10
    );
    assert!(output.stderr.is_empty(), "{output:?}");

    let after: Vec<Vec<u8>> = OLD_FILES.iter().map(|f| read(dir.path(), f)).collect();
    assert!(before == after, "nothing but the resource pair was written");
    let resource = read(dir.path(), "certs/resource.pem");
    chains_to(&read(dir.path(), "certs/ca.pem"), &resource).unwrap();
    assert_eq!(san_uris(&resource), [RESOURCE_URI]);
    assert_private(dir.path(), "certs/resource.key");

    // A second run keeps all of it.
    let again = init(dir.path());
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(!stdout.contains("wrote "), "{stdout}");
    assert_eq!(read(dir.path(), "certs/resource.pem"), resource);
}

#[test]
fn init_still_refuses_a_development_pki_with_a_file_missing() {
    for missing in [
        &["certs/ca.key"][..],
        &["certs/ca.key", "certs/resource.pem", "certs/resource.key"],
        &[
            "certs/server.pem",
            "certs/resource.pem",
            "certs/resource.key",
        ],
        &["certs/resource.key"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path());
        for file in missing {
            std::fs::remove_file(dir.path().join(file)).unwrap();
        }
        let output = tokenmint(dir.path()).arg("init").output().unwrap();
        assert!(!output.status.success(), "{missing:?} is refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("{} does not", missing[0])),
            "{missing:?}: {stderr}"
        );
        assert!(stderr.contains("remove the certs/ directory"), "{stderr}");
        for file in missing {
            assert!(!dir.path().join(file).exists(), "{file} was not written");
        }
    }
}

#[test]
fn init_with_a_config_lacking_the_resource_client_shows_the_block_to_add_and_keeps_the_file() {
    let dir = tempfile::tempdir().unwrap();
    old_style(dir.path());
    let config = read(dir.path(), "tokenmint.toml");

    let output = init(dir.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("note: tokenmint.toml has no client \"demo-resource\""),
        "{stderr}"
    );
    assert!(stderr.contains("certs/resource.pem"), "{stderr}");
    assert!(stderr.contains(resource_client_toml()), "{stderr}");
    assert_eq!(
        read(dir.path(), "tokenmint.toml"),
        config,
        "the file is kept"
    );

    // The block, added as shown, makes a config that validates and names the client.
    let mut fixed = config;
    fixed.extend_from_slice(resource_client_toml().as_bytes());
    std::fs::write(dir.path().join("tokenmint.toml"), fixed).unwrap();
    let output = init(dir.path());
    assert!(output.stderr.is_empty(), "{output:?}");
    let check = tokenmint(dir.path()).arg("check-config").output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dev_lets_the_resource_certificate_watch_revocations_and_keys() {
    use tokenmint::grpc::proto::{
        WatchJwksRequest, WatchRevocationsRequest, key_service_client::KeyServiceClient,
        revocation_service_client::RevocationServiceClient,
    };
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(dir.path(), &[], None);
    tokio::task::block_in_place(|| server.wait_until_serving());
    let resource = server.channel("resource");
    let mut revocations = RevocationServiceClient::new(resource.clone())
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    revocations.message().await.unwrap().unwrap();
    let mut jwks = KeyServiceClient::new(resource)
        .watch_jwks(WatchJwksRequest::default())
        .await
        .unwrap()
        .into_inner();
    jwks.message().await.unwrap().unwrap();
    drop((revocations, jwks));
    tokio::task::block_in_place(|| server.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dev_in_an_older_directory_adds_the_pair_and_says_what_the_config_lacks() {
    use tokenmint::grpc::proto::{
        WatchRevocationsRequest, revocation_service_client::RevocationServiceClient,
    };
    let dir = tempfile::tempdir().unwrap();
    old_style(dir.path());
    let ca = read(dir.path(), "certs/ca.pem");
    let server = DevServer::start(dir.path(), &[("RUST_LOG", "info")], Some("server.log"));
    tokio::task::block_in_place(|| server.wait_until_serving());
    assert_eq!(read(dir.path(), "certs/ca.pem"), ca);
    chains_to(&ca, &read(dir.path(), "certs/resource.pem")).unwrap();
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(
        log.contains("tokenmint.toml has no client \\\"demo-resource\\\"")
            || log.contains("tokenmint.toml has no client \"demo-resource\""),
        "{log}"
    );
    assert!(log.contains("tokenmint init --dir"), "{log}");

    // The handshake takes the new certificate (it chains to the CA the server trusts), and the
    // server, without the client in its config, does not know it.
    let refused = RevocationServiceClient::new(server.channel("resource"))
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .unwrap_err();
    assert!(
        refused
            .message()
            .contains("does not identify an enabled client"),
        "{refused:?}"
    );
    tokio::task::block_in_place(|| server.stop());
}
