//! Faults on the real binary (`serve --dev` as a process, on 127.0.0.1, bounded in count and
//! time): SIGKILL at random points of issue, revoke and rotate loops; its SQLite database on a
//! file system that fills up, is read-only at start, or loses the file; its PostgreSQL
//! restarted under traffic; its wall clock stepped forward and back. What must hold: a token
//! issued, a revocation or a key step answered OK survives; a write the store refused answers
//! `UNAVAILABLE`, never OK; the revocation and admin services say they are not serving while
//! no write commits, and recover without a restart.
//!
//! The file-system faults mount a small tmpfs of their own, which needs root: without it they
//! say they were skipped, except under CI (`CI` set), where they fail.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokenmint::grpc::proto::{
    IntrospectTokenRequest, IssueTokenRequest, ListKeysRequest, ListRevocationsRequest,
    RevokeTokenIdRequest, RotateKeysRequest, admin_service_client::AdminServiceClient,
    token_service_client::TokenServiceClient,
};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::binary::{Running, free_port, skipped, spawn_server};

const BIN: &str = env!("CARGO_BIN_EXE_tokenmint");
const START: Duration = Duration::from_secs(60);

/// `serve --dev` in `dir` on `port`, its log at `log` (outside a file system a test fills).
struct Dev {
    server: Server,
    process: Running,
}

/// Where a `serve --dev` listens, and its directory's certificates.
#[derive(Clone)]
struct Server {
    dir: PathBuf,
    port: u16,
    ops_port: u16,
}

impl std::ops::Deref for Dev {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Dev {
    /// Started, and serving: a demo token was issued.
    async fn start(dir: &Path, port: u16, log: &Path) -> Self {
        Self::start_with(dir, port, log, &[]).await
    }

