//! `tokenmint-bench`: a load generator for a running tokenmint, over real mTLS.
//!
//! Modes: `issue` (IssueToken on persistent connections), `introspect` (IntrospectToken of one
//! token repeated, or of `--pool N` distinct tokens cycled), `jwks` (GetJwks), and `connect`
//! (a new TCP + full TLS handshake for every IssueToken; session resumption off). Load is
//! `--connections` × `--streams` concurrent callers, for `--duration` or `--requests`.
//! Reports throughput, latency percentiles, errors by status and — with `--pid`, or when it
//! starts the server itself with `--spawn` — the server's CPU time per request (from
//! `/proc/PID/stat`) and its RSS (idle, and peak from `VmHWM`). `--json` prints one JSON
//! object instead of the table.
//!
//! `cargo run --release --bin tokenmint-bench -- --spawn --mode issue` measures a fresh
//! `tokenmint serve --dev` (the `tokenmint` binary beside this one) in a temporary directory.
//! Traffic goes where `--server` points; `--spawn` keeps it on 127.0.0.1.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, ValueEnum};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, client::Resumption, pki_types::ServerName};
use serde::Serialize;
use tokenmint::{
    grpc::proto::{
        GetJwksRequest, IntrospectTokenRequest, IssueTokenRequest,
        key_service_client::KeyServiceClient, token_service_client::TokenServiceClient,
    },
    tls,
};
use tonic::transport::Uri;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// IssueToken on persistent connections.
    Issue,
    /// IntrospectToken: one token repeated (`--pool 1`) or a pool of distinct tokens.
    Introspect,
    /// GetJwks on persistent connections.
    Jwks,
    /// IssueToken with a new TCP connection and full mTLS handshake per request.
    Connect,
}

#[derive(Parser, Debug)]
#[command(
    name = "tokenmint-bench",
    about = "Drive a running tokenmint over mTLS and report throughput, latency and server cost"
)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value = "issue")]
    mode: Mode,
    /// The server (ignored with --spawn).
    #[arg(long, default_value = "https://localhost:8443")]
    server: String,
    /// The TLS server name to verify [default: the URL's host].
    #[arg(long)]
    server_name: Option<String>,
    /// The CA that signed the server certificate [default: certs/ca.pem].
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The caller's certificate [default: certs/demo.pem; certs/admin.pem for introspect].
    #[arg(long)]
    cert: Option<PathBuf>,
    /// The caller's private key [default: beside the default certificate].
    #[arg(long)]
    key: Option<PathBuf>,
    /// The certificate that obtains the tokens to introspect [default: certs/demo.pem].
    #[arg(long)]
    issuer_cert: Option<PathBuf>,
    /// Its private key [default: certs/demo.key].
    #[arg(long)]
    issuer_key: Option<PathBuf>,
    /// Persistent connections (for connect: concurrent callers, each opening its own).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent calls per connection.
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// How long to measure (after the warm-up).
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// Stop after this many requests instead of after --duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Measure this many times (one warm-up, one server) and report each figure's median.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Load before measuring, not counted.
    #[arg(long, default_value = "1s")]
    warmup: humantime::Duration,
    /// Distinct tokens to introspect (1 = one token repeated).
    #[arg(long, default_value_t = 1)]
    pool: usize,
    /// The server's process id, to report its CPU time per request and its RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Start `tokenmint serve --dev` in a fresh directory on a free loopback port, measure it,
    /// stop it.
    #[arg(long)]
    spawn: bool,
    /// With --spawn: the directory to run in (kept; reused if it holds a set-up) [default: a
    /// new directory under the system's temporary directory, removed afterwards].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// With --spawn: the tokenmint binary [default: `tokenmint` beside this program].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Threads of this program's runtime (1: one thread, leaving the other cores to the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the median as one Markdown table row with this label (see benches/table.sh).
    #[arg(long)]
    markdown: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// One measured run, as printed with --json.
#[derive(Debug, Serialize)]
struct Report {
    mode: Mode,
    connections: usize,
    streams: usize,
    pool: usize,
    seconds: f64,
    requests: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    throughput_per_s: f64,
    latency_us: Percentiles,
    /// This program's own CPU time per request (it shares the machine with the server).
    client_cpu_us_per_request: f64,
    server: Option<ServerCost>,
}

