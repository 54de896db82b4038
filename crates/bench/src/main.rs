//! `tokenmint-bench`: a load generator for a running tokenmint, over real mTLS.
//!
//! Modes: `issue` (IssueToken on persistent connections), `introspect` (IntrospectToken of one
//! token repeated, or of `--pool N` distinct tokens cycled), `exchange` (ExchangeToken: the
//! demo client down-scoping `--pool N` tokens of its own, cycled), `txn` (ExchangeToken for a
//! transaction token for `--trust-domain` from those tokens; the server needs
//! `TOKENMINT__TXN_TOKENS__TRUST_DOMAIN` set to it), `jwks` (GetJwks), `connect`
//! (a new TCP + full TLS handshake for every IssueToken; session resumption off), and
//! `forward` (`GET --path` with a bearer token from `--issuer`, over HTTP/2 on a proxy such as
//! nginx asking `tokenmint authz`; benches/authz_nginx.sh drives it). Load is
//! `--connections` × `--streams` concurrent callers, for `--duration` or `--requests`.
//! Reports throughput, latency percentiles, errors by status and — with `--pid`, or when it
//! starts the server itself with `--spawn` — the server's CPU time per request (from
//! `/proc/PID/stat`) and its RSS (idle, and peak from `VmHWM`). `--json` prints one JSON
//! object instead of the table.
//!
//! `--attack-stalled-bodies N` runs that load under the "stalled bodies" attack: before the
//! load starts, N connections without a client certificate each open as many POST streams as
//! the server allows (at most `--attack-streams`) whose bodies never finish, and hold them for
//! the whole run; the report says how many streams the attack got open.
//!
//! `watch-memory` measures what `WatchRevocations` streams cost the server: it revokes
//! `--revocations` random token ids as the admin, then opens `--watchers` streams, each on its
//! own connection with the admin certificate, that read everything (to `SnapshotComplete`,
//! then idle) or, with `--stalled`, never read (a 1 KiB receive window, the response never
//! polled). It reports the growth of the server's RSS (`VmRSS`) in all and per stream and —
//! stalled, with `--watch-stall-timeout` — what is left once the server has cut the stalled
//! ones off. It needs `--spawn` or `--pid`.
//!
//! `cargo run --release --bin tokenmint-bench -- --spawn --mode issue` measures a fresh
//! `tokenmint serve --dev` (the `tokenmint` binary beside this one) in a temporary directory.
//! The server inherits this program's environment, so `TOKENMINT__SECTION__KEY` overrides
//! reach it. Traffic goes where `--server` points; `--spawn` keeps it on 127.0.0.1.

use std::{
    collections::{BTreeMap, HashSet},
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
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use rustls::{ClientConfig, RootCertStore, client::Resumption, pki_types::ServerName};
use serde::Serialize;
use tokenmint_core::{grant, txn};
use tokenmint_proto::v1::{
    ExchangeTokenRequest, GetJwksRequest, IntrospectTokenRequest, IssueTokenRequest,
    RevocationEvent, RevokeTokenIdRequest, WatchRevocationsRequest,
    admin_service_client::AdminServiceClient, key_service_client::KeyServiceClient,
    revocation_event, revocation_service_client::RevocationServiceClient,
    token_service_client::TokenServiceClient,
};
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;
use tonic::transport::Uri;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// IssueToken on persistent connections.
    Issue,
    /// IntrospectToken: one token repeated (`--pool 1`) or a pool of distinct tokens.
    Introspect,
    /// ExchangeToken (RFC 8693): the caller down-scopes tokens of its own, a pool of
    /// `--pool` distinct ones cycled.
    Exchange,
    /// ExchangeToken for a transaction token (draft-ietf-oauth-transaction-tokens) from a
    /// pool of the caller's own access tokens, for `--trust-domain`.
    Txn,
    /// GetJwks on persistent connections.
    Jwks,
    /// IssueToken with a new TCP connection and full mTLS handshake per request.
    Connect,
    /// The server's RSS per WatchRevocations stream, reading or stalled (no load).
    #[serde(rename = "watch-memory")]
    WatchMemory,
    /// `GET --path` with `Authorization: Bearer` over HTTP/2 on the server, which is a proxy
    /// (nginx with `auth_request` to `tokenmint authz`, or alone); 200 is success. The tokens
    /// (`--pool`) come from `--issuer`.
    Forward,
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
    /// The caller's certificate [default: certs/demo.pem; certs/admin.pem for introspect and
    /// watch-memory].
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
    /// Measure this many times (one warm-up, one server) and report each figure's median
    /// (load modes; watch-memory measures once).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Load before measuring, not counted.
    #[arg(long, default_value = "1s")]
    warmup: humantime::Duration,
    /// How long one call may take; past it the call counts as a `timeout` error.
    #[arg(long, default_value = "10s")]
    timeout: humantime::Duration,
    /// Distinct tokens to introspect or to send (1 = one token repeated).
    #[arg(long, default_value_t = 1)]
    pool: usize,
    /// forward: the path to GET.
    #[arg(long, default_value = "/")]
    path: String,
    /// txn: the trust domain the server issues transaction tokens for.
    #[arg(long, default_value = "spiffe://tokenmint.dev")]
    trust_domain: String,
    /// forward: the issuer the tokens come from (as `--issuer-cert`).
    #[arg(long, default_value = "https://localhost:8443")]
    issuer: String,
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
    /// Print the median as one Markdown table row with this label (see benches/table.sh; load
    /// modes).
    #[arg(long)]
    markdown: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Run the load under the stalled-bodies attack: this many connections without a client
    /// certificate, opened before the load and held for the whole run, each with stalled POST
    /// streams (IssueToken on even connections, /oauth2/token on odd ones): headers with a
    /// content-length, half the body, never the rest.
    #[arg(long, default_value_t = 0)]
    attack_stalled_bodies: usize,
    /// Stalled streams each attacking connection opens (no more than the server advertises).
    #[arg(long, default_value_t = 256)]
    attack_streams: usize,
    /// watch-memory: WatchRevocations streams to open, each on its own connection.
    #[arg(long, default_value_t = 64)]
    watchers: usize,
    /// watch-memory: random token ids to revoke first, as the admin, so every snapshot holds
    /// them.
    #[arg(long, default_value_t = 10_000)]
    revocations: u64,
    /// watch-memory: watchers that never read (a 1 KiB receive window, the response never
    /// polled) instead of ones that read everything.
    #[arg(long)]
    stalled: bool,
    /// watch-memory: how long the server is left to settle before each RSS reading.
    #[arg(long, default_value = "3s")]
    settle: humantime::Duration,
    /// The server's `server.watch_stall_timeout`: set in the spawned server's environment;
    /// with --stalled, the bench waits past it and reports what the cut-off left.
    /// Offer only this TLS key-exchange group (e.g. `X25519`: a classical handshake in the
    /// aws-lc build, whose default is the hybrid `X25519MLKEM768`).
    #[arg(long)]
    kx_group: Option<String>,
    #[arg(long, env = "TOKENMINT__SERVER__WATCH_STALL_TIMEOUT")]
    watch_stall_timeout: Option<humantime::Duration>,
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
    /// The TLS key-exchange group the connections agreed (X25519MLKEM768 is the hybrid
    /// post-quantum one).
    key_exchange: Option<String>,
    /// The stalled-bodies attack running beside the load, as it stood when the run ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    attack: Option<AttackReport>,
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
    if let Some(name) = &args.kx_group {
        let group = provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .find(|g| format!("{g:?}") == *name)
            .with_context(|| format!("--kx-group {name}: not a group this build offers"))?;
        let _ = ONLY_GROUP.set(group);
    }
    let _ = provider().as_ref().clone().install_default();
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
    match result? {
        Measured::Load(runs) => print_load(&args, &runs),
        Measured::WatchMemory(report) if args.json => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Measured::WatchMemory(report) => {
            print_watch_memory(&report);
            Ok(())
        }
    }
}

