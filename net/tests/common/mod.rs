//! Helpers for the loopback tests: free ports, server processes that die with
//! the test, status polling with deadlines (never sleeps as synchronisation).
#![allow(dead_code)]

use ringchat_core::wire::StatusReport;
use ringchat_core::NodeId;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ringchat");

static NEXT: AtomicU16 = AtomicU16::new(0);

/// Held while probing a port and while spawning: a child forked by another
/// thread holds a copy of every open socket until it execs (`spawn` returns
/// after the exec), so a probe socket could otherwise outlive its close and
/// make the server's bind fail.
static FORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fork_lock() -> std::sync::MutexGuard<'static, ()> {
    FORK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A port free on 127.0.0.1 right now. Ports start from a base derived from the
/// pid (parallel test processes use different ranges) and every candidate is
/// bind-probed (anything else on the machine is skipped).
pub fn free_port() -> u16 {
    // 20000..32000: below Linux's ephemeral range (32768..), where status clients bind.
    let base = (std::process::id() % 600) as u16 * 20;
    loop {
        let off = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + (base + off % 12_000) % 12_000;
        let _guard = fork_lock();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A process killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Proc {
    /// kill -9, and wait for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ringchat-net-tests");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A file name in the tests' directory.
pub fn log_path(name: &str) -> PathBuf {
    log_dir().join(name)
}

/// The key ring every test server is given unless its flags name another key or none: one
/// fixed key (tests are about behaviour, not secrecy), written once per test process.
pub fn test_key_file() -> PathBuf {
    static WRITTEN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    WRITTEN
        .get_or_init(|| {
            let path = log_dir().join(format!("test-{}.key", std::process::id()));
            let ring = ringchat_core::seal::KeyRing::new(ringchat_core::seal::ClusterKey::new([0x42; 32]));
            ringchat_net::keys::save(&path, &ring).expect("test key file");
            path
        })
        .clone()
}

/// The ring of [`test_key_file`] (an operator's credential for `status`).
pub fn test_ring() -> ringchat_core::seal::KeyRing {
    ringchat_net::keys::load(&test_key_file()).expect("test key file")
}

/// [`test_key_file`] as a command-line argument.
pub fn key_arg() -> String {
    test_key_file().display().to_string()
}

/// The clients' config directory for this test process (user keys, trusted identities), so
/// tests never touch the real one.
pub fn home() -> PathBuf {
    let dir = log_dir().join(format!("home-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A key ring file of its own for `name` in the test directory (a fresh random key).
pub fn new_key_file(name: &str) -> PathBuf {
    let path = log_dir().join(format!("{name}-{}.key", std::process::id()));
    let _ = std::fs::remove_file(&path);
    ringchat_net::keys::keygen(&path).expect("keygen");
    path
}

/// `ringchat server --bind 127.0.0.1:port --discovery off --join ...` with its log in a file.
/// The server is sealed with [`test_key_file`] unless `extra` has `--key-file` or
/// `--insecure-no-key`.
pub fn spawn_server(name: &str, port: u16, join: &[u16], extra: &[&str]) -> Proc {
    let log = log_dir().join(format!("{name}-{port}.log"));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
    let mut cmd = Command::new(BIN);
    cmd.args(["server", "--bind", &addr(port).to_string(), "--discovery", "off"]);
    for j in join {
        cmd.args(["--join", &addr(*j).to_string()]);
    }
    cmd.args(extra);
    if !extra.iter().any(|a| *a == "--key-file" || *a == "--insecure-no-key") {
        cmd.arg("--key-file").arg(test_key_file());
    }
    cmd.env("RUST_LOG", "info").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(file));
    let child = {
        let _guard = fork_lock();
        cmd.spawn().expect("spawn ringchat server")
    };
    Proc { child, port, log }
}

/// A cluster of `n` servers that all know each other's addresses.
pub struct Cluster {
    pub name: String,
    pub procs: Vec<Proc>,
    pub ports: Vec<u16>,
}

impl Cluster {
    pub fn start(name: &str, n: usize) -> Cluster {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let procs = ports.iter().map(|&p| spawn_server(name, p, &ports, &[])).collect();
        Cluster { name: name.to_string(), procs, ports }
    }

    /// The last lines of every server log (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out.push_str(&format!("--- {} (port {})\n{}\n", p.log.display(), p.port, tail.join("\n")));
        }
        out
    }

    /// Polls `f` every 10 ms until it returns `Some` or `timeout` passes (then panics with the logs).
    pub fn wait_for<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = f() {
                return t;
            }
            if Instant::now() >= deadline {
                let now: Vec<String> = self.ports.iter().map(|&p| format!("{p}: {:?}", status(p).map(|r| brief(&r)))).collect();
                panic!("timed out after {timeout:?} waiting for {what}\nnow:\n{}\n{}", now.join("\n"), self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn brief(r: &StatusReport) -> String {
    let members: Vec<String> = r.members.iter().map(|m| format!("{}{}", m.member.node, if m.alive { "" } else { "?" })).collect();
    format!(
        "node {} phase {} leader {:?} epoch {} is_leader {} view {:?} [{}]",
        r.node,
        r.phase,
        r.leader.map(|l| l.to_string()),
        r.epoch,
        r.is_leader,
        r.view_id,
        members.join(" ")
    )
}

/// One status query (a few resends within 300 ms).
/// The status of the server at `port`, asked as an operator of the test key ring, else plain
/// (an unsealed server answers only that).
pub fn status(port: u16) -> Option<StatusReport> {
    let ring = test_ring();
    ringchat_net::status::query(addr(port), Some(&ring), Duration::from_millis(200))
        .or_else(|_| ringchat_net::status::query(addr(port), None, Duration::from_millis(200)))
        .ok()
}

/// The status of the server at `port`, asked as an operator of the ring in `key_file`.
pub fn status_as(port: u16, key_file: &std::path::Path) -> Option<StatusReport> {
    let ring = ringchat_net::keys::load(key_file).ok()?;
    ringchat_net::status::query(addr(port), Some(&ring), Duration::from_millis(300)).ok()
}

/// [`status`] asked plain, as anyone (what an unsealed server answers).
pub fn status_plain(port: u16) -> Option<StatusReport> {
    ringchat_net::status::query(addr(port), None, Duration::from_millis(300)).ok()
}

/// `Some(reports)` when every server in `ports` answers, all name the same leader,
/// that leader is one of them and says it leads, and all installed the same view
/// whose members are exactly these servers, all alive.
pub fn agreement(ports: &[u16]) -> Option<(NodeId, Vec<StatusReport>)> {
    let reports: Vec<StatusReport> = ports.iter().map(|&p| status(p)).collect::<Option<_>>()?;
    let leader = reports[0].leader?;
    if reports.iter().any(|r| r.leader != Some(leader)) {
        return None;
    }
    let leaders: Vec<&StatusReport> = reports.iter().filter(|r| r.is_leader).collect();
    if leaders.len() != 1 || leaders[0].node != leader {
        return None;
    }
    let view = reports[0].view_id?;
    let mut nodes: Vec<NodeId> = reports.iter().map(|r| r.node).collect();
    nodes.sort();
    for r in &reports {
        if r.view_id != Some(view) || r.epoch != reports[0].epoch {
            return None;
        }
        let mut members: Vec<NodeId> = r.members.iter().map(|m| m.member.node).collect();
        members.sort();
        if members != nodes || r.members.iter().any(|m| !m.alive) {
            return None;
        }
    }
    Some((leader, reports))
}

/// Runs the binary with `args`, waits at most 10 s, returns (exit code, stderr).
pub fn run_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = {
        let _guard = fork_lock();
        Command::new(BIN)
            .args(args)
            .env("RINGCHAT_HOME", home())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringchat")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A small deterministic PRNG for hostile bytes (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sends SIGTERM to `child` (with the `kill` utility: no unsafe code here).
pub fn sigterm(child: &Child) -> bool {
    let _guard = fork_lock();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().is_ok_and(|s| s.success())
}

/// A port free for TCP on 127.0.0.1 right now (the metrics endpoints), from the same ranges as [`free_port`].
pub fn free_tcp_port() -> u16 {
    loop {
        let port = free_port();
        let _guard = fork_lock();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Like [`Cluster::start`], with extra flags for server `i` from `extra(i)`.
    pub fn start_with(name: &str, n: usize, extra: impl Fn(usize) -> Vec<String>) -> Cluster {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let procs = ports
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let args = extra(i);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                spawn_server(name, p, &ports, &args)
            })
            .collect();
        Cluster { name: name.to_string(), procs, ports }
    }
}

/// Waits for `child` to exit, at most `timeout` (polling; no sleep stands for the exit itself).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `GET path` over HTTP/1.1 from 127.0.0.1:`port`: (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr(port), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/openmetrics-text\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// The samples of OpenMetrics text: (name, labels inside the braces, value).
pub fn samples(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n.to_string(), rest.trim_end_matches('}').to_string()),
                None => (series.to_string(), String::new()),
            };
            Some((name, labels, value))
        })
        .collect()
}

/// The value of the sample `name` with exactly `labels` (`""` for none).
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    samples(text).into_iter().find(|(n, l, _)| n == name && l == labels).map(|(_, _, v)| v)
}

/// The sum of every sample named `name`, whatever its labels.
pub fn sample_sum(text: &str, name: &str) -> f64 {
    samples(text).into_iter().filter(|(n, _, _)| n == name).map(|(_, _, v)| v).sum()
}