#[derive(Debug, Default, Serialize)]
struct Percentiles {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

/// What the server spent, read from /proc.
#[derive(Debug, Serialize)]
struct ServerCost {
    pid: u32,
    cpu_us_per_request: f64,
    cpu_cores_busy: f64,
    idle_rss_mib: Option<f64>,
    peak_rss_mib: f64,
    start_to_serving_ms: Option<f64>,
}

/// Where and as whom to call.
#[derive(Clone)]
struct Target {
    addr: String,
    server_name: ServerName<'static>,
    uri: Uri,
}

fn main() {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let result = runtime
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    if let Err(e) = result {
        eprintln!("tokenmint-bench: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut restarts = 0;
    let result = loop {
        let mut spawned = if args.spawn {
            Some(Spawned::start(&args)?)
        } else {
            None
        };
        let result = measure(&args, spawned.as_mut()).await;
        if let Some(spawned) = spawned {
            spawned.stop();
        }
        match result {
            // Most likely another process took the free port between our check and its bind.
            Err(e) if e.downcast_ref::<ServerExited>().is_some() && restarts < 3 => {
                restarts += 1;
                eprintln!("tokenmint-bench: {e}; starting it again on another port");
            }
            other => break other,
        }
    };
    let runs = result?;
    let median = median_of(&runs).context("no run")?;
    if let Some(label) = &args.markdown {
        print_markdown_row(label, &median);
    } else if args.json {
        let out = serde_json::json!({ "median": median, "runs": runs });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if runs.len() > 1 {
            for (i, run) in runs.iter().enumerate() {
                println!(
                    "run {}: {:.0}/s, p99 {:.2} ms, server {} µs CPU per request",
                    i + 1,
                    run.throughput_per_s,
                    run.latency_us.p99 as f64 / 1000.0,
                    run.server
                        .as_ref()
                        .map_or("?".to_owned(), |s| format!("{:.1}", s.cpu_us_per_request))
                );
            }
            println!("median of {} runs, figure by figure:", runs.len());
        }
        print_table(&median);
    }
    Ok(())
}

async fn measure(args: &Args, mut spawned: Option<&mut Spawned>) -> Result<Vec<Report>> {
    let base = spawned
        .as_ref()
        .map_or_else(PathBuf::new, |s| s.dir.clone());
    let file = |given: &Option<PathBuf>, default: &str| {
        given.clone().unwrap_or_else(|| base.join(default))
    };
    let caller = if args.mode == Mode::Introspect {
        "admin"
    } else {
        "demo"
    };
    let ca = file(&args.ca, "certs/ca.pem");
    let cert = file(&args.cert, &format!("certs/{caller}.pem"));
    let key = file(&args.key, &format!("certs/{caller}.key"));
    let server = match &spawned {
        Some(s) => format!("https://localhost:{}", s.addr.port()),
        None => args.server.clone(),
    };
    let uri: Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    let host = uri.host().context("--server has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let name = args.server_name.clone().unwrap_or_else(|| host.clone());
    let target = Target {
        addr: format!("{host}:{port}"),
        server_name: ServerName::try_from(name.clone())
            .with_context(|| format!("{name:?} is not a TLS server name"))?,
        uri: format!("http://{host}:{port}")
            .parse()
            .context("building the endpoint URI")?,
    };
    // A spawned server writes its development PKI as it starts: wait for it to serve.
    let start_to_serving = match spawned.as_deref_mut() {
        Some(s) => Some(s.wait_until_serving(&target, &ca).await?),
        None => None,
    };
    let caller_config = client_config(&ca, &cert, &key)?;
    let pid = spawned.as_ref().map(|s| s.child.id()).or(args.pid);
    let idle_rss = pid.and_then(|pid| proc_status_kib(pid, "VmRSS:").ok());

    let pool = if args.mode == Mode::Introspect {
        let issuer_config = client_config(
            &ca,
            &file(&args.issuer_cert, "certs/demo.pem"),
            &file(&args.issuer_key, "certs/demo.key"),
        )?;
        Arc::new(mint_pool(&target, &issuer_config, args.pool.max(1)).await?)
    } else {
        Arc::new(Vec::new())
    };

    let load = Load {
        mode: args.mode,
        target: target.clone(),
        config: caller_config,
        pool,
        connections: args.connections.max(1),
        streams: args.streams.max(1),
        cursor: Arc::default(),
    };
    if !args.warmup.is_zero() {
        load.run(Limit::Time(args.warmup.into())).await?;
    }
    let limit = match args.requests {
        Some(n) => Limit::Count(n),
        None => Limit::Time(args.duration.into()),
    };
    let mut runs = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let cpu_before = pid.map(proc_cpu_ticks).transpose()?;
        let own_before = proc_cpu_ticks(std::process::id())?;
        let started = Instant::now();
        let outcome = load.run(limit).await?;
        let seconds = started.elapsed().as_secs_f64();
        let cpu_after = pid.map(proc_cpu_ticks).transpose()?;
        let own_seconds = proc_cpu_ticks(std::process::id())?.saturating_sub(own_before) as f64
            / CLOCK_TICKS_PER_SECOND;

        let ok = outcome.ok;
        let requests = ok + outcome.errors.values().sum::<u64>();
        let per_request = |cpu_seconds: f64| {
            if requests > 0 {
                cpu_seconds * 1e6 / requests as f64
            } else {
                0.0
            }
        };
        let server = match (pid, cpu_before, cpu_after) {
            (Some(pid), Some(before), Some(after)) => {
                let cpu_seconds = after.saturating_sub(before) as f64 / CLOCK_TICKS_PER_SECOND;
                Some(ServerCost {
                    pid,
                    cpu_us_per_request: per_request(cpu_seconds),
                    cpu_cores_busy: cpu_seconds / seconds,
                    idle_rss_mib: idle_rss.map(|k| k as f64 / 1024.0),
                    peak_rss_mib: proc_status_kib(pid, "VmHWM:")? as f64 / 1024.0,
                    start_to_serving_ms: start_to_serving.map(|d| d.as_secs_f64() * 1e3),
                })
            }
            _ => None,
        };
        runs.push(Report {
            mode: args.mode,
            connections: load.connections,
            streams: load.streams,
            pool: load.pool.len(),
            seconds,
            requests,
            ok,
            errors: outcome.errors,
            throughput_per_s: ok as f64 / seconds,
            client_cpu_us_per_request: per_request(own_seconds),
            latency_us: percentiles(outcome.latencies_us),
            server,
        });
    }
    Ok(runs)
}

/// The median of each figure over the runs, taken figure by figure; counts are summed.
fn median_of(runs: &[Report]) -> Option<Report> {
    let first = runs.first()?;
    let median = |figure: &dyn Fn(&Report) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let mut errors = BTreeMap::new();
    for run in runs {
        for (kind, n) in &run.errors {
            *errors.entry(kind.clone()).or_default() += n;
        }
    }
    let server = first.server.as_ref().map(|s| ServerCost {
        pid: s.pid,
        cpu_us_per_request: median(&|r| r.server.as_ref().map_or(0.0, |s| s.cpu_us_per_request)),
        cpu_cores_busy: median(&|r| r.server.as_ref().map_or(0.0, |s| s.cpu_cores_busy)),
        idle_rss_mib: s.idle_rss_mib,
        peak_rss_mib: runs
            .iter()
            .filter_map(|r| r.server.as_ref().map(|s| s.peak_rss_mib))
            .fold(0.0, f64::max),
        start_to_serving_ms: s.start_to_serving_ms,
    });
    Some(Report {
        mode: first.mode,
        connections: first.connections,
        streams: first.streams,
        pool: first.pool,
        seconds: runs.iter().map(|r| r.seconds).sum(),
        requests: runs.iter().map(|r| r.requests).sum(),
        ok: runs.iter().map(|r| r.ok).sum(),
        errors,
        throughput_per_s: median(&|r| r.throughput_per_s),
        client_cpu_us_per_request: median(&|r| r.client_cpu_us_per_request),
        latency_us: Percentiles {
            p50: median(&|r| r.latency_us.p50 as f64) as u64,
            p99: median(&|r| r.latency_us.p99 as f64) as u64,
            p999: median(&|r| r.latency_us.p999 as f64) as u64,
            max: runs.iter().map(|r| r.latency_us.max).max().unwrap_or(0),
        },
        server,
    })
}

/// Linux's USER_HZ, the unit of utime and stime in /proc/PID/stat (100 on every mainstream
/// architecture; the ABI fixes it).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// The process's user + system CPU time, all threads, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the server running here?)"))?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), so utime (14) and stime (15) sit at 11, 12.
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .context("unexpected /proc/PID/stat")
    };
    Ok(field(11)? + field(12)?)
}

/// A `kB` line of /proc/PID/status.
fn proc_status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in tls::read_certificates(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
    }
    let mut config = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(tls::read_certificates(cert)?, tls::read_private_key(key)?)
        .with_context(|| format!("{}: certificate and key", cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Every connection a full handshake: what a client without a session cache costs.
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// A bare HTTP/2 connection used as the gRPC transport: a fresh TCP connection, a full mTLS
/// handshake and an HTTP/2 handshake, with nothing of tonic's `Connection` machinery (buffer
/// task, reconnection) on top, so the load generator spends as little of the shared machine as
/// it can.
#[derive(Clone)]
struct Connection {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, hyper::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.send.send_request(request))
    }
}

async fn connect(target: &Target, config: &Arc<ClientConfig>) -> Result<Connection> {
    let tcp = tokio::net::TcpStream::connect(&target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(target.server_name.clone(), tcp)
        .await
        .with_context(|| format!("TLS handshake with {}", target.addr))?;
    let (send, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .context("HTTP/2 handshake")?;
    tokio::spawn(connection);
    Ok(Connection { send })
}

/// Issues `n` tokens to introspect, with 16 calls in flight.
async fn mint_pool(target: &Target, config: &Arc<ClientConfig>, n: usize) -> Result<Vec<String>> {
    let channel = connect(target, config).await?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = TokenServiceClient::with_origin(channel.clone(), target.uri.clone());
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                let token = client
                    .issue_token(IssueTokenRequest::default())
                    .await
                    .map_err(|s| anyhow::anyhow!("issuing the tokens to introspect: {s}"))?
                    .into_inner()
                    .access_token;
                tokens.push(token);
            }
            Ok::<_, anyhow::Error>(tokens)
        }));
    }
    let mut pool = Vec::with_capacity(n);
    for task in tasks {
        pool.extend(task.await.context("minting task")??);
    }
    Ok(pool)
}