fn print_load(args: &Args, runs: &[Report]) -> Result<()> {
    let median = median_of(runs).context("no run")?;
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

/// What one sitting measured.
enum Measured {
    Load(Vec<Report>),
    WatchMemory(WatchMemoryReport),
}

async fn measure(args: &Args, spawned: Option<&mut Spawned>) -> Result<Measured> {
    let setup = prepare(args, spawned).await?;
    if args.mode == Mode::WatchMemory {
        return Ok(Measured::WatchMemory(
            measure_watch_memory(args, &setup).await?,
        ));
    }
    Ok(Measured::Load(measure_load(args, &setup).await?))
}

/// The server, how to reach it and as whom, and how it stood before any load.
struct Setup {
    target: Target,
    ca: PathBuf,
    /// Where default certificate paths are resolved: the spawned server's directory, or here.
    base: PathBuf,
    caller_config: Arc<ClientConfig>,
    pid: Option<u32>,
    start_to_serving: Option<Duration>,
    idle_rss_kib: Option<u64>,
}

async fn prepare(args: &Args, mut spawned: Option<&mut Spawned>) -> Result<Setup> {
    let base = spawned
        .as_ref()
        .map_or_else(PathBuf::new, |s| s.dir.clone());
    let file = |given: &Option<PathBuf>, default: &str| file_in(&base, given, default);
    let caller = match args.mode {
        Mode::Introspect | Mode::WatchMemory => "admin",
        Mode::Issue | Mode::Jwks | Mode::Connect | Mode::Forward | Mode::Exchange | Mode::Txn => {
            "demo"
        }
    };
    let ca = file(&args.ca, "certs/ca.pem");
    let cert = file(&args.cert, &format!("certs/{caller}.pem"));
    let key = file(&args.key, &format!("certs/{caller}.key"));
    let server = match &spawned {
        Some(s) => format!("https://localhost:{}", s.addr.port()),
        None => args.server.clone(),
    };
    let target = target_of(&server, args.server_name.as_deref())?;
    // A spawned server writes its development PKI as it starts: wait for it to serve.
    let start_to_serving = match spawned.as_deref_mut() {
        Some(s) => Some(s.wait_until_serving(&target, &ca).await?),
        None => None,
    };
    let caller_config = client_config(&ca, &cert, &key)?;
    let pid = spawned.as_ref().map(|s| s.child.id()).or(args.pid);
    Ok(Setup {
        target,
        ca,
        base,
        caller_config,
        pid,
        start_to_serving,
        idle_rss_kib: pid.and_then(|pid| proc_status_kib(pid, "VmRSS:").ok()),
    })
}

/// `given`, or `default` under `base`.
fn file_in(base: &Path, given: &Option<PathBuf>, default: &str) -> PathBuf {
    given.clone().unwrap_or_else(|| base.join(default))
}

/// Where `server` (a URL) is, verified as `server_name` (default: the URL's host).
fn target_of(server: &str, server_name: Option<&str>) -> Result<Target> {
    let uri: Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    let host = uri.host().context("--server has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let name = server_name.map_or_else(|| host.clone(), str::to_owned);
    Ok(Target {
        addr: format!("{host}:{port}"),
        server_name: ServerName::try_from(name.clone())
            .with_context(|| format!("{name:?} is not a TLS server name"))?,
        uri: format!("http://{host}:{port}")
            .parse()
            .context("building the endpoint URI")?,
    })
}

/// How long the attack is held past the warm-up and the runs, at most.
const ATTACK_MARGIN: Duration = Duration::from_secs(60);
/// How long the attack is held when the runs are counted in requests, at most.
const ATTACK_MAX_HOLD: Duration = Duration::from_secs(600);

async fn measure_load(args: &Args, setup: &Setup) -> Result<Vec<Report>> {
    let issuer_config = || {
        client_config(
            &setup.ca,
            &file_in(&setup.base, &args.issuer_cert, "certs/demo.pem"),
            &file_in(&setup.base, &args.issuer_key, "certs/demo.key"),
        )
    };
    let pool = match args.mode {
        Mode::Introspect | Mode::Exchange | Mode::Txn => {
            mint_pool(&setup.target, &issuer_config()?, args.pool.max(1)).await?
        }
        Mode::Forward => {
            let issuer = target_of(&args.issuer, None)?;
            mint_pool(&issuer, &issuer_config()?, args.pool.max(1)).await?
        }
        _ => Vec::new(),
    };
    let pool = Arc::new(pool);
    let forward: Uri = format!("https://{}{}", setup.target.addr, args.path)
        .parse()
        .with_context(|| format!("--path {:?}", args.path))?;
    let load = Load {
        mode: args.mode,
        target: setup.target.clone(),
        config: setup.caller_config.clone(),
        pool,
        connections: args.connections.max(1),
        streams: args.streams.max(1),
        cursor: Arc::default(),
        timeout: args.timeout.into(),
        forward,
        trust_domain: args.trust_domain.clone(),
    };
    let limit = match args.requests {
        Some(n) => Limit::Count(n),
        None => Limit::Time(args.duration.into()),
    };
    let attack = if args.attack_stalled_bodies > 0 {
        let repeat = u32::try_from(args.repeat.max(1)).unwrap_or(u32::MAX);
        let hold_for = match limit {
            Limit::Time(d) => {
                Duration::from(args.warmup) + d.saturating_mul(repeat) + ATTACK_MARGIN
            }
            Limit::Count(_) => ATTACK_MAX_HOLD,
        };
        let (connections, streams) = (args.attack_stalled_bodies, args.attack_streams);
        Some(Attack::start(&setup.target, &setup.ca, connections, streams, hold_for).await?)
    } else {
        None
    };
    if !args.warmup.is_zero() {
        load.run(Limit::Time(args.warmup.into())).await?;
    }
    let mut runs = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let mut report = one_run(args.mode, setup, &load, limit).await?;
        report.attack = attack.as_ref().map(Attack::report);
        runs.push(report);
    }
    if let Some(attack) = attack {
        attack.stop().await;
    }
    Ok(runs)
}

/// One measured run of `load`.
async fn one_run(mode: Mode, setup: &Setup, load: &Load, limit: Limit) -> Result<Report> {
    let pid = setup.pid;
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
                idle_rss_mib: setup.idle_rss_kib.map(|k| k as f64 / 1024.0),
                peak_rss_mib: proc_status_kib(pid, "VmHWM:")? as f64 / 1024.0,
                start_to_serving_ms: setup.start_to_serving.map(|d| d.as_secs_f64() * 1e3),
            })
        }
        _ => None,
    };
    Ok(Report {
        mode,
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
        key_exchange: NEGOTIATED.get().cloned(),
        attack: None,
    })
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
        key_exchange: first.key_exchange.clone(),
        attack: runs.last().and_then(|r| r.attack.clone()),
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

