//! The real binary, run as a process: `serve --dev` in a directory, the CLI against it. The
//! binary is a parameter, so a test can run this build's and another build's side by side.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// A free port on 127.0.0.1 (bound and released: good enough for a process started next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `bin` run in `dir`, with the environment a test wants (no KEK or failpoint inherited).
pub fn command(bin: &Path, dir: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .current_dir(dir)
        .env_remove("TOKENMINT_KEK")
        .env_remove(tokenmint_store::failpoint::DANGEROUS_FAILPOINT_VAR)
        .env("RUST_LOG", "warn")
        // Any free port for the operations listener: tests run side by side.
        .env("TOKENMINT__SERVER__OPS_LISTEN", "127.0.0.1:0");
    command
}

/// A server process that is killed if the test lets go of it without [`stop`] (a failed
/// assertion, say), so no test leaves a server running behind it.
pub struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl From<Child> for Running {
    fn from(child: Child) -> Self {
        Self(child)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `serve --dev` in `dir` on `port`, its log in `log`, with extra environment `env`.
pub fn spawn_server(
    bin: &Path,
    dir: &Path,
    port: u16,
    log: &str,
    failpoint: Option<&str>,
    env: &[(&str, &str)],
) -> Running {
    let mut command = command(bin, dir);
    command
        .args(["serve", "--dev"])
        .env("TOKENMINT__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).unwrap());
    if let Some(name) = failpoint {
        command.env(tokenmint_store::failpoint::DANGEROUS_FAILPOINT_VAR, name);
    }
    Running(command.spawn().unwrap())
}

/// The CLI of `bin` against the server on `port`, with the dev PKI's admin certificate.
pub fn admin_cli(bin: &Path, dir: &Path, port: u16, args: &[&str]) -> Output {
    let url = format!("https://localhost:{port}");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", &url]);
    command(bin, dir).args(&all).output().unwrap()
}

/// `keys list` once the server answers (bounded: it may still be starting).
pub fn keys_list_when_up(
    bin: &Path,
    dir: &Path,
    port: u16,
    server: &mut Running,
    log: &str,
) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = admin_cli(bin, dir, port, &["keys", "list"]);
        if output.status.success() {
            return parse_keys(&output);
        }
        assert!(
            server.try_wait().unwrap().is_none(),
            "the server exited: {}",
            std::fs::read_to_string(dir.join(log)).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "the server did not answer: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (kid, algorithm, state) per line of `keys list`.
pub fn parse_keys(output: &Output) -> Vec<(String, String, String)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let kid = fields.next()?;
            let alg = fields.next()?;
            let state = fields.next()?;
            Some((kid.to_owned(), alg.to_owned(), state.to_owned()))
        })
        .collect()
}

/// The kids of the keys in `state`.
pub fn kids_in(keys: &[(String, String, String)], state: &str) -> Vec<String> {
    keys.iter()
        .filter(|k| k.2 == state)
        .map(|k| k.0.clone())
        .collect()
}

/// SIGTERM, then wait (bounded) for the process to leave.
pub fn stop(mut server: Running) {
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = server.kill();
            panic!("the server did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The client TLS settings for `who` (`demo`, `admin`, …) against `serve --dev` in `dir`: the
/// development CA, `who`'s certificate and key, the server name `localhost`.
pub fn dev_tls(dir: &Path, who: &str) -> tonic::transport::ClientTlsConfig {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_default();
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("certs/ca.pem")))
        .identity(Identity::from_pem(
            read(&format!("certs/{who}.pem")),
            read(&format!("certs/{who}.key")),
        ))
        .domain_name("localhost")
}

/// An HTTPS client builder for `serve --dev` in `dir`: trusting only the development CA,
/// presenting `who`'s certificate if given, a 10 s timeout.
pub fn dev_https(dir: &Path, who: Option<&str>) -> reqwest::ClientBuilder {
    crate::support::install_provider();
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let ca = reqwest::Certificate::from_pem(&read("certs/ca.pem")).unwrap();
    let builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10));
    match who {
        Some(who) => {
            let mut pem = read(&format!("certs/{who}.pem"));
            pem.extend(read(&format!("certs/{who}.key")));
            builder.identity(reqwest::Identity::from_pem(&pem).unwrap())
        }
        None => builder,
    }
}

/// A test that needs `what` (a package, root) says it was skipped; under CI, where every
/// part is there, it fails instead.
pub fn skipped(what: &str) {
    assert!(std::env::var_os("CI").is_none(), "missing under CI: {what}");
    println!("skipped: {what}");
}
