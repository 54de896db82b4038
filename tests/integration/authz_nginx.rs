//! `tokenmint authz` behind a real nginx configured by `deploy/nginx/tokenmint-authz.conf`
//! (that very file, its port, certificate paths and upstreams substituted): `serve --dev`,
//! the sidecar and nginx as processes, an echo service behind nginx that answers with the
//! identity headers it received, and callers over mTLS with the dev certificates. Skipped
//! (with a line saying so) where nginx is not installed, except under CI, where it fails.

use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, Uri},
};
use tokenmint::grpc::proto::{
    ClientSpec, ExchangeTokenRequest, GetClientRequest, IssueTokenRequest, RevokeTokenIdRequest,
    UpdateClientRequest, admin_service_client::AdminServiceClient,
    token_service_client::TokenServiceClient,
};
use tokenmint_core::txn;
use tonic::transport::Channel;

use crate::{
    authz::percent_encode,
    binary::{Running, command, free_port},
    verifier_examples::dev_server_with,
};

const BIN: &str = env!("CARGO_BIN_EXE_tokenmint");

/// The deployment example, as shipped.
const SITE: &str = include_str!("../../deploy/nginx/tokenmint-authz.conf");

/// The identity headers the service behind nginx reports back.
const SEEN: [&str; 11] = [
    "x-tokenmint-client-id",
    "x-tokenmint-scope",
    "x-tokenmint-audience",
    "x-tokenmint-jti",
    "x-tokenmint-subject",
    "x-tokenmint-actor",
    "x-tokenmint-txn",
    "x-tokenmint-txn-subject",
    "x-tokenmint-txn-scope",
    "txn-token",
    "x-ssl-client-cert",
];

/// The trust domain of the transaction-token test, as the dev PKI names its workloads.
const TRUST_DOMAIN: &str = "spiffe://tokenmint.dev";

/// Revocations measured from the issuer to a refusal at nginx.
const REVOCATIONS: usize = 20;
/// The longest one may take (the figures are printed; this bound is deliberately loose).
const REVOCATION_BOUND: Duration = Duration::from_secs(10);
/// The sidecar's default staleness bound, and how much later than it a refusal may come.
const STALENESS: Duration = Duration::from_secs(15);
const STALENESS_SLACK: Duration = Duration::from_secs(10);
/// How long any process here is waited for.
const START_BOUND: Duration = Duration::from_secs(30);

/// nginx from PATH or /usr/sbin; `None` (and a line saying so) when it is missing outside CI.
fn nginx_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nginx"))
            .find(|path| path.is_file())
    });
    let found = on_path.or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/nginx");
        sbin.is_file().then_some(sbin)
    });
    if found.is_none() {
        crate::binary::skipped("nginx is not installed (.ci/run installs Debian's package)");
    }
    found
}

/// An issuer, the sidecar against it, the echo service, and nginx in front, in one directory.
struct Stack {
    dir: tempfile::TempDir,
    issuer: Running,
    issuer_port: u16,
    /// A demo token, bound to the demo certificate.
    token: String,
    authz_ops_port: u16,
    nginx_port: u16,
    _authz: Running,
    _nginx: Running,
}

/// How nginx reaches the sidecar: the shipped file's loopback TCP, or one of its commented
/// alternatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Tcp,
    Unix,
    Tls,
}

impl Stack {
    async fn start(nginx: &Path) -> Self {
        Self::start_linked(nginx, Link::Tcp).await
    }

    async fn start_linked(nginx: &Path, link: Link) -> Self {
        Self::start_with(nginx, link, &[]).await
    }