/// The build's rustls stack: the one place the bench reads the crypto feature.
#[cfg(feature = "aws-lc")]
use rustls::crypto::aws_lc_rs as stack;
#[cfg(not(feature = "aws-lc"))]
use rustls::crypto::ring as stack;

/// `--kx-group`: the one key-exchange group to offer, when set.
static ONLY_GROUP: std::sync::OnceLock<rustls::NamedGroup> = std::sync::OnceLock::new();

/// The group the first handshake agreed, for the report.
static NEGOTIATED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The TLS provider of the build, with its defaults (with aws-lc-rs, the hybrid
/// X25519MLKEM768 group first, as the server's), or only the `--kx-group` one.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = stack::default_provider();
    if let Some(only) = ONLY_GROUP.get() {
        provider.kx_groups.retain(|g| g.name() == *only);
    }
    Arc::new(provider)
}

/// Every certificate in a PEM file.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("{}: cannot read certificates", path.display()))?;
    if certs.is_empty() {
        bail!("{}: holds no CERTIFICATE block", path.display());
    }
    Ok(certs)
}

/// A private key (PKCS#8, SEC1 or PKCS#1) from a PEM file.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("{}: no usable private key", path.display()))
}

fn roots(ca: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
    }
    Ok(roots)
}

fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(read_certificates(cert)?, read_private_key(key)?)
        .with_context(|| format!("{}: certificate and key", cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Every connection a full handshake: what a client without a session cache costs.
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// A peer without a client certificate (the attack's): the same CA, ALPN h2.
fn anonymous_client_config(ca: &Path) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
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
    let (connection, _task) = connect_with_window(target, config, None).await?;
    Ok(connection)
}

/// A [`Connection`] whose receive windows (stream and connection) are `window` bytes instead
/// of hyper's defaults, and hyper's dispatch task for it: finished once the connection is
/// closed, or once every clone of the [`Connection`] is dropped (the HTTP/2 connection itself
/// then lives on until its open streams end).
async fn connect_with_window(
    target: &Target,
    config: &Arc<ClientConfig>,
    window: Option<u32>,
) -> Result<(Connection, tokio::task::JoinHandle<()>)> {
    let tcp = tokio::net::TcpStream::connect(&target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(target.server_name.clone(), tcp)
        .await
        .with_context(|| format!("TLS handshake with {}", target.addr))?;
    if let Some(group) = tls.get_ref().1.negotiated_key_exchange_group() {
        let _ = NEGOTIATED.set(format!("{:?}", group.name()));
    }
    let mut builder =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .initial_stream_window_size(window)
        .initial_connection_window_size(window);
    let (send, connection) = builder
        .handshake(TokioIo::new(tls))
        .await
        .context("HTTP/2 handshake")?;
    let task = tokio::spawn(async move {
        // How it ended does not matter here: the task's end is the connection's.
        let _ = connection.await;
    });
    Ok((Connection { send }, task))
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
    /// How long one call may take.
    timeout: Duration,
    /// forward: the URL to GET.
    forward: Uri,
    /// txn: the trust domain.
    trust_domain: String,
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
                    timeout: self.timeout,
                    forward: self.forward.clone(),
                    trust_domain: self.trust_domain.clone(),
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
    timeout: Duration,
    /// forward: the URL to GET.
    forward: Uri,
    /// txn: the trust domain.
    trust_domain: String,
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
            let result = tokio::time::timeout(self.timeout, self.call())
                .await
                .unwrap_or_else(|_| Err("timeout".to_owned()));
            outcome.record(started, result);
        }
        outcome
    }

    /// The next token of the pool.
    fn next_token(&self) -> String {
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.pool.len().max(1) as u64;
        self.pool
            .get(usize::try_from(i).unwrap_or(0))
            .cloned()
            .unwrap_or_default()
    }

    /// forward: one GET with the next token, its answer read to the end; an error is named
    /// by its HTTP status.
    async fn forward(&self, connection: Connection) -> Result<(), String> {
        use http_body_util::BodyExt as _;
        let request = http::Request::get(self.forward.clone())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.next_token()),
            )
            .body(tonic::body::Body::empty())
            .map_err(|_| "request".to_owned())?;
        let response = tower::ServiceExt::oneshot(connection, request)
            .await
            .map_err(|_| "http".to_owned())?;
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .map_err(|_| "body".to_owned())?;
        if status == http::StatusCode::OK {
            Ok(())
        } else {
            Err(status.as_str().to_owned())
        }
    }

    /// One request; an error is named by its gRPC status code (or `connect`, or `timeout`).
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
            (Mode::Forward, Some(channel)) => self.forward(channel.clone()).await,
            (Mode::Introspect, Some(channel)) => {
                let token = self.next_token();
                let response =
                    TokenServiceClient::with_origin(channel.clone(), self.target.uri.clone())
                        .introspect_token(IntrospectTokenRequest {
                            token,
                            ..Default::default()
                        })
                        .await
                        .map_err(status)?;
                if response.into_inner().active {
                    Ok(())
                } else {
                    Err("inactive".into())
                }
            }
            (Mode::Exchange, Some(channel)) => {
                let subject_token = self.next_token();
                TokenServiceClient::with_origin(channel.clone(), self.target.uri.clone())
                    .exchange_token(ExchangeTokenRequest {
                        subject_token,
                        subject_token_type: grant::ACCESS_TOKEN_TYPE.into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
                    .map_err(status)
            }
            (Mode::Txn, Some(channel)) => {
                let subject_token = self.next_token();
                TokenServiceClient::with_origin(channel.clone(), self.target.uri.clone())
                    .exchange_token(ExchangeTokenRequest {
                        subject_token,
                        subject_token_type: grant::ACCESS_TOKEN_TYPE.into(),
                        requested_token_type: txn::TXN_TOKEN_TYPE.into(),
                        audiences: vec![self.trust_domain.clone()],
                        scopes: vec!["demo:read".into()],
                        ..Default::default()
                    })
                    .await
                    .map(drop)
                    .map_err(status)
            }
            (Mode::WatchMemory, _) => Err("not a load".to_owned()),
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
        let group = r.key_exchange.as_deref().unwrap_or("?");
        format!("{} callers, {group}", r.connections * r.streams)
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
    if let Some(a) = &r.attack {
        print_attack(a);
    }
}

fn print_attack(a: &AttackReport) {
    let advertised: Vec<String> = a
        .advertised_streams_per_connection
        .iter()
        .map(|(budget, n)| format!("{budget} on {n}"))
        .collect();
    println!(
        "  attack          stalled bodies: {} of {} connections without a certificate open, server's stream budget {}",
        a.connections_open,
        a.connections,
        if advertised.is_empty() {
            "?".to_owned()
        } else {
            advertised.join(", ")
        }
    );
    println!(
        "  attack streams  {} asked per connection; {} open at the start, {} at the end; {} sent in all, {} ended by the server; {} connections closed by the server",
        a.streams_per_connection,
        a.streams_open_at_start,
        a.streams_open_now,
        a.streams_opened,
        a.streams_ended_by_server,
        a.connections_closed_by_server
    );
    for (reason, n) in &a.connections_failed {
        println!("  attack failed   {n}: {reason}");
    }
}

/// The stalled-bodies attack: connections without a client certificate, each holding as many
/// POST streams as the server allows whose bodies never finish — headers with a
/// content-length, half the body, never the rest. HTTP/2 is written by hand ([`frames`]), as
/// an attacker would, so that every stream is on the wire at once and the server's advertised
/// stream budget can be read from its SETTINGS.
struct Attack {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tally: Arc<AttackTally>,
    connections: usize,
    streams: usize,
    /// MAX_CONCURRENT_STREAMS the server advertised ("none" when it set no limit), by how many
    /// connections it advertised it to.
    advertised: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
    open_at_start: u64,
}

/// What the attacking connections saw, counted as it happens.
#[derive(Debug, Default)]
struct AttackTally {
    open: AtomicU64,
    opened: AtomicU64,
    ended_by_server: AtomicU64,
    connections_closed_by_server: AtomicU64,
}

/// The attack as reported beside the load.
#[derive(Clone, Debug, Serialize)]
struct AttackReport {
    connections: usize,
    streams_per_connection: usize,
    connections_open: usize,
    connections_failed: BTreeMap<String, u64>,
    advertised_streams_per_connection: BTreeMap<String, u64>,
    streams_open_at_start: u64,
    streams_open_now: u64,
    /// Streams sent in all: those open at the start, and one for each the server ended.
    streams_opened: u64,
    streams_ended_by_server: u64,
    connections_closed_by_server: u64,
}

/// Streams a connection may open to replace ones the server ended, per stream it started with.
const REPLACEMENTS_PER_STREAM: usize = 4;
/// Stalled streams one connection opens at most (stream ids stay far from their 2^31 limit).
const MAX_STALLED_STREAMS: usize = 1 << 16;
/// How long the server has to send its SETTINGS.
const SETTINGS_WAIT: Duration = Duration::from_secs(10);

impl Attack {
    /// Opens the attacking connections one after another, each with its streams, and holds
    /// them until [`Attack::stop`], or `hold_for` at most.
    async fn start(
        target: &Target,
        ca: &Path,
        connections: usize,
        streams: usize,
        hold_for: Duration,
    ) -> Result<Self> {
        let config = anonymous_client_config(ca)?;
        let deadline = tokio::time::Instant::now() + hold_for;
        let mut attack = Self {
            stop: CancellationToken::new(),
            tasks: Vec::new(),
            tally: Arc::default(),
            connections,
            streams,
            advertised: BTreeMap::new(),
            failed: BTreeMap::new(),
            open_at_start: 0,
        };
        for i in 0..connections {
            let path = if i % 2 == 0 {
                StalledPath::IssueToken
            } else {
                StalledPath::TokenEndpoint
            };
            match StalledConnection::open(target, &config, path, streams, &attack.tally).await {
                Ok(connection) => {
                    let budget = connection
                        .budget
                        .map_or("none".to_owned(), |b| b.to_string());
                    *attack.advertised.entry(budget).or_default() += 1;
                    let (tally, stop) = (attack.tally.clone(), attack.stop.clone());
                    let task = connection.hold(tally, stop, deadline);
                    attack.tasks.push(tokio::spawn(task));
                }
                Err(e) => *attack.failed.entry(format!("{e:#}")).or_default() += 1,
            }
        }
        attack.open_at_start = attack.tally.open.load(Ordering::Relaxed);
        Ok(attack)
    }

    fn report(&self) -> AttackReport {
        let count = |n: &AtomicU64| n.load(Ordering::Relaxed);
        AttackReport {
            connections: self.connections,
            streams_per_connection: self.streams,
            connections_open: self.tasks.len(),
            connections_failed: self.failed.clone(),
            advertised_streams_per_connection: self.advertised.clone(),
            streams_open_at_start: self.open_at_start,
            streams_open_now: count(&self.tally.open),
            streams_opened: count(&self.tally.opened),
            streams_ended_by_server: count(&self.tally.ended_by_server),
            connections_closed_by_server: count(&self.tally.connections_closed_by_server),
        }
    }

    /// Closes every attacking connection.
    async fn stop(mut self) {
        self.stop.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Where a stalled stream posts.
#[derive(Clone, Copy, Debug)]
enum StalledPath {
    /// gRPC IssueToken.
    IssueToken,
    /// The OAuth2 token endpoint.
    TokenEndpoint,
}

/// The body length a stalled stream declares; it sends half of it.
const STALLED_BODY_LEN: usize = 64;
/// The first half of a gRPC body: a message frame (uncompressed, 59 bytes announced).
const GRPC_HALF_BODY: [u8; STALLED_BODY_LEN / 2] = {
    let mut body = [0; STALLED_BODY_LEN / 2];
    body[4] = (STALLED_BODY_LEN - 5) as u8;
    body
};
/// The first half of a token request's form body.
const FORM_HALF_BODY: &[u8] = b"grant_type=client_credentials&sc";
const _: () = assert!(FORM_HALF_BODY.len() == STALLED_BODY_LEN / 2);

impl StalledPath {
    /// The request's header block: HPACK literals only, so the same bytes serve every stream.
    fn header_block(self, authority: &str) -> Vec<u8> {
        let (path, content_type) = match self {
            StalledPath::IssueToken => {
                ("/tokenmint.v1.TokenService/IssueToken", "application/grpc")
            }
            StalledPath::TokenEndpoint => ("/oauth2/token", "application/x-www-form-urlencoded"),
        };
        let length = STALLED_BODY_LEN.to_string();
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", path),
            (":authority", authority),
            ("content-type", content_type),
            ("content-length", length.as_str()),
        ] {
            frames::literal(&mut block, name, value);
        }
        if let StalledPath::IssueToken = self {
            frames::literal(&mut block, "te", "trailers");
        }
        block
    }

    fn half_body(self) -> &'static [u8] {
        match self {
            StalledPath::IssueToken => &GRPC_HALF_BODY,
            StalledPath::TokenEndpoint => FORM_HALF_BODY,
        }
    }
}

/// One attacking connection: TLS without a client certificate, HTTP/2 written by hand.
struct StalledConnection {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    path: StalledPath,
    header_block: Vec<u8>,
    /// MAX_CONCURRENT_STREAMS from the server's SETTINGS; `None` when it set no limit.
    budget: Option<u32>,
    next_stream: u32,
    open: HashSet<u32>,
    /// Streams that may still be opened to replace ones the server ended.
    replacements_left: usize,
}

impl StalledConnection {
    /// Connects, reads the server's SETTINGS and opens `streams` stalled streams, or as many
    /// as the server allows if that is fewer.
    async fn open(
        target: &Target,
        config: &Arc<ClientConfig>,
        path: StalledPath,
        streams: usize,
        tally: &AttackTally,
    ) -> Result<Self> {
        let tcp = tokio::net::TcpStream::connect(&target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        tcp.set_nodelay(true)?;
        let mut tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(target.server_name.clone(), tcp)
            .await
            .context("TLS handshake without a client certificate")?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
            bail!("the server did not choose HTTP/2");
        }
        let mut out = frames::PREFACE.to_vec();
        frames::write(&mut out, frames::SETTINGS, 0, 0, &[]);
        tls.write_all(&out).await.context("sending the preface")?;
        tls.flush().await.context("sending the preface")?;
        let budget = tokio::time::timeout(SETTINGS_WAIT, frames::read_settings(&mut tls))
            .await
            .context("no SETTINGS from the server")??;
        let allowed = budget.map_or(MAX_STALLED_STREAMS, |b| b as usize);
        let streams = streams.min(allowed).min(MAX_STALLED_STREAMS);
        let mut connection = Self {
            tls,
            path,
            header_block: path.header_block(&target.addr),
            budget,
            next_stream: 1,
            open: HashSet::new(),
            replacements_left: streams * REPLACEMENTS_PER_STREAM,
        };
        let mut out = Vec::new();
        frames::write(&mut out, frames::SETTINGS, frames::ACK, 0, &[]);
        for _ in 0..streams {
            connection.open_stream(&mut out);
        }
        connection
            .send(&out)
            .await
            .context("opening the stalled streams")?;
        tally.open.fetch_add(streams as u64, Ordering::Relaxed);
        tally.opened.fetch_add(streams as u64, Ordering::Relaxed);
        Ok(connection)
    }

    /// Writes a new stream's headers and half its body to `out`.
    fn open_stream(&mut self, out: &mut Vec<u8>) {
        let id = self.next_stream;
        self.next_stream += 2;
        frames::write(
            out,
            frames::HEADERS,
            frames::END_HEADERS,
            id,
            &self.header_block,
        );
        frames::write(out, frames::DATA, 0, id, self.path.half_body());
        self.open.insert(id);
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes).await?;
        self.tls.flush().await
    }

    /// Holds the streams until `stop` or `deadline`, answering the server's PINGs and
    /// SETTINGS; a stream the server ends is replaced by a new one, a few times over.
    async fn hold(
        mut self,
        tally: Arc<AttackTally>,
        stop: CancellationToken,
        deadline: tokio::time::Instant,
    ) {
        loop {
            let frame = tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(deadline) => break,
                frame = frames::read(&mut self.tls) => frame,
            };
            let answered = match frame {
                Ok(frame) => self.answer(frame, &tally).await,
                Err(e) => Err(e),
            };
            if answered.is_err() {
                tally
                    .connections_closed_by_server
                    .fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        tally
            .open
            .fetch_sub(self.open.len() as u64, Ordering::Relaxed);
    }

    async fn answer(&mut self, frame: frames::Frame, tally: &AttackTally) -> std::io::Result<()> {
        let mut out = Vec::new();
        let ended = match frame.kind {
            frames::PING if frame.flags & frames::ACK == 0 => {
                frames::write(&mut out, frames::PING, frames::ACK, 0, &frame.payload);
                false
            }
            frames::SETTINGS if frame.flags & frames::ACK == 0 => {
                frames::write(&mut out, frames::SETTINGS, frames::ACK, 0, &[]);
                false
            }
            // The server takes no new stream after GOAWAY; the open ones stay held.
            frames::GOAWAY => {
                self.replacements_left = 0;
                false
            }
            frames::RST_STREAM => true,
            frames::HEADERS | frames::DATA => frame.flags & frames::END_STREAM != 0,
            _ => false,
        };
        if ended && self.open.remove(&frame.stream) {
            tally.open.fetch_sub(1, Ordering::Relaxed);
            tally.ended_by_server.fetch_add(1, Ordering::Relaxed);
            if self.replacements_left > 0 {
                self.replacements_left -= 1;
                self.open_stream(&mut out);
                tally.open.fetch_add(1, Ordering::Relaxed);
                tally.opened.fetch_add(1, Ordering::Relaxed);
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        self.send(&out).await
    }
}

/// HTTP/2 frames as the attack writes and reads them (RFC 9113 §4 and §6), and HPACK
/// literals without indexing (RFC 7541 §6.2.2), which need no shared table state.
mod frames {
    use anyhow::{Context as _, Result, bail};
    use tokio::io::{AsyncRead, AsyncReadExt as _};

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_MAX_FRAME_SIZE's default, which this client never raises.
    const MAX_FRAME: usize = 16_384;

    /// One frame received.
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    /// Appends a frame; every payload here is far below 16 MiB.
    pub fn write(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(payload);
    }

    pub async fn read<R: AsyncRead + Unpin>(from: &mut R) -> std::io::Result<Frame> {
        let mut head = [0; 9];
        from.read_exact(&mut head).await?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        if len > MAX_FRAME {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a frame larger than SETTINGS_MAX_FRAME_SIZE",
            ));
        }
        let mut payload = vec![0; len];
        from.read_exact(&mut payload).await?;
        Ok(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// Reads up to the server's first SETTINGS; returns its MAX_CONCURRENT_STREAMS.
    pub async fn read_settings<R: AsyncRead + Unpin>(from: &mut R) -> Result<Option<u32>> {
        for _ in 0..8 {
            let frame = read(from).await.context("reading the server's SETTINGS")?;
            if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                return Ok(frame.payload.chunks_exact(6).find_map(|setting| {
                    (u16::from_be_bytes([setting[0], setting[1]])
                        == SETTINGS_MAX_CONCURRENT_STREAMS)
                        .then(|| {
                            u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]])
                        })
                }));
            }
        }
        bail!("the server sent other frames before its SETTINGS")
    }

    /// Appends a header field as a literal without indexing, with a new name.
    pub fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
        block.push(0x00);
        string(block, name.as_bytes());
        string(block, value.as_bytes());
    }

    /// A string literal, not Huffman-coded: its length as a 7-bit-prefix integer, then it.
    fn string(block: &mut Vec<u8>, text: &[u8]) {
        let mut len = text.len();
        if len < 0x7f {
            block.push(len as u8);
        } else {
            block.push(0x7f);
            len -= 0x7f;
            while len >= 0x80 {
                block.push((len % 0x80) as u8 | 0x80);
                len /= 0x80;
            }
            block.push(len as u8);
        }
        block.extend_from_slice(text);
    }
}