#[derive(Clone, Copy, Debug)]
enum Limit {
    Time(Duration),
    Count(u64),
}

struct Load {
    mode: Mode,
    target: Target,
    config: Arc<ClientConfig>,
    pool: Arc<Vec<String>>,
    connections: usize,
    streams: usize,
    cursor: Arc<AtomicU64>,
}

#[derive(Default)]
struct Outcome {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
}

impl Outcome {
    fn record(&mut self, started: Instant, result: Result<(), String>) {
        self.latencies_us
            .push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        match result {
            Ok(()) => self.ok += 1,
            Err(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.latencies_us.extend(other.latencies_us);
    }
}

impl Load {
    async fn run(&self, limit: Limit) -> Result<Outcome> {
        let deadline = match limit {
            Limit::Time(d) => Some(Instant::now() + d),
            Limit::Count(_) => None,
        };
        let budget = Arc::new(AtomicU64::new(match limit {
            Limit::Count(n) => n,
            Limit::Time(_) => u64::MAX,
        }));
        let mut tasks = Vec::new();
        for _ in 0..self.connections {
            let channel = if self.mode == Mode::Connect {
                None
            } else {
                Some(connect(&self.target, &self.config).await?)
            };
            for _ in 0..self.streams {
                let caller = Caller {
                    mode: self.mode,
                    channel: channel.clone(),
                    target: self.target.clone(),
                    config: self.config.clone(),
                    pool: self.pool.clone(),
                    cursor: self.cursor.clone(),
                };
                let budget = budget.clone();
                tasks.push(tokio::spawn(caller.run(deadline, budget)));
            }
        }
        let mut outcome = Outcome::default();
        for task in tasks {
            outcome.merge(task.await.context("load task")?);
        }
        Ok(outcome)
    }
}

struct Caller {
    mode: Mode,
    channel: Option<Connection>,
    target: Target,
    config: Arc<ClientConfig>,
    pool: Arc<Vec<String>>,
    /// The next token of the pool, shared by all callers and runs: every token is used once
    /// before any is used again.
    cursor: Arc<AtomicU64>,
}

impl Caller {
    async fn run(mut self, deadline: Option<Instant>, budget: Arc<AtomicU64>) -> Outcome {
        let mut outcome = Outcome::default();
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
            {
                break;
            }
            let started = Instant::now();
            let result = self.call().await;
            outcome.record(started, result);
        }
        outcome
    }

    /// One request; an error is named by its gRPC status code (or `connect`).
    async fn call(&mut self) -> Result<(), String> {
        let status = |s: tonic::Status| format!("{:?}", s.code());
        match (self.mode, &self.channel) {
            (Mode::Issue, Some(channel)) => {
                TokenServiceClient::with_origin(channel.clone(), self.target.uri.clone())
                    .issue_token(IssueTokenRequest::default())
                    .await
                    .map(drop)
                    .map_err(status)
            }
            (Mode::Jwks, Some(channel)) => {
                KeyServiceClient::with_origin(channel.clone(), self.target.uri.clone())
                    .get_jwks(GetJwksRequest::default())
                    .await
                    .map(drop)
                    .map_err(status)
            }
            (Mode::Introspect, Some(channel)) => {
                let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.pool.len() as u64;
                let token = self.pool[usize::try_from(i).unwrap_or(0)].clone();
                let response =
                    TokenServiceClient::with_origin(channel.clone(), self.target.uri.clone())
                        .introspect_token(IntrospectTokenRequest {
                            token,
                            presented_certificate_thumbprint: None,
                        })
                        .await
                        .map_err(status)?;
                if response.into_inner().active {
                    Ok(())
                } else {
                    Err("inactive".into())
                }
            }
            (Mode::Connect, _) | (_, None) => {
                let channel = connect(&self.target, &self.config)
                    .await
                    .map_err(|_| "connect".to_owned())?;
                TokenServiceClient::with_origin(channel, self.target.uri.clone())
                    .issue_token(IssueTokenRequest::default())
                    .await
                    .map(drop)
                    .map_err(status)
            }
        }
    }
}

fn percentiles(mut latencies: Vec<u64>) -> Percentiles {
    if latencies.is_empty() {
        return Percentiles::default();
    }
    latencies.sort_unstable();
    let at = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        latencies[i]
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: latencies[latencies.len() - 1],
    }
}