    /// The stack with the overrides `env` given to both the issuer and the sidecar, as one
    /// config file in their shared directory would be.
    async fn start_with(nginx: &Path, link: Link, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, issuer_port, token) = dev_server_with(dir.path(), env);
        let (authz, verify_at, authz_ops_port) = start_authz(dir.path(), issuer_port, link, env);
        wait_ready(dir.path(), authz_ops_port).await;
        let upstream_port = echo_service().await;
        let (nginx, nginx_port) = start_nginx(nginx, dir.path(), link, &verify_at, upstream_port);
        Self {
            dir,
            issuer,
            issuer_port,
            token,
            authz_ops_port,
            nginx_port,
            _authz: authz,
            _nginx: nginx,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A caller of nginx presenting `who`'s certificate, or none.
    fn caller(&self, who: Option<&str>) -> Caller {
        Caller {
            client: https_client(self.path(), who, self.nginx_port),
            url: format!("https://localhost:{}/orders/42?full=1", self.nginx_port),
        }
    }

    /// A gRPC channel to the issuer as `who`.
    async fn issuer_channel(&self, who: &str) -> Channel {
        let tls = crate::binary::dev_tls(self.path(), who);
        Channel::from_shared(format!("https://localhost:{}", self.issuer_port))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The escaped PEM of `who`'s certificate, as nginx would forward it.
    fn escaped_certificate(&self, who: &str) -> String {
        let pem = std::fs::read_to_string(self.path().join(format!("certs/{who}.pem"))).unwrap();
        percent_encode(&pem)
    }

    fn certificate(&self, who: &str) -> String {
        std::fs::read_to_string(self.path().join(format!("certs/{who}.pem"))).unwrap()
    }

    /// Registers `who` (a client matched by its SAN URI, as the dev clients are) as one that
    /// may name a transaction token's subject itself, through the AdminService as admin: its
    /// registration as the issuer holds it, that one field changed.
    async fn let_assert_txn_subjects(&self, who: &str) {
        let mut admin = AdminServiceClient::new(self.issuer_channel("admin").await);
        let info = admin
            .get_client(GetClientRequest {
                client_id: who.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.matcher_kind, "san_uri", "{info:?}");
        let spec = ClientSpec {
            client_id: info.client_id,
            san_uri: info.matcher_value,
            scopes: info.scopes,
            default_scopes: info.default_scopes,
            audiences: info.audiences,
            default_audiences: info.default_audiences,
            introspect_audiences: info.introspect_audiences,
            permissions: info.permissions,
            default_lifetime: info.default_lifetime,
            max_lifetime: info.max_lifetime,
            disabled: !info.enabled,
            serves: info.serves,
            act_for: info.act_for,
            delegate_audiences: info.delegate_audiences,
            delegate_scopes: info.delegate_scopes,
            asserts_txn_subjects: true,
            ..ClientSpec::default()
        };
        let updated = admin
            .update_client(UpdateClientRequest { client: Some(spec) })
            .await
            .unwrap()
            .into_inner();
        assert!(updated.asserts_txn_subjects, "{updated:?}");
    }

    /// A transaction token for [`TRUST_DOMAIN`] that `who` gets by token exchange, naming the
    /// subject `subject` itself (unsigned JSON), for `purpose`.
    async fn txn_token(&self, who: &str, subject: &str, purpose: &str) -> String {
        let mut tokens = TokenServiceClient::new(self.issuer_channel(who).await);
        let issued = tokens
            .exchange_token(ExchangeTokenRequest {
                subject_token: serde_json::json!({ "sub": subject }).to_string(),
                subject_token_type: txn::UNSIGNED_JSON_TYPE.into(),
                requested_token_type: txn::TXN_TOKEN_TYPE.into(),
                audiences: vec![TRUST_DOMAIN.into()],
                scopes: vec![purpose.into()],
                ..ExchangeTokenRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(issued.token_type, "N_A", "{issued:?}");
        assert_eq!(issued.issued_token_type, txn::TXN_TOKEN_TYPE, "{issued:?}");
        issued.access_token
    }
}

/// `tokenmint authz` in `dir` against the issuer on `issuer_port`, listening as `link` says,
/// with the extra environment `env`: the process, where its forward auth listens
/// (`127.0.0.1:PORT` or the socket's path) and its ops port, read from the lines it prints
/// once bound.
fn start_authz(
    dir: &Path,
    issuer_port: u16,
    link: Link,
    env: &[(&str, &str)],
) -> (Running, String, u16) {
    let listen = match link {
        Link::Unix => format!("unix:{}", dir.join("authz.sock").display()),
        Link::Tcp | Link::Tls => "127.0.0.1:0".into(),
    };
    let mut command = command(Path::new(BIN), dir);
    command.envs(env.iter().copied());
    if link == Link::Tls {
        proxy_pki(&dir.join("certs"));
        for (key, file) in [
            ("PROXY_CA", "authz-ca.pem"),
            ("TLS_CERT", "authz.pem"),
            ("TLS_KEY", "authz.key"),
        ] {
            command.env(format!("TOKENMINT__AUTHZ__{key}"), format!("certs/{file}"));
        }
    }
    let mut child = command
        .args(["authz", "--listen", &listen])
        .args([
            "--ops-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "off",
            "--issuer",
        ])
        .arg(format!("https://localhost:{issuer_port}"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("authz.log")).unwrap())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let running = Running::from(child);
    let log = || std::fs::read_to_string(dir.join("authz.log")).unwrap_or_default();
    let after = |prefix: &str| -> String {
        let line = lines
            .recv_timeout(START_BOUND)
            .unwrap_or_else(|_| panic!("authz printed no {prefix:?} line: {}", log()));
        line.trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected line {line:?} (wanted {prefix}…)"))
            .to_owned()
    };
    let verify = after(match link {
        Link::Tcp => "authz: forward auth on http://",
        Link::Unix => "authz: forward auth on unix:",
        Link::Tls => "authz: forward auth on https://",
    });
    let ops: SocketAddr = after("authz: ops on http://").parse().unwrap();
    (running, verify, ops.port())
}

/// The proxy's PKI, apart from the issuer's, written into `certs`: `authz-ca.pem` (the CA),
/// `authz.pem`/`.key` (the sidecar's server certificate), `proxy.pem`/`.key` (nginx's).
fn proxy_pki(certs: &Path) {
    let pki = crate::support::Pki::new();
    let proxy = pki.client_uri("spiffe://proxy.example/nginx");
    for (file, contents) in [
        ("authz-ca.pem", pki.ca.cert_pem().to_owned()),
        ("authz.pem", pki.server.cert_pem.clone()),
        ("authz.key", pki.server.key_pem.to_string()),
        ("proxy.pem", proxy.cert_pem.clone()),
        ("proxy.key", proxy.key_pem.to_string()),
    ] {
        std::fs::write(certs.join(file), contents).unwrap();
    }
}

/// The lines a child prints, read on a thread that drains its output until it exits (so it
/// never writes into a closed pipe).
fn lines_of(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = send.send(line);
        }
    });
    receive
}

/// `/readyz` of the sidecar, once: its status (0 if it did not answer) and body.
async fn readyz(ops_port: u16) -> (u16, String) {
    crate::support::install_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let answer = client
        .get(format!("http://127.0.0.1:{ops_port}/readyz"))
        .send()
        .await;
    match answer {
        Ok(answer) => (
            answer.status().as_u16(),
            answer.text().await.unwrap_or_default(),
        ),
        Err(error) => (0, error.to_string()),
    }
}

/// Until the sidecar has the issuer's keys and revocations (bounded).
async fn wait_ready(dir: &Path, ops_port: u16) {
    let deadline = Instant::now() + START_BOUND;
    loop {
        let (status, body) = readyz(ops_port).await;
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "authz never became ready: /readyz {status} {body}{}",
            std::fs::read_to_string(dir.join("authz.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The service behind nginx: any request answered with the identity headers it carried (each
/// header's every value, so a header passed twice shows), and the URI.
async fn echo_service() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // The body is read in full before answering: answering first and closing would make
    // nginx, still sending it, answer 502.
    let app =
        axum::Router::new().fallback(|uri: Uri, headers: HeaderMap, body: Bytes| async move {
            let mut seen = serde_json::Map::new();
            seen.insert("uri".into(), uri.to_string().into());
            seen.insert("body_len".into(), body.len().into());
            for name in SEEN {
                let values: Vec<serde_json::Value> = headers
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
                    .collect();
                seen.insert(name.into(), values.into());
            }
            axum::Json(serde_json::Value::Object(seen))
        });
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// The shipped site with this test's port, certificates and upstreams, and for `link` its
/// commented lines in place of the ones they replace; each substitution checked to have found
/// its place, so the test runs the file as it is.
fn site(dir: &Path, port: u16, link: Link, verify_at: &str, upstream_port: u16) -> String {
    let certs = format!("{}/", dir.join("certs").display());
    let tcp = "    server 127.0.0.1:9191;\n";
    let plain_pass = "        proxy_pass http://tokenmint_authz/verify;\n";
    let mut substitutions = vec![
        (
            "listen 443 ssl;",
            format!("listen 127.0.0.1:{port} ssl;"),
            1,
        ),
        ("/etc/tokenmint/certs/", certs, 6),
        (
            "server 127.0.0.1:8080;",
            format!("server 127.0.0.1:{upstream_port};"),
            1,
        ),
    ];
    match link {
        Link::Tcp => substitutions.push((tcp, format!("    server {verify_at};\n"), 1)),
        Link::Unix => substitutions.extend([
            (tcp, String::new(), 1),
            (
                "#server unix:/run/tokenmint/authz.sock;",
                format!("server unix:{verify_at};"),
                1,
            ),
        ]),
        Link::Tls => substitutions.extend([
            (tcp, String::new(), 1),
            (
                "#server authz.internal.example:9191;",
                format!("server {verify_at};"),
                1,
            ),
            (plain_pass, String::new(), 1),
            ("        #proxy_", "        proxy_".into(), 7),
        ]),
    }
    let mut site = SITE.to_owned();
    for (from, to, times) in substitutions {
        assert_eq!(site.matches(from).count(), times, "{from} in the site");
        site = site.replace(from, &to);
    }
    site
}

/// nginx in the foreground as this test's child, everything it writes under `dir/nginx`,
/// serving the site on a free port: the process and that port, once it accepts connections.
fn start_nginx(
    nginx: &Path,
    dir: &Path,
    link: Link,
    verify_at: &str,
    upstream_port: u16,
) -> (Running, u16) {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix).unwrap();
    let port = free_port();
    std::fs::write(
        prefix.join("tokenmint-authz.conf"),
        site(dir, port, link, verify_at, upstream_port),
    )
    .unwrap();
    let p = prefix.display();
    // One process, no privileges dropped: nothing to clean up beside it when it is killed.
    let main = format!(
        "master_process off;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
             access_log {p}/access.log;\n\
             client_body_temp_path {p}/client_body;\n\
             proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fastcgi;\n\
             uwsgi_temp_path {p}/uwsgi;\n\
             scgi_temp_path {p}/scgi;\n\
             include {p}/tokenmint-authz.conf;\n\
         }}\n"
    );
    std::fs::write(prefix.join("nginx.conf"), main).unwrap();
    let mut process = Running::from(
        std::process::Command::new(nginx)
            .arg("-p")
            .arg(format!("{p}/"))
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prefix.join("stderr.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || {
        let read = |f: &str| std::fs::read_to_string(prefix.join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    };
    let deadline = Instant::now() + START_BOUND;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = process.try_wait().unwrap() {
            panic!("nginx exited ({status}): {}", log());
        }
        assert!(Instant::now() < deadline, "nginx never listened: {}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    (process, port)
}

/// An HTTPS client of nginx on `port` trusting the dev CA, presenting `who`'s certificate if
/// given (`localhost` resolved to 127.0.0.1, where nginx listens).
fn https_client(dir: &Path, who: Option<&str>, port: u16) -> reqwest::Client {
    crate::binary::dev_https(dir, who)
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap()
}

/// A caller of the service behind nginx.
struct Caller {
    client: reqwest::Client,
    url: String,
}

/// What a caller got: the status, the refusal's headers, or what the service saw.
#[derive(Debug)]
struct Answer {
    status: u16,
    challenges: Vec<String>,
    retry_after: Option<String>,
    seen: serde_json::Value,
}

impl Answer {
    /// The one value the service saw of `header`, failing if it saw it twice.
    fn seen(&self, header: &str) -> Option<&str> {
        let values = self.seen[header].as_array().unwrap();
        assert!(values.len() <= 1, "{header} passed twice: {values:?}");
        values.first().map(|v| v.as_str().unwrap())
    }

    /// A refusal with `status` and one Bearer challenge.
    fn assert_refused(&self, status: u16, case: &str) {
        assert_eq!(self.status, status, "{case}: {self:?}");
        assert_eq!(self.challenges.len(), 1, "{case}: {self:?}");
        assert!(self.challenges[0].starts_with("Bearer"), "{case}: {self:?}");
    }
}

impl Caller {
    async fn call(&self, token: Option<&str>, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.client.get(&self.url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let challenges = answer
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let retry_after = answer
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let seen = if status == 200 {
            answer.json().await.unwrap()
        } else {
            serde_json::Value::Null
        };
        Answer {
            status,
            challenges,
            retry_after,
            seen,
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// `token` with one character of its signature changed.
fn forged(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut signature = signature.to_owned().into_bytes();
    let middle = signature.len() / 2;
    signature[middle] = if signature[middle] == b'A' {
        b'B'
    } else {
        b'A'
    };
    format!("{signed}.{}", String::from_utf8(signature).unwrap())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_the_bound_caller_passes_and_the_rest_are_refused_with_a_challenge() {
    let Some(nginx) = nginx_binary() else {
        return;
    };
    let stack = Stack::start(&nginx).await;
    let token = stack.token.as_str();
    let (demo, admin, anonymous) = (
        stack.caller(Some("demo")),
        stack.caller(Some("admin")),
        stack.caller(None),
    );

    let allowed = demo.call(Some(token), &[]).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.seen("x-tokenmint-client-id"), Some("demo"));
    assert_eq!(allowed.seen("x-tokenmint-scope"), Some("demo:read"));
    assert_eq!(
        allowed.seen("x-tokenmint-audience"),
        Some("https://demo.tokenmint.dev")
    );
    assert!(
        allowed
            .seen("x-tokenmint-jti")
            .is_some_and(|j| !j.is_empty())
    );
    let forwarded = allowed.seen("x-ssl-client-cert").unwrap();
    assert_eq!(
        percent_decode(forwarded).trim(),
        stack.certificate("demo").trim()
    );
    assert_eq!(allowed.seen["uri"], "/orders/42?full=1");
    // Any method: the body goes to the service, never to the sidecar.
    let posted = demo
        .client
        .post(&demo.url)
        .bearer_auth(token)
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let seen: serde_json::Value = posted.json().await.unwrap();
    assert_eq!(
        seen["body_len"],
        64 * 1024,
        "the body reached the service whole"
    );

    // The token bound to demo's certificate, from another certificate or none: 403.
    admin
        .call(Some(token), &[])
        .await
        .assert_refused(403, "another certificate");
    anonymous
        .call(Some(token), &[])
        .await
        .assert_refused(403, "no certificate");

    // No token, a forged one, garbage: 401. A JWS as long as tokenmint issues (8 KiB, an
    // ML-DSA-65 token with many scopes) reaches the sidecar, not nginx's own 400 for a header
    // line past its buffers (`large_client_header_buffers` in the shipped file).
    let header = crypto_b64(br#"{"alg":"ML-DSA-65","typ":"at+jwt","kid":"k"}"#);
    let long = format!(
        "{header}.{}.{}",
        "A".repeat(3000),
        "B".repeat(8192 - 3002 - header.len())
    );
    assert_eq!(long.len(), 8192);
    for (case, token) in [
        ("no token", None),
        ("a forged signature", Some(forged(token))),
        ("garbage", Some("not.a.token".to_owned())),
        ("not even a JWS", Some("garbage".to_owned())),
        ("an unknown key, 8 KiB long", Some(long)),
    ] {
        demo.call(token.as_deref(), &[])
            .await
            .assert_refused(401, case);
    }

    // Headers a caller sets itself count for nothing: the certificate is the connection's,
    // the identity the sidecar's.
    let demo_cert = stack.escaped_certificate("demo");
    let as_demo = [("x-ssl-client-cert", demo_cert.as_str())];
    admin
        .call(Some(token), &as_demo)
        .await
        .assert_refused(403, "admin claiming demo's certificate");
    anonymous
        .call(Some(token), &as_demo)
        .await
        .assert_refused(403, "no certificate, claiming demo's");
    let admin_cert = stack.escaped_certificate("admin");
    let claims = demo
        .call(
            Some(token),
            &[
                ("x-tokenmint-client-id", "admin"),
                ("x-tokenmint-scope", "admin"),
                ("x-tokenmint-subject", "admin"),
                ("x-tokenmint-actor", "admin"),
                ("x-ssl-client-cert", admin_cert.as_str()),
            ],
        )
        .await;
    assert_eq!(claims.status, 200, "{claims:?}");
    assert_eq!(claims.seen("x-tokenmint-client-id"), Some("demo"));
    assert_eq!(claims.seen("x-tokenmint-subject"), Some("demo"));
    assert_eq!(claims.seen("x-tokenmint-actor"), None, "not delegated");
    assert_eq!(claims.seen("x-tokenmint-scope"), Some("demo:read"));
    assert_eq!(claims.seen("x-ssl-client-cert"), Some(forwarded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_a_token_revoked_at_the_issuer_is_refused_within_seconds() {
    let Some(nginx) = nginx_binary() else {
        return;
    };
    let stack = Stack::start(&nginx).await;
    let demo = stack.caller(Some("demo"));
    let mut tokens = TokenServiceClient::new(stack.issuer_channel("demo").await);
    let mut admin = AdminServiceClient::new(stack.issuer_channel("admin").await);

    // From the revocation acknowledged by the issuer, and from the call asking for it.
    let (mut after_ack, mut after_ask) = (Vec::new(), Vec::new());
    for _ in 0..REVOCATIONS {
        let token = tokens
            .issue_token(IssueTokenRequest::default())
            .await
            .unwrap()
            .into_inner()
            .access_token;
        let allowed = demo.call(Some(&token), &[]).await;
        assert_eq!(allowed.status, 200, "{allowed:?}");
        let jti = allowed.seen("x-tokenmint-jti").unwrap().to_owned();
        let asked = Instant::now();
        admin
            .revoke_token_id(RevokeTokenIdRequest { token_id: jti })
            .await
            .unwrap();
        let revoked = Instant::now();
        loop {
            let answer = demo.call(Some(&token), &[]).await;
            if answer.status != 200 {
                answer.assert_refused(401, "a revoked token");
                break;
            }
            assert!(
                revoked.elapsed() < REVOCATION_BOUND,
                "a revoked token still allowed after {REVOCATION_BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        after_ack.push(revoked.elapsed());
        after_ask.push(asked.elapsed());
    }
    after_ack.sort();
    after_ask.sort();
    println!(
        "revocation → refusal at nginx over {REVOCATIONS} revocations: after the issuer's \
         acknowledgement p50 {:?}, max {:?}; from the revoke call p50 {:?}, max {:?}",
        percentile(&after_ack, 0.5),
        after_ack[REVOCATIONS - 1],
        percentile(&after_ask, 0.5),
        after_ask[REVOCATIONS - 1],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_an_issuer_gone_leaves_tokens_honoured_until_the_sidecar_is_stale() {
    let Some(nginx) = nginx_binary() else {
        return;
    };
    let mut stack = Stack::start(&nginx).await;
    let demo = stack.caller(Some("demo"));
    let token = stack.token.clone();

    stack.issuer.kill().unwrap();
    stack.issuer.wait().unwrap();
    let gone = Instant::now();
    let first = demo.call(Some(&token), &[]).await;
    assert_eq!(
        first.status, 200,
        "at once after the issuer left: {first:?}"
    );

    let refused = loop {
        let answer = demo.call(Some(&token), &[]).await;
        if answer.status != 200 {
            break answer;
        }
        assert!(
            gone.elapsed() < STALENESS + STALENESS_SLACK,
            "still allowed {:?} after the issuer left",
            gone.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let after = gone.elapsed();
    refused.assert_refused(401, "a stale sidecar");
    assert!(refused.retry_after.is_some(), "{refused:?}");
    assert_eq!(readyz(stack.authz_ops_port).await.0, 503);
    println!("issuer gone → refusal at nginx after {after:?}");
}

/// A path that needs a transaction token (`authz.txn_required`, `/orders` for `demo:read`):
/// refused without one, with garbage, or with the transaction token in the bearer token's
/// place; with one the issuer gave demo, the service is told the transaction, its subject and
/// its purpose as the sidecar verified them, whatever the caller claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_a_path_that_needs_a_transaction_token_gets_one_verified() {
    let Some(nginx) = nginx_binary() else {
        return;
    };
    let stack = Stack::start_with(
        &nginx,
        Link::Tcp,
        &[
            // The issuer's, and through it the sidecar's (authz.trust_domain's default).
            ("TOKENMINT__TXN_TOKENS__TRUST_DOMAIN", TRUST_DOMAIN),
            (
                "TOKENMINT__AUTHZ__TXN_REQUIRED",
                r#"{ "/orders" = ["demo:read"] }"#,
            ),
        ],
    )
    .await;
    let token = stack.token.as_str();
    let demo = stack.caller(Some("demo"));
    let txn_refused = |answer: Answer, case: &str| {
        answer.assert_refused(403, case);
        assert!(
            answer.challenges[0].contains("invalid_request"),
            "{case}: {answer:?}"
        );
    };

    // The access token alone, good as it is, is not enough under /orders.
    txn_refused(demo.call(Some(token), &[]).await, "no transaction token");

    // demo, an edge here, starts a transaction for user:alice.
    stack.let_assert_txn_subjects("demo").await;
    let txn = stack.txn_token("demo", "user:alice", "demo:read").await;
    let payload = txn.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&tokenmint_core::crypto::b64url_decode(payload).unwrap()).unwrap();
    let txn_id = claims["txn"].as_str().unwrap();
    assert!(!txn_id.is_empty(), "{claims}");

    // With it: through, the service told the transaction as verified; the caller's own claims
    // replaced.
    let allowed = demo
        .call(
            Some(token),
            &[
                ("txn-token", txn.as_str()),
                ("x-tokenmint-txn", "forged-transaction"),
                ("x-tokenmint-txn-subject", "root"),
                ("x-tokenmint-txn-scope", "admin"),
            ],
        )
        .await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.seen("x-tokenmint-txn"), Some(txn_id));
    assert_eq!(allowed.seen("x-tokenmint-txn-subject"), Some("user:alice"));
    assert_eq!(allowed.seen("x-tokenmint-txn-scope"), Some("demo:read"));
    assert_eq!(allowed.seen("x-tokenmint-client-id"), Some("demo"));
    assert_eq!(allowed.seen["uri"], "/orders/42?full=1");
    assert_eq!(allowed.seen("txn-token"), Some(txn.as_str()));

    // A second Txn-Token after the checked one never reaches the service.
    let twice = demo
        .call(
            Some(token),
            &[("txn-token", txn.as_str()), ("txn-token", "not.a.token")],
        )
        .await;
    assert_eq!(twice.status, 200, "{twice:?}");
    assert_eq!(
        twice.seen("txn-token"),
        Some(txn.as_str()),
        "only the one checked"
    );

    // Garbage, or the access token, in its place: 403.
    for (case, garbage) in [
        ("a garbage transaction token", "not.a.token"),
        ("the access token as transaction token", token),
    ] {
        txn_refused(
            demo.call(Some(token), &[("txn-token", garbage)]).await,
            case,
        );
    }
    // The transaction token is never a bearer token: 401.
    demo.call(Some(&txn), &[("txn-token", txn.as_str())])
        .await
        .assert_refused(401, "the transaction token as the bearer token");
}

/// The shipped file's commented alternatives, run for real: the sidecar on a Unix socket, and
/// the sidecar over TLS requiring nginx's own certificate. The same decisions come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_the_sidecar_on_a_unix_socket_or_over_tls_decides_the_same() {
    let Some(nginx) = nginx_binary() else {
        return;
    };
    for link in [Link::Unix, Link::Tls] {
        let stack = Stack::start_linked(&nginx, link).await;
        let token = stack.token.as_str();
        let allowed = stack.caller(Some("demo")).call(Some(token), &[]).await;
        assert_eq!(allowed.status, 200, "{link:?}: {allowed:?}");
        assert_eq!(
            allowed.seen("x-tokenmint-client-id"),
            Some("demo"),
            "{link:?}"
        );
        stack
            .caller(Some("admin"))
            .call(Some(token), &[])
            .await
            .assert_refused(403, &format!("{link:?}: another certificate"));
        stack
            .caller(Some("demo"))
            .call(None, &[])
            .await
            .assert_refused(401, &format!("{link:?}: no token"));
    }
}

/// base64url without padding.
fn crypto_b64(bytes: &[u8]) -> String {
    tokenmint_core::crypto::b64url(bytes)
}