/// What `--mode watch-memory` measured.
#[derive(Debug, Serialize)]
struct WatchMemoryReport {
    mode: Mode,
    pid: u32,
    stalled: bool,
    watchers: usize,
    watchers_open: usize,
    /// Watchers that could not be opened, by reason (a gRPC status code, or the connection's
    /// error).
    refused: BTreeMap<String, u64>,
    /// Revocations this run added before opening the watchers (already-revoked ids excluded).
    revocations_added: u64,
    prefill_seconds: f64,
    rss_before_mib: f64,
    rss_with_watchers_mib: f64,
    growth_mib: f64,
    growth_per_stream_kib: f64,
    /// VmHWM when the RSS with the watchers was read.
    peak_rss_mib: f64,
    /// Reading watchers: how many had their SnapshotComplete, in how long from the first
    /// watcher's opening, and the events they read in all.
    snapshots_complete: Option<u64>,
    snapshots_seconds: Option<f64>,
    events_read: Option<u64>,
    /// Watcher connections the server had closed when the RSS with the watchers was read.
    closed_by_server_at_reading: usize,
    /// Stalled watchers with a stall timeout: what the server's cut-off left.
    cutoff: Option<Cutoff>,
    /// Once this program had closed the watchers it still held.
    rss_after_close_mib: f64,
    start_to_serving_ms: Option<f64>,
}