/// `| row | load | throughput | p50 | p99 | p99.9 | server µs/req | client µs/req | server RSS idle / peak |`
fn print_markdown_row(label: &str, r: &Report) {
    let ms = |us: u64| us as f64 / 1000.0;
    let errors: u64 = r.errors.values().sum();
    let load = if r.mode == Mode::Connect {
        format!("{} callers", r.connections * r.streams)
    } else {
        format!("{} conn × {} streams", r.connections, r.streams)
    };
    let (server_cpu, rss) = match &r.server {
        Some(s) => (
            format!("{:.1}", s.cpu_us_per_request),
            format!(
                "{} / {:.0} MiB",
                s.idle_rss_mib
                    .map_or("?".to_owned(), |idle| format!("{idle:.0}")),
                s.peak_rss_mib
            ),
        ),
        None => ("?".to_owned(), "?".to_owned()),
    };
    println!(
        "| {label} | {load} | {:.0}/s{} | {:.2} | {:.2} | {:.2} | {server_cpu} | {:.1} | {rss} |",
        r.throughput_per_s,
        if errors > 0 {
            format!(" ({errors} errors)")
        } else {
            String::new()
        },
        ms(r.latency_us.p50),
        ms(r.latency_us.p99),
        ms(r.latency_us.p999),
        r.client_cpu_us_per_request,
    );
}