    /// [`Dev::start`] with more environment (`TOKENMINT__STORE__URL`, say).
    async fn start_with(dir: &Path, port: u16, log: &Path, more: &[(&str, &str)]) -> Self {
        let ops_port = free_port();
        let ops = format!("127.0.0.1:{ops_port}");
        let mut env = vec![
            ("TOKENMINT__STORE__CATCH_UP_INTERVAL", "200ms"),
            ("TOKENMINT__SERVER__OPS_LISTEN", ops.as_str()),
        ];
        env.extend_from_slice(more);
        let process = spawn_server(Path::new(BIN), dir, port, log.to_str().unwrap(), None, &env);
        let dev = Self {
            server: Server {
                dir: dir.to_owned(),
                port,
                ops_port,
            },
            process,
        };
        let deadline = Instant::now() + START;
        loop {
            if let Ok(channel) = dev.try_channel("demo").await {
                let issued = TokenServiceClient::new(channel)
                    .issue_token(IssueTokenRequest::default())
                    .await;
                if issued.is_ok() {
                    return dev;
                }
            }
            let log = std::fs::read_to_string(log).unwrap_or_default();
            assert!(Instant::now() < deadline, "serve --dev never served: {log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: nothing gets a chance to finish.
    fn kill(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Server {
    async fn try_channel(&self, who: &str) -> Result<Channel, tonic::transport::Error> {
        let tls = crate::binary::dev_tls(&self.dir, who);
        Channel::from_shared(format!("https://localhost:{}", self.port))
            .unwrap()
            .tls_config(tls)?
            .timeout(Duration::from_secs(10))
            .connect()
            .await
    }

    async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.try_channel("admin").await.unwrap())
    }

    /// Every token id the store holds as revoked, paged through.
    async fn revoked_ids(&self) -> HashSet<String> {
        let mut admin = self.admin().await;
        let (mut ids, mut page_token) = (HashSet::new(), String::new());
        loop {
            let page = admin
                .list_revocations(ListRevocationsRequest {
                    page_size: 1000,
                    page_token: page_token.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            ids.extend(page.tokens.into_iter().map(|t| t.token_id));
            if page.next_page_token.is_empty() {
                return ids;
            }
            page_token = page.next_page_token;
        }
    }

    /// Every key id the store holds, in any state.
    async fn key_ids(&self) -> HashSet<String> {
        let keys = self.admin().await.list_keys(ListKeysRequest {}).await;
        let keys = keys.unwrap().into_inner().keys;
        keys.into_iter().map(|k| k.key_id).collect()
    }

    /// The gRPC health of `service`.
    async fn health(&self, service: &str) -> Option<ServingStatus> {
        let channel = self.try_channel("demo").await.ok()?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(answer.into_inner().status).ok()
    }

    /// The value of the metric line starting `name` (`name{labels} value` or `name value`).
    async fn metric(&self, name: &str) -> Option<f64> {
        crate::support::install_provider();
        let url = format!("http://127.0.0.1:{}/metrics", self.ops_port);
        let text = reqwest::get(url).await.ok()?.text().await.ok()?;
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }

    /// Waits up to 10 s for `service`'s health to be `want`.
    async fn wait_health(&self, service: &str, want: ServingStatus) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.health(service).await != Some(want) {
            assert!(Instant::now() < deadline, "{service} never became {want:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A token id no test has used.
fn fresh_id(tag: &str, n: usize) -> String {
    format!("fault-{tag}-{n}-{}", std::process::id())
}

/// Revokes `id` as the admin: whether the store acknowledged it.
async fn revoke(admin: &mut AdminServiceClient<Channel>, id: &str) -> Result<(), tonic::Status> {
    admin
        .revoke_token_id(RevokeTokenIdRequest {
            token_id: id.to_owned(),
        })
        .await
        .map(drop)
}

/// Loops of admin revocations and forced key rotations against `dev`, each acknowledgement
/// recorded in `acknowledged` (revoked ids, then key ids made current) as it arrives.
fn spawn_loops(
    dev: &Dev,
    round: usize,
    acknowledged: &Arc<Mutex<(Vec<String>, Vec<String>)>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let revoking = {
        let acknowledged = acknowledged.clone();
        let server = dev.server.clone();
        tokio::spawn(async move {
            let mut admin = server.admin().await;
            for n in 0.. {
                let id = fresh_id(&format!("kill{round}"), n);
                if revoke(&mut admin, &id).await.is_ok() {
                    acknowledged.lock().unwrap().0.push(id);
                }
            }
        })
    };
    let rotating = {
        let acknowledged = acknowledged.clone();
        let server = dev.server.clone();
        tokio::spawn(async move {
            let mut admin = server.admin().await;
            loop {
                if let Ok(answer) = admin.rotate_keys(RotateKeysRequest { force: true }).await {
                    acknowledged
                        .lock()
                        .unwrap()
                        .1
                        .push(answer.into_inner().current_key_id);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    vec![revoking, rotating]
}

/// A loop issuing demo tokens from `dev`, each one kept in `issued` as it arrives.
fn spawn_issuing(dev: &Dev, issued: &Arc<Mutex<Vec<String>>>) -> tokio::task::JoinHandle<()> {
    let (issued, server) = (issued.clone(), dev.server.clone());
    tokio::spawn(async move {
        let mut tokens = TokenServiceClient::new(server.try_channel("demo").await.unwrap());
        loop {
            if let Ok(answer) = tokens.issue_token(IssueTokenRequest::default()).await {
                issued
                    .lock()
                    .unwrap()
                    .push(answer.into_inner().access_token);
            }
        }
    })
}

/// Whether `token` is active at `server`, as its admin introspects it.
async fn is_active(server: &Server, token: &str) -> bool {
    let mut client = TokenServiceClient::new(server.try_channel("admin").await.unwrap());
    let request = IntrospectTokenRequest {
        token: token.to_owned(),
        ..Default::default()
    };
    client
        .introspect_token(request)
        .await
        .unwrap()
        .into_inner()
        .active
}

/// Four rounds: start, check that everything acknowledged so far is there and that the
/// tokens issued before the kill still verify (their keys were kept), then issue, revoke and
/// rotate until a SIGKILL at a pseudo-random point (100–900 ms in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (port, log) = (free_port(), dir.path().join("serve.log"));
    let acknowledged = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let issued: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut seed = u64::from(std::process::id());
    for round in 0..5 {
        let dev = Dev::start(dir.path(), port, &log).await;
        let (revoked, keys) = acknowledged.lock().unwrap().clone();
        let stored = dev.revoked_ids().await;
        let lost: Vec<&String> = revoked.iter().filter(|id| !stored.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged revocations lost: {lost:?}"
        );
        let stored = dev.key_ids().await;
        let lost: Vec<&String> = keys.iter().filter(|id| !stored.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged key steps lost: {lost:?}"
        );
        let tokens = issued.lock().unwrap().clone();
        for token in tokens.iter().rev().take(3) {
            assert!(
                is_active(&dev, token).await,
                "round {round}: an issued token no longer verifies"
            );
        }
        if round == 4 {
            assert!(
                !revoked.is_empty() && !keys.is_empty() && !tokens.is_empty(),
                "the loops got work done"
            );
            println!(
                "faults: {} tokens issued, {} revocations and {} rotations acknowledged, all kept across 4 SIGKILLs",
                tokens.len(),
                revoked.len(),
                keys.len()
            );
            break;
        }
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let kill_after = Duration::from_millis(100 + (seed >> 33) % 800);
        let mut loops = spawn_loops(&dev, round, &acknowledged);
        loops.push(spawn_issuing(&dev, &issued));
        tokio::time::sleep(kill_after).await;
        dev.kill();
        for task in loops {
            task.abort();
        }
    }
}

/// A tmpfs of its own, mounted on a new directory and unmounted when dropped; `None`, and a
/// line saying the test was skipped, where this process may not mount (not root). Under CI
/// the test fails instead.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        if mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir.path(),
        ) {
            return Some(Self { dir });
        }
        skipped("cannot mount a tmpfs: the file-system fault tests need root");
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts it `ro` or `rw`.
    fn remount(&self, mode: &str) {
        assert!(
            mount(&["-o", &format!("remount,{mode}")], self.path()),
            "remount {mode}"
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn mount(args: &[&str], target: &Path) -> bool {
    std::process::Command::new("mount")
        .args(args)
        .arg(target)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Fills the file system `dir` is on: writes `dir/filler` until the disk is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file
        .write_all(&chunk)
        .and_then(|()| file.sync_data())
        .is_ok()
    {}
    path
}

/// Revokes fresh ids until `refusals` are refused (at most `tries` calls): the ids
/// acknowledged, and the refusals, each of which must be `UNAVAILABLE`.
async fn revoke_until_refused(
    admin: &mut AdminServiceClient<Channel>,
    tag: &str,
    refusals: usize,
) -> (Vec<String>, Vec<tonic::Status>) {
    let (mut acknowledged, mut refused) = (Vec::new(), Vec::new());
    for n in 0..500 {
        let id = fresh_id(tag, n);
        match revoke(admin, &id).await {
            Ok(()) => acknowledged.push(id),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                refused.push(status);
                if refused.len() >= refusals {
                    break;
                }
            }
        }
    }
    (acknowledged, refused)
}

/// Revokes fresh ids until one is acknowledged, for up to 10 s: the store is writable again.
async fn revoke_until_acknowledged(admin: &mut AdminServiceClient<Channel>, tag: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        let id = fresh_id(tag, n);
        match revoke(admin, &id).await {
            Ok(()) => return id,
            Err(status) => assert!(Instant::now() < deadline, "still refused: {status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// The store refused writes, and none commits now: the revocation and admin services say so
/// in their health and the metrics, while issuance goes on.
async fn assert_shows_write_failure(dev: &Dev) {
    assert_counts_write_failure(dev).await;
    dev.wait_health("tokenmint.v1.RevocationService", ServingStatus::NotServing)
        .await;
    dev.wait_health("tokenmint.v1.AdminService", ServingStatus::NotServing)
        .await;
    assert_eq!(dev.metric("tokenmint_store_writable").await, Some(0.0));
}

/// The store refused writes: the metrics count them, and issuance goes on. (On a full disk a
/// write smaller than a revocation may still commit, and then health and
/// `tokenmint_store_writable` say a write commits, as it does.)
async fn assert_counts_write_failure(dev: &Dev) {
    assert!(dev.metric("tokenmint_store_write_failures_total").await >= Some(1.0));
    let issued = TokenServiceClient::new(dev.try_channel("demo").await.unwrap())
        .issue_token(IssueTokenRequest::default())
        .await;
    assert!(issued.is_ok(), "issuance needs no write: {issued:?}");
}

/// The store writes again: health and metrics back without a restart.
async fn assert_recovered(dev: &Dev) {
    dev.wait_health("tokenmint.v1.RevocationService", ServingStatus::Serving)
        .await;
    assert_eq!(dev.metric("tokenmint_store_writable").await, Some(1.0));
}

/// Restarts `dev` and checks every id of `acknowledged` is still revoked.
async fn restart_and_check(dev: Dev, log: &Path, acknowledged: &[String]) -> Dev {
    let (dir, port) = (dev.dir.clone(), dev.port);
    dev.kill();
    let dev = Dev::start(&dir, port, log).await;
    let stored = dev.revoked_ids().await;
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(lost.is_empty(), "acknowledged revocations lost: {lost:?}");
    dev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_unavailable_and_loses_nothing_acknowledged() {
    let Some(fs) = Tmpfs::mount("32m") else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("serve.log");
    let dev = Dev::start(fs.path(), free_port(), &log).await;
    let mut admin = dev.admin().await;
    let (mut acknowledged, refused) = revoke_until_refused(&mut admin, "before", usize::MAX).await;
    assert!(refused.is_empty() && acknowledged.len() == 500);

    let filler = fill(fs.path());
    let (more, refused) = revoke_until_refused(&mut admin, "full", 3).await;
    acknowledged.extend(more);
    assert_eq!(refused.len(), 3, "a full disk refuses revocations");
    assert_counts_write_failure(&dev).await;

    std::fs::remove_file(filler).unwrap();
    acknowledged.push(revoke_until_acknowledged(&mut admin, "freed").await);
    assert_recovered(&dev).await;
    restart_and_check(dev, &log, &acknowledged).await.kill();
}

/// The database file moved away under the running server: SQLite would write on into it, and
/// every such write would be gone at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_file_removed_under_the_server_answers_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let dev = Dev::start(dir.path(), free_port(), &log).await;
    let mut admin = dev.admin().await;
    let mut acknowledged = vec![revoke_until_acknowledged(&mut admin, "before").await];
    let (db, away) = (dir.path().join("tokenmint.db"), dir.path().join("away.db"));
    std::fs::rename(&db, &away).unwrap();
    let (more, refused) = revoke_until_refused(&mut admin, "removed", 2).await;
    assert!(
        more.is_empty() && refused.len() == 2,
        "writes to a removed file are refused"
    );
    assert!(
        refused[0].message().contains("nothing was changed"),
        "{:?}",
        refused[0]
    );
    assert_shows_write_failure(&dev).await;
    std::fs::rename(&away, &db).unwrap();
    acknowledged.push(revoke_until_acknowledged(&mut admin, "back").await);
    assert_recovered(&dev).await;
    restart_and_check(dev, &log, &acknowledged).await.kill();
}

/// A database on a file system that is read-only when the server starts (a restored snapshot
/// mounted `ro`): the server refuses to start and names the file, rather than serve state it
/// cannot record a revocation in. Remounted `rw`, it starts with everything acknowledged.
/// (A tmpfs cannot be made read-only under a process holding a file open for writing; a
/// write refused at run time takes the path the full-disk test covers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_stops_the_start_and_names_the_file() {
    let Some(fs) = Tmpfs::mount("64m") else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("serve.log");
    let port = free_port();
    let dev = Dev::start(fs.path(), port, &log).await;
    let mut admin = dev.admin().await;
    let acknowledged = vec![revoke_until_acknowledged(&mut admin, "rw").await];
    dev.kill();

    fs.remount("ro");
    let refused_log = logs.path().join("refused.log");
    let mut refused = spawn_server(
        Path::new(BIN),
        fs.path(),
        port,
        refused_log.to_str().unwrap(),
        None,
        &[],
    );
    let deadline = Instant::now() + START;
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve started on a read-only database"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let said = std::fs::read_to_string(&refused_log).unwrap();
    assert!(!status.success(), "{said}");
    assert!(
        said.contains("tokenmint.db") || said.contains("Read-only"),
        "names the file: {said}"
    );

    fs.remount("rw");
    restart_and_check(Dev::start(fs.path(), port, &log).await, &log, &acknowledged)
        .await
        .kill();
}

/// A PostgreSQL cluster of this test's own, on its own port (never the shared server other
/// tests use): initdb'd into a temporary directory, trust authentication on 127.0.0.1,
/// stopped and removed when dropped. `None` where the PostgreSQL binaries are missing.
struct Throwaway {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Throwaway {
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())?;
        let dir = tempfile::tempdir().unwrap();
        let cluster = Self {
            dir,
            bin,
            port: free_port(),
        };
        cluster.own_by_postgres();
        let data = cluster.data();
        cluster.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"],
        );
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=on",
            cluster.port,
            cluster.dir.path().display()
        );
        let log = format!("{}/postgres.log", cluster.dir.path().display());
        cluster.run(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        );
        Some(cluster)
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.path().display())
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A fast restart: every connection is cut, the server is back within seconds.
    fn restart(&self) {
        let log = format!("{}/postgres.log", self.dir.path().display());
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-m", "fast", "-w", "restart"],
        );
    }

    /// initdb refuses to run as root: as root, the tools run as `postgres`, owning the dir.
    fn own_by_postgres(&self) {
        if !is_root() {
            return;
        }
        let id = |flag: &str| {
            let out = std::process::Command::new("id")
                .args([flag, "postgres"])
                .output();
            String::from_utf8_lossy(&out.unwrap().stdout)
                .trim()
                .parse::<u32>()
                .unwrap()
        };
        std::os::unix::fs::chown(self.dir.path(), Some(id("-u")), Some(id("-g"))).unwrap();
    }

    fn run(&self, tool: &str, args: &[&str]) {
        // Output to a file, not a pipe: the postmaster pg_ctl starts would hold a pipe open.
        let output = self.dir.path().join(format!("{tool}.out"));
        let file = std::fs::File::create(&output).unwrap();
        let status = postgres_tool(&self.bin.join(tool))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .unwrap();
        let said = std::fs::read_to_string(&output).unwrap_or_default();
        assert!(status.success(), "{tool}: {said}");
    }
}

/// `program` as `postgres` when this process is root (initdb refuses root), else as it is.
fn postgres_tool(program: &Path) -> std::process::Command {
    if is_root() {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        std::process::Command::new(program)
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let data = self.data();
        let _ = postgres_tool(&self.bin.join("pg_ctl"))
            .args(["-D", data.as_str(), "-m", "immediate", "-w", "stop"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Two replicas on a throwaway PostgreSQL that is restarted while one of them takes
/// revocations: every acknowledged one is in the store and in both replicas' state after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_traffic_loses_nothing_acknowledged() {
    let Some(pg) = Throwaway::start() else {
        skipped("PostgreSQL's binaries (initdb, pg_ctl) are not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let store = [("TOKENMINT__STORE__URL", url.as_str())];
    let a = Dev::start_with(dir.path(), free_port(), &dir.path().join("a.log"), &store).await;
    let b = Dev::start_with(dir.path(), free_port(), &dir.path().join("b.log"), &store).await;

    let acknowledged = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let loops = spawn_loops(&a, 0, &acknowledged);
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.restart();
    let restarted = acknowledged.lock().unwrap().0.len();
    // Traffic goes on until revocations are acknowledged again, then a little longer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acknowledged.lock().unwrap().0.len() < restarted + 20 {
        assert!(
            Instant::now() < deadline,
            "revocations never resumed after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for task in loops {
        task.abort();
    }
    let (revoked, keys) = acknowledged.lock().unwrap().clone();
    for replica in [&a, &b] {
        replica
            .wait_health("tokenmint.v1.RevocationService", ServingStatus::Serving)
            .await;
        let stored = replica.revoked_ids().await;
        let lost: Vec<&String> = revoked.iter().filter(|id| !stored.contains(*id)).collect();
        assert!(lost.is_empty(), "acknowledged revocations lost: {lost:?}");
        let stored = replica.key_ids().await;
        assert!(
            keys.iter().all(|k| stored.contains(k)),
            "an acknowledged key step was lost"
        );
    }
    // Both replicas caught up: a token revoked now, at A, is refused at B.
    let token = TokenServiceClient::new(b.try_channel("demo").await.unwrap())
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let mut introspect_b = TokenServiceClient::new(b.try_channel("admin").await.unwrap());
    let jti = introspect_b
        .introspect_token(IntrospectTokenRequest {
            token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token_id;
    revoke(&mut a.admin().await, &jti).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = introspect_b
            .introspect_token(IntrospectTokenRequest {
                token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if !answer.active {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never learnt of A's revocation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "faults: {} revocations and {} key steps acknowledged around a PostgreSQL restart, none lost",
        revoked.len(),
        keys.len()
    );
    a.kill();
    b.kill();
}

/// libfaketime, where Debian puts it (`.ci/run` installs the package when it is missing).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The keys as `ListKeys` gives them: (key id, state).
async fn key_states(server: &Server) -> Vec<(String, String)> {
    let keys = server.admin().await.list_keys(ListKeysRequest {}).await;
    let keys = keys.unwrap().into_inner().keys;
    keys.into_iter().map(|k| (k.key_id, k.state)).collect()
}

fn current_key(keys: &[(String, String)]) -> String {
    let current: Vec<&String> = keys
        .iter()
        .filter(|(_, s)| s == "current")
        .map(|(k, _)| k)
        .collect();
    assert_eq!(current.len(), 1, "exactly one current key: {keys:?}");
    current[0].clone()
}

/// A token for demo, and its lifetime (`exp - iat`) as introspection reports it.
async fn token_and_lifetime(server: &Server) -> (String, i64) {
    let token = TokenServiceClient::new(server.try_channel("demo").await.unwrap())
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let seen = TokenServiceClient::new(server.try_channel("admin").await.unwrap())
        .introspect_token(IntrospectTokenRequest {
            token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(seen.active, "a fresh token is active");
    (token, seen.expires_at - seen.issued_at)
}

/// The wall clock of the running binary stepped forward past the rotation period and the
/// retention, then back (libfaketime; the monotonic clock left alone, as an NTP step does):
/// a retired key is not removed while the monotonic clock says its tokens may be valid, there
/// is one current key throughout, every token's lifetime is the configured one, and scheduled
/// rotation goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_jump_on_the_running_binary_keeps_keys_and_lifetimes() {
    if !Path::new(LIBFAKETIME).is_file() {
        skipped("libfaketime is not installed (Debian's libfaketime)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0").unwrap();
    let offset_env = offset.to_str().unwrap().to_owned();
    let faked = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME_TIMESTAMP_FILE", offset_env.as_str()),
        ("FAKETIME_CACHE_DURATION", "1"),
        ("DONT_FAKE_MONOTONIC", "1"),
    ];
    let dev = Dev::start_with(
        dir.path(),
        free_port(),
        &dir.path().join("serve.log"),
        &faked,
    )
    .await;
    let (_, lifetime) = token_and_lifetime(&dev).await;
    assert_eq!(lifetime, 300, "the default lifetime");
    let rotated = dev
        .admin()
        .await
        .rotate_keys(RotateKeysRequest { force: true })
        .await;
    let rotated = rotated.unwrap().into_inner();
    let retired = rotated.retired_key_id.clone();

    // Forward past the rotation period (24 h) and the retention (2 h): a scheduled rotation.
    std::fs::write(&offset, "+90000").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let keys = key_states(&dev).await;
        if current_key(&keys) != rotated.current_key_id {
            assert!(
                keys.iter().any(|(k, _)| *k == retired),
                "a key removed early: {keys:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled rotation after the jump: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, lifetime) = token_and_lifetime(&dev).await;
    assert_eq!(lifetime, 300, "a token's lifetime after the jump forward");

    // Back to half an hour before the start: nothing removed, one current key, lifetimes kept.
    std::fs::write(&offset, "-1800").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let keys = key_states(&dev).await;
    current_key(&keys);
    assert!(
        keys.iter().any(|(k, _)| *k == retired),
        "a key removed after the jump back: {keys:?}"
    );
    let (_, lifetime) = token_and_lifetime(&dev).await;
    assert_eq!(lifetime, 300, "a token's lifetime after the jump back");

    // And forward again: rotation resumes from where the wall clock now is.
    let before = current_key(&key_states(&dev).await);
    std::fs::write(&offset, "+200000").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while current_key(&key_states(&dev).await) == before {
        assert!(Instant::now() < deadline, "rotation did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        key_states(&dev).await.iter().any(|(k, _)| *k == retired),
        "the retired key stays for the monotonic retention"
    );
    dev.kill();
}