/// The server cutting stalled watchers off.
#[derive(Debug, Serialize)]
struct Cutoff {
    stall_timeout_s: f64,
    closed_by_server: usize,
    /// From the last watcher's opening until all were closed (or the wait gave up).
    seconds: f64,
    rss_mib: f64,
}

/// Calls in flight while revoking token ids.
const PREFILL_CALLERS: usize = 16;
/// A stalled watcher's receive windows, stream and connection: the server can send it
/// this much (the connection's is 64 KiB in effect, HTTP/2's initial value) and then nothing.
const STALLED_WINDOW: u32 = 1024;
/// How long reading watchers get to read their snapshots, at most.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(300);
/// How long past the stall timeout the bench waits for the cut-off, at most.
const CUTOFF_MARGIN: Duration = Duration::from_secs(10);

async fn measure_watch_memory(args: &Args, setup: &Setup) -> Result<WatchMemoryReport> {
    let pid = setup.pid.context(
        "--mode watch-memory reads the server's RSS from /proc: give --spawn, or --pid of a server on this machine",
    )?;
    let settle: Duration = args.settle.into();
    let started = Instant::now();
    let added = prefill_revocations(setup, args.revocations, args.timeout.into()).await?;
    let prefill_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let rss_before = rss_mib(pid)?;
    let mut watchers = Watchers::open(setup, args.watchers, args.stalled).await;
    let snapshots = if args.stalled {
        None
    } else {
        Some(watchers.wait_for_snapshots().await)
    };
    tokio::time::sleep(settle).await;
    let rss_with = rss_mib(pid)?;
    let peak_rss_mib = proc_status_kib(pid, "VmHWM:")? as f64 / 1024.0;
    let closed_by_server_at_reading = watchers.closed_by_server();
    let cutoff = match (args.stalled, args.watch_stall_timeout) {
        (true, Some(stall)) => Some(watchers.wait_for_cutoff(stall.into(), settle, pid).await?),
        _ => None,
    };
    let events_read = watchers.events.load(Ordering::Relaxed);
    let open = watchers.connections.len();
    watchers.close().await;
    tokio::time::sleep(settle).await;
    Ok(WatchMemoryReport {
        mode: Mode::WatchMemory,
        pid,
        stalled: args.stalled,
        watchers: args.watchers,
        watchers_open: open,
        refused: std::mem::take(&mut watchers.refused),
        revocations_added: added,
        prefill_seconds,
        rss_before_mib: rss_before,
        rss_with_watchers_mib: rss_with,
        growth_mib: rss_with - rss_before,
        growth_per_stream_kib: (rss_with - rss_before) * 1024.0 / open.max(1) as f64,
        peak_rss_mib,
        snapshots_complete: snapshots.map(|(n, _)| n),
        snapshots_seconds: snapshots.map(|(_, seconds)| seconds),
        events_read: (!args.stalled).then_some(events_read),
        closed_by_server_at_reading,
        cutoff,
        rss_after_close_mib: rss_mib(pid)?,
        start_to_serving_ms: setup.start_to_serving.map(|d| d.as_secs_f64() * 1e3),
    })
}

