//! The `tokenmint-verify` examples, run as a user runs them: `tokenmint serve --dev` in a
//! directory, `whoami-http` and `whoami-grpc` beside it with their defaults (only the ports
//! differ), and callers with the demo certificate, with another, with none, and with none
//! of a token.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::binary::{Running, command, free_port, spawn_server};

const BIN: &str = env!("CARGO_BIN_EXE_tokenmint");

/// An example binary built beside this test binary (`cargo test` builds the workspace's
/// examples); `None` outside CI if it was not built (a filtered `cargo test -p tokenmint`).
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent()?.parent()?.join("examples").join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} was not built: run the whole `cargo test`",
        path.display()
    );
    eprintln!(
        "skipped: {} was not built (run the whole `cargo test`)",
        path.display()
    );
    None
}

/// The example running in `dir` against the issuer on `issuer_port` (whose `serve --dev` names
/// itself `https://localhost:<port>`), and where it listens.
fn start_example(path: &Path, dir: &Path, issuer_port: u16) -> (Running, String) {
    let mut child = Command::new(path)
        .current_dir(dir)
        .args(["--listen", "127.0.0.1:0", "--issuer"])
        .arg(format!("https://localhost:{issuer_port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running::from(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on https://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let port = addr.rsplit_once(':').unwrap().1.to_owned();
    (running, format!("localhost:{port}"))
}

/// `serve --dev` in `dir`, waited for until the demo client gets a token: that token.
pub(crate) fn dev_server(dir: &Path) -> (Running, u16, String) {
    dev_server_with(dir, &[])
}

/// [`dev_server`] with the extra environment `env` (`TOKENMINT__*` overrides, say).
pub(crate) fn dev_server_with(dir: &Path, env: &[(&str, &str)]) -> (Running, u16, String) {
    let port = free_port();
    let server = spawn_server(Path::new(BIN), dir, port, "serve.log", None, env);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = command(Path::new(BIN), dir)
            .args(["token", "issue", "--server"])
            .arg(format!("https://localhost:{port}"))
            .output()
            .unwrap();
        if output.status.success() {
            let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            let token = answer["access_token"].as_str().unwrap().to_owned();
            return (server, port, token);
        }
        assert!(Instant::now() < deadline, "serve --dev never served");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An HTTPS client trusting the dev CA, presenting `who`'s certificate if given.
fn client(dir: &Path, who: Option<&str>) -> reqwest::Client {
    crate::binary::dev_https(dir, who).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_http_answers_the_demo_caller_and_refuses_the_rest_in_rfc_6750() {
    let Some(path) = example("whoami-http") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, issuer_port, token) = dev_server(dir.path());
    let (_example, authority) = start_example(&path, dir.path(), issuer_port);
    let url = format!("https://{authority}/whoami");
    let get = |who: Option<&str>, token: Option<&str>| {
        let mut request = client(dir.path(), who).get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let answer = get(Some("demo"), Some(&token)).await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["client_id"], "demo");
    assert_eq!(
        body["aud"],
        serde_json::json!(["https://demo.tokenmint.dev"])
    );
    assert_eq!(body["scope"], "demo:read");
    assert!(body["jti"].as_str().is_some_and(|j| !j.is_empty()));

    for (who, token, challenge) in [
        (Some("admin"), Some(token.as_str()), "invalid_token"),
        (None, Some(token.as_str()), "invalid_token"),
        (Some("demo"), None, ""),
        (Some("demo"), Some("not.a.token"), "invalid_token"),
    ] {
        let answer = get(who, token).await.unwrap();
        assert_eq!(answer.status(), 401, "{who:?}");
        let header = answer.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(header.starts_with("Bearer"), "{header}");
        assert!(header.contains(challenge), "{header}");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
}

/// The example's messages, as its `whoami.proto` declares them.
#[derive(Clone, PartialEq, prost::Message)]
struct WhoamiRequest {}

#[derive(Clone, PartialEq, prost::Message)]
struct WhoamiResponse {
    #[prost(string, tag = "1")]
    client_id: String,
    #[prost(string, tag = "2")]
    scope: String,
    #[prost(string, repeated, tag = "3")]
    aud: Vec<String>,
    #[prost(string, tag = "4")]
    jti: String,
}

async fn whoami_grpc(
    dir: &Path,
    authority: &str,
    who: &str,
    token: Option<&str>,
) -> Result<WhoamiResponse, tonic::Status> {
    let tls = crate::binary::dev_tls(dir, who);
    let channel = tonic::transport::Channel::from_shared(format!("https://{authority}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(WhoamiRequest {});
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    let codec = tonic_prost::ProstCodec::<WhoamiRequest, WhoamiResponse>::default();
    let path = "/tokenmint.example.Whoami/Whoami".parse().unwrap();
    grpc.unary(request, path, codec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_grpc_answers_the_demo_caller_and_refuses_the_rest_with_statuses() {
    let Some(path) = example("whoami-grpc") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, issuer_port, token) = dev_server(dir.path());
    let (_example, authority) = start_example(&path, dir.path(), issuer_port);

    let answer = whoami_grpc(dir.path(), &authority, "demo", Some(&token))
        .await
        .unwrap();
    assert_eq!(answer.client_id, "demo");
    assert_eq!(answer.aud, ["https://demo.tokenmint.dev"]);
    assert!(!answer.jti.is_empty());
    for (who, token) in [("admin", Some(token.as_str())), ("demo", None)] {
        let status = whoami_grpc(dir.path(), &authority, who, token)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{who}: {status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_example_calls_both_whoami_examples_with_one_token() {
    let (Some(http), Some(grpc), Some(caller)) = (
        example("whoami-http"),
        example("whoami-grpc"),
        example("caller"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, issuer_port, _) = dev_server(dir.path());
    let (_http, http_at) = start_example(&http, dir.path(), issuer_port);
    let (_grpc, grpc_at) = start_example(&grpc, dir.path(), issuer_port);
    let output = Command::new(caller)
        .current_dir(dir.path())
        .arg("--issuer")
        .arg(format!("https://localhost:{issuer_port}"))
        .arg("--http")
        .arg(format!("https://{http_at}/whoami"))
        .arg("--grpc")
        .arg(format!("https://{grpc_at}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("http: 200 OK {"), "{stdout}");
    assert!(lines[0].contains(r#""client_id":"demo""#), "{stdout}");
    assert!(lines[1].starts_with("grpc: client_id=demo "), "{stdout}");
    // The same token for both calls: one jti, one IssueToken.
    let jti = |line: &str| -> String {
        let after = line.split("jti").nth(1).unwrap();
        let id = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        after
            .trim_start_matches(|c| !id(c))
            .chars()
            .take_while(|c| id(*c))
            .collect()
    };
    assert_eq!(jti(lines[0]), jti(lines[1]), "{stdout}");
    assert_eq!(lines[2], "tokens issued: 1");
}