fn print_table(r: &Report) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "mode {:?}: {} connections × {} streams{}, {:.1} s",
        r.mode,
        r.connections,
        r.streams,
        if r.mode == Mode::Introspect {
            format!(", {} distinct token(s)", r.pool)
        } else {
            String::new()
        },
        r.seconds
    );
    println!("  requests        {:>12}", r.requests);
    println!("  ok              {:>12}", r.ok);
    for (kind, n) in &r.errors {
        println!("  error {kind:<10}{n:>12}");
    }
    println!("  throughput      {:>12.0} /s", r.throughput_per_s);
    println!(
        "  latency ms      p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(r.latency_us.p50),
        ms(r.latency_us.p99),
        ms(r.latency_us.p999),
        ms(r.latency_us.max)
    );
    println!(
        "  this client     {:.1} µs CPU per request",
        r.client_cpu_us_per_request
    );
    if let Some(s) = &r.server {
        println!(
            "  server pid {}: {:.1} µs CPU per request, {:.2} cores busy",
            s.pid, s.cpu_us_per_request, s.cpu_cores_busy
        );
        if let Some(idle) = s.idle_rss_mib {
            println!(
                "  server RSS      idle {idle:.1} MiB, peak {:.1} MiB",
                s.peak_rss_mib
            );
        } else {
            println!("  server RSS      peak {:.1} MiB", s.peak_rss_mib);
        }
        if let Some(t) = s.start_to_serving_ms {
            println!("  start to serving {t:.0} ms");
        }
    }
}