fn rss_mib(pid: u32) -> Result<f64> {
    Ok(proc_status_kib(pid, "VmRSS:")? as f64 / 1024.0)
}

/// Revokes `n` random token ids as the caller (the admin), [`PREFILL_CALLERS`] calls in
/// flight on one connection; returns how many were revoked anew.
async fn prefill_revocations(setup: &Setup, n: u64, timeout: Duration) -> Result<u64> {
    let channel = connect(&setup.target, &setup.caller_config).await?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..PREFILL_CALLERS {
        let mut client = AdminServiceClient::with_origin(channel.clone(), setup.target.uri.clone());
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut added = 0;
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let token_id = format!("bench-{}", tokenmint_core::crypto::random_id()?);
                let call = client.revoke_token_id(RevokeTokenIdRequest { token_id });
                let sequence = tokio::time::timeout(timeout, call)
                    .await
                    .context("revoking token ids: no answer within --timeout")?
                    .map_err(|s| anyhow::anyhow!("revoking token ids: {s}"))?
                    .into_inner()
                    .sequence;
                added += u64::from(sequence > 0);
            }
            Ok::<_, anyhow::Error>(added)
        }));
    }
    let mut added = 0;
    for task in tasks {
        added += task.await.context("revoking task")??;
    }
    Ok(added)
}

/// `WatchRevocations` streams held open, each on its own connection with the caller's
/// certificate.
struct Watchers {
    stop: CancellationToken,
    /// The tasks driving the watchers' connections: finished once a connection is closed
    /// (while its [`Connection`] is held in `senders`).
    connections: Vec<tokio::task::JoinHandle<()>>,
    senders: Vec<Connection>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    /// Stalled watchers' responses, held and never polled.
    held: Vec<tonic::Streaming<RevocationEvent>>,
    refused: BTreeMap<String, u64>,
    /// Readers that have had their SnapshotComplete.
    complete: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
    first_opened: Instant,
    last_opened: Instant,
}

impl Watchers {
    /// Opens `count` watchers, one after another: readers, or stalled ones.
    async fn open(setup: &Setup, count: usize, stalled: bool) -> Self {
        let now = Instant::now();
        let mut watchers = Self {
            stop: CancellationToken::new(),
            connections: Vec::new(),
            senders: Vec::new(),
            readers: Vec::new(),
            held: Vec::new(),
            refused: BTreeMap::new(),
            complete: Arc::default(),
            events: Arc::default(),
            first_opened: now,
            last_opened: now,
        };
        for _ in 0..count {
            if let Err(reason) = watchers.open_one(setup, stalled).await {
                *watchers.refused.entry(reason).or_default() += 1;
            }
        }
        watchers.last_opened = Instant::now();
        watchers
    }