/// A `tokenmint serve --dev` started by the bench.
struct Spawned {
    child: Child,
    dir: PathBuf,
    remove_dir: bool,
    addr: SocketAddr,
    started: Instant,
}

/// The spawned server exited before it served.
#[derive(Debug)]
struct ServerExited {
    status: std::process::ExitStatus,
    log: PathBuf,
}

impl std::fmt::Display for ServerExited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server exited ({}) before serving; see {}",
            self.status,
            self.log.display()
        )
    }
}

impl std::error::Error for ServerExited {}

impl Spawned {
    fn start(args: &Args) -> Result<Self> {
        let (dir, remove_dir) = match &args.dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!("tokenmint-bench-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let bin = match &args.server_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()
                .context("locating this program")?
                .with_file_name("tokenmint"),
        };
        // A free loopback port: bind, note, release.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?;
        let log = std::fs::File::create(dir.join("server.log"))
            .with_context(|| format!("creating {}", dir.join("server.log").display()))?;
        let started = Instant::now();
        let child = Command::new(&bin)
            .arg("serve")
            .arg("--dev")
            .arg("--config")
            .arg(dir.join("tokenmint.toml"))
            .env("TOKENMINT__SERVER__LISTEN", addr.to_string())
            .env("TOKENMINT__SERVER__OPS_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("server log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            child,
            dir,
            remove_dir,
            addr,
            started,
        })
    }

    /// Waits (at most 60 s) until the server answers IssueToken to the demo client it wrote;
    /// returns the time since spawn. A server that exits first is a [`ServerExited`] error.
    async fn wait_until_serving(&mut self, target: &Target, ca: &Path) -> Result<Duration> {
        let give_up = self.started + Duration::from_secs(60);
        let issuer_cert = self.dir.join("certs/demo.pem");
        let issuer_key = self.dir.join("certs/demo.key");
        loop {
            // The files appear as the server writes them; until then this fails.
            if let Ok(config) = client_config(ca, &issuer_cert, &issuer_key)
                && let Ok(channel) = connect(target, &config).await
                && TokenServiceClient::with_origin(channel, target.uri.clone())
                    .issue_token(IssueTokenRequest::default())
                    .await
                    .is_ok()
            {
                return Ok(self.started.elapsed());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ServerExited {
                    status,
                    log: self.dir.join("server.log"),
                }
                .into());
            }
            if Instant::now() > give_up {
                bail!(
                    "the server did not serve within 60 s; see {}",
                    self.dir.join("server.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