    async fn open_one(&mut self, setup: &Setup, stalled: bool) -> Result<(), String> {
        let window = stalled.then_some(STALLED_WINDOW);
        let (channel, task) = connect_with_window(&setup.target, &setup.caller_config, window)
            .await
            .map_err(|e| format!("connect: {e:#}"))?;
        let response =
            RevocationServiceClient::with_origin(channel.clone(), setup.target.uri.clone())
                .watch_revocations(WatchRevocationsRequest::default())
                .await;
        let stream = match response {
            Ok(response) => response.into_inner(),
            Err(status) => {
                task.abort();
                return Err(format!("{:?}", status.code()));
            }
        };
        self.connections.push(task);
        self.senders.push(channel);
        if stalled {
            self.held.push(stream);
        } else {
            let (complete, events) = (self.complete.clone(), self.events.clone());
            let reader = read_watch(stream, complete, events, self.stop.clone());
            self.readers.push(tokio::spawn(reader));
        }
        Ok(())
    }

    /// Waits until every reader has had its SnapshotComplete, [`SNAPSHOT_WAIT`] at most;
    /// returns how many had, and the seconds since the first watcher was opened.
    async fn wait_for_snapshots(&self) -> (u64, f64) {
        let readers = self.readers.len() as u64;
        let give_up = Instant::now() + SNAPSHOT_WAIT;
        while self.complete.load(Ordering::Relaxed) < readers && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let complete = self.complete.load(Ordering::Relaxed);
        (complete, self.first_opened.elapsed().as_secs_f64())
    }

    fn closed_by_server(&self) -> usize {
        self.connections.iter().filter(|c| c.is_finished()).count()
    }

    /// Waits until the server has closed every watcher's connection, `stall` +
    /// [`CUTOFF_MARGIN`] after the last was opened at most, then `settle`; reads the RSS.
    async fn wait_for_cutoff(&self, stall: Duration, settle: Duration, pid: u32) -> Result<Cutoff> {
        let give_up = self.last_opened + stall + CUTOFF_MARGIN;
        while self.closed_by_server() < self.connections.len() && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seconds = self.last_opened.elapsed().as_secs_f64();
        let closed_by_server = self.closed_by_server();
        tokio::time::sleep(settle).await;
        Ok(Cutoff {
            stall_timeout_s: stall.as_secs_f64(),
            closed_by_server,
            seconds,
            rss_mib: rss_mib(pid)?,
        })
    }

    /// Closes every watcher this program still holds.
    async fn close(&mut self) {
        self.stop.cancel();
        self.held.clear();
        self.senders.clear();
        for connection in &self.connections {
            connection.abort();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
    }
}

/// Reads a watch stream until `stop`, or until the server ends it, counting the events and
/// (once) its SnapshotComplete.
async fn read_watch(
    mut stream: tonic::Streaming<RevocationEvent>,
    complete: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut snapshot_done = false;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = stream.message() => next,
        };
        let Ok(Some(event)) = next else {
            return;
        };
        events.fetch_add(1, Ordering::Relaxed);
        if !snapshot_done
            && matches!(
                event.event,
                Some(revocation_event::Event::SnapshotComplete(_))
            )
        {
            snapshot_done = true;
            complete.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn print_watch_memory(r: &WatchMemoryReport) {
    println!(
        "mode watch-memory: {} {} watchers asked, {} open, each on its own connection",
        r.watchers,
        if r.stalled { "stalled" } else { "reading" },
        r.watchers_open
    );
    for (reason, n) in &r.refused {
        println!("  refused {reason}: {n}");
    }
    println!(
        "  revocations     {} added before, in {:.1} s",
        r.revocations_added, r.prefill_seconds
    );
    if let (Some(n), Some(seconds), Some(events)) =
        (r.snapshots_complete, r.snapshots_seconds, r.events_read)
    {
        println!(
            "  snapshots       {n} of {} complete within {seconds:.1} s; {events} events read",
            r.watchers_open
        );
    }
    println!(
        "  server pid {}: RSS before {:.1} MiB, with the watchers {:.1} MiB (peak {:.1} MiB)",
        r.pid, r.rss_before_mib, r.rss_with_watchers_mib, r.peak_rss_mib
    );
    println!(
        "  growth          {:.1} MiB in all, {:.1} KiB per stream ({} connections already closed by the server)",
        r.growth_mib, r.growth_per_stream_kib, r.closed_by_server_at_reading
    );
    if let Some(c) = &r.cutoff {
        println!(
            "  stall timeout {:.0} s: {} of {} connections closed by the server within {:.1} s of the last opening; RSS then {:.1} MiB",
            c.stall_timeout_s, c.closed_by_server, r.watchers_open, c.seconds, c.rss_mib
        );
    }
    println!("  after close     RSS {:.1} MiB", r.rss_after_close_mib);
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
        let mut command = Command::new(&bin);
        command
            .arg("serve")
            .arg("--dev")
            .arg("--config")
            .arg(dir.join("tokenmint.toml"))
            .env("TOKENMINT__SERVER__LISTEN", addr.to_string())
            .env("TOKENMINT__SERVER__OPS_LISTEN", "127.0.0.1:0");
        if let Some(stall) = args.watch_stall_timeout {
            command.env("TOKENMINT__SERVER__WATCH_STALL_TIMEOUT", stall.to_string());
        }
        let child = command
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
