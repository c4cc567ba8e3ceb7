//! Failover time over real processes on loopback.
//!
//! Starts N `ringchat server` processes on 127.0.0.1 (`--discovery off`, every
//! one `--join`s all, each with a `--state` file), waits for one leader, then
//! per trial: kill -9 the leader, poll every live server's status every 5 ms
//! until all name the same new leader (that is the failover time), restart the
//! killed server from its state file and wait until the cluster is whole again.
//!
//! `cargo bench -p ringchat-net --bench failover -- [--trials 20] [--servers 3] [--bin PATH]`
//!
//! Each trial also measures what users of NATS JetStream and etcd measure: the time from the
//! `kill -9` to the first chat message acknowledged `stored` through a surviving server. Before
//! the kill, `--probes N` clients (default 32) log in at the servers that survive; from the
//! kill on, a probe message (to its own sender) is submitted every 5 ms by a probe client that
//! has none outstanding, and the first `stored` of a probe submitted after the kill ends the
//! measurement.
//!
//! Prints one line per trial, p50/p99/max in ms of both, and one JSON line.

use ringchat_core::seal::KeyRing;
use ringchat_core::wire::StatusReport;
use ringchat_core::NodeId;
use ringchat_net::client::{SyncClient, SyncEvent};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Opts {
    trials: usize,
    servers: usize,
    bin: PathBuf,
    poll: Duration,
    probes: usize,
}

fn parse_args() -> Result<Opts, String> {
    let mut o =
        Opts { trials: 20, servers: 3, bin: PathBuf::from(env!("CARGO_BIN_EXE_ringchat")), poll: Duration::from_millis(5), probes: 32 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--trials" => o.trials = val("--trials")?.parse().map_err(|e| format!("--trials: {e}"))?,
            "--servers" => o.servers = val("--servers")?.parse().map_err(|e| format!("--servers: {e}"))?,
            "--bin" => o.bin = PathBuf::from(val("--bin")?),
            "--poll-ms" => o.poll = Duration::from_millis(val("--poll-ms")?.parse().map_err(|e| format!("--poll-ms: {e}"))?),
            "--probes" => o.probes = val("--probes")?.parse().map_err(|e| format!("--probes: {e}"))?,
            "--bench" => {} // added by `cargo bench`
            other => return Err(format!("unknown argument {other}; use --trials N --servers N --bin PATH --poll-ms N --probes N")),
        }
    }
    if !(3..=9).contains(&o.servers) || o.trials == 0 || o.probes == 0 {
        return Err("need 3..=9 servers, at least one trial and one probe".into());
    }
    Ok(o)
}

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Free ports in 12000..20000 (below the ephemeral range), from a pid-derived base, bind-probed.
fn free_ports(n: usize) -> Vec<u16> {
    let mut port = 12_000 + (std::process::id() % 390) as u16 * 20;
    let mut out = Vec::new();
    while out.len() < n {
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
        port = if port >= 19_999 { 12_000 } else { port + 1 };
    }
    out
}

/// The cluster's key ring (the bench is an operator: status needs it).
static RING: std::sync::OnceLock<KeyRing> = std::sync::OnceLock::new();

fn spawn(bin: &Path, dir: &Path, port: u16, ports: &[u16]) -> Proc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{port}.log"))).expect("log file");
    let mut cmd = Command::new(bin);
    cmd.args(["server", "--bind", &addr(port).to_string(), "--discovery", "off", "--state"]).arg(dir.join(format!("{port}.state")));
    cmd.arg("--key-file").arg(dir.join("cluster.key"));
    for p in ports {
        cmd.args(["--join", &addr(*p).to_string()]);
    }
    cmd.env("RUST_LOG", "info").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(log));
    Proc { child: cmd.spawn().expect("spawn ringchat server") }
}

fn status(sock: &UdpSocket, port: u16) -> Option<StatusReport> {
    ringchat_net::status::query_with(sock, addr(port), RING.get(), Duration::from_millis(50)).ok()
}

/// All `ports` name one leader that is one of them and says it leads.
fn same_leader(sock: &UdpSocket, ports: &[u16]) -> Option<NodeId> {
    let rs: Vec<StatusReport> = ports.iter().map(|&p| status(sock, p)).collect::<Option<_>>()?;
    let l = rs[0].leader?;
    (rs.iter().all(|r| r.leader == Some(l)) && rs.iter().any(|r| r.node == l && r.is_leader)).then_some(l)
}

/// `same_leader`, and one installed view whose members are exactly these servers, all alive.
fn whole(sock: &UdpSocket, ports: &[u16]) -> Option<(NodeId, Vec<StatusReport>)> {
    let l = same_leader(sock, ports)?;
    let rs: Vec<StatusReport> = ports.iter().map(|&p| status(sock, p)).collect::<Option<_>>()?;
    let mut nodes: Vec<NodeId> = rs.iter().map(|r| r.node).collect();
    nodes.sort();
    let view = rs[0].view_id?;
    for r in &rs {
        let mut m: Vec<NodeId> = r.members.iter().map(|m| m.member.node).collect();
        m.sort();
        if r.view_id != Some(view) || m != nodes || r.members.iter().any(|m| !m.alive) || r.leader != Some(l) {
            return None;
        }
    }
    Some((l, rs))
}

fn wait<T>(timeout: Duration, poll: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(poll);
    }
}

/// Probe clients logged in at `live` (spread over them), each ready to send to itself.
fn probes(n: usize, live: &[u16], trial: usize) -> Option<Vec<(SyncClient, String)>> {
    let mut ps: Vec<(SyncClient, String)> = (0..n)
        .map(|j| {
            let name = format!("probe{j}");
            let identity = RING.get().map(KeyRing::identity_public);
            let c = SyncClient::new(&name, vec![addr(live[j % live.len()])], 1_000_000 + (trial * 1000 + j) as u64, identity)
                .expect("probe client");
            (c, name)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ps.iter().any(|(c, _)| !c.is_online()) {
        if Instant::now() >= deadline {
            return None;
        }
        for (c, _) in ps.iter_mut() {
            c.step(Duration::ZERO);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Some(ps)
}

/// After a kill at `t0`: polls `live` for a new leader every `poll` and submits a probe every
/// 5 ms; returns (time to agreement, time to the first probe stored), each `None` if not within 10 s.
fn after_kill(
    sock: &UdpSocket,
    live: &[u16],
    old: NodeId,
    ps: &mut [(SyncClient, String)],
    t0: Instant,
    poll: Duration,
) -> (Option<(f64, NodeId)>, Option<f64>) {
    let (mut agreed, mut stored) = (None, None);
    let mut sent_after: std::collections::HashSet<ringchat_core::wire::MsgId> = Default::default();
    let (mut next_probe, mut next_poll, mut k) = (t0, t0, 0usize);
    let deadline = t0 + Duration::from_secs(10);
    while (agreed.is_none() || stored.is_none()) && Instant::now() < deadline {
        for (c, _) in ps.iter_mut() {
            for e in c.step(Duration::ZERO) {
                if let SyncEvent::Stored(id) = e {
                    if stored.is_none() && sent_after.contains(&id) {
                        stored = Some(t0.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
        }
        let now = Instant::now();
        if stored.is_none() && now >= next_probe {
            next_probe += Duration::from_millis(5);
            if let Some((c, name)) = ps.iter_mut().find(|(c, _)| c.is_online() && !c.is_busy()) {
                k += 1;
                if let Ok(id) = c.send(&name.clone(), format!("probe {k}")) {
                    sent_after.insert(id);
                }
            }
        }
        if agreed.is_none() && now >= next_poll {
            next_poll = now + poll;
            if let Some(l) = same_leader(sock, live).filter(|l| l.id != old.id) {
                agreed = Some((t0.elapsed().as_secs_f64() * 1e3, l));
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    (agreed, stored)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("ringchat-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    ringchat_net::keys::keygen(&dir.join("cluster.key")).expect("key file");
    let _ = RING.set(ringchat_net::keys::load(&dir.join("cluster.key")).expect("key file"));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("status socket");
    let ports = free_ports(o.servers);
    let mut procs: Vec<Proc> = ports.iter().map(|&p| spawn(&o.bin, &dir, p, &ports)).collect();
    let t = Instant::now();
    if wait(Duration::from_secs(20), o.poll, || whole(&sock, &ports)).is_none() {
        eprintln!("error: the {} servers never agreed on a leader (logs in {})", o.servers, dir.display());
        std::process::exit(1);
    }
    println!("{} servers on 127.0.0.1 agreed on a leader {} ms after start", o.servers, t.elapsed().as_millis());

    let mut samples: Vec<f64> = Vec::new();
    let mut stored_samples: Vec<f64> = Vec::new();
    let mut failures = 0usize;
    for trial in 1..=o.trials {
        let Some((old, rs)) = wait(Duration::from_secs(20), o.poll, || whole(&sock, &ports)) else {
            eprintln!("trial {trial}: the cluster is not whole (logs in {})", dir.display());
            failures += 1;
            break;
        };
        let Some(i) = rs.iter().position(|r| r.node == old) else { break };
        let live: Vec<u16> = ports.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| *p).collect();
        let Some(mut ps) = probes(o.probes, &live, trial) else {
            eprintln!("trial {trial}: the probe clients did not log in within 10 s");
            failures += 1;
            break;
        };
        let t0 = Instant::now();
        let _ = procs[i].child.kill();
        let _ = procs[i].child.wait();
        let (agreed, stored) = after_kill(&sock, &live, old, &mut ps, t0, o.poll);
        drop(ps);
        match agreed {
            Some((ms, l)) => {
                samples.push(ms);
                print!("trial {trial:>3}: failover {ms:7.1} ms ({old} -> {l})");
            }
            None => {
                failures += 1;
                print!("trial {trial:>3}: no new leader within 10 s");
            }
        }
        match stored {
            Some(ms) => {
                stored_samples.push(ms);
                print!(", first probe stored {ms:7.1} ms after the kill");
            }
            None => {
                failures += 1;
                print!(", no probe stored within 10 s");
            }
        }
        // Restart the killed server from its state file (its next incarnation).
        let t1 = Instant::now();
        procs[i] = spawn(&o.bin, &dir, ports[i], &ports);
        match wait(Duration::from_secs(20), o.poll, || whole(&sock, &ports)) {
            Some(_) => println!(", restarted server back in the view after {} ms", t1.elapsed().as_millis()),
            None => println!(", restarted server NOT back in the view after 20 s"),
        }
    }
    drop(procs);

    if samples.is_empty() {
        eprintln!("error: no successful trial (logs in {})", dir.display());
        std::process::exit(1);
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let (p50, p99, max, min) = (percentile(&sorted, 50.0), percentile(&sorted, 99.0), sorted[sorted.len() - 1], sorted[0]);
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    println!(
        "failover over {} trials ({} servers, poll {} ms): p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (min {min:.1}, mean {mean:.1}), {failures} failed",
        samples.len(),
        o.servers,
        o.poll.as_millis()
    );
    let mut st = stored_samples.clone();
    st.sort_by(f64::total_cmp);
    let (sp50, sp99, smax) =
        if st.is_empty() { (f64::NAN, f64::NAN, f64::NAN) } else { (percentile(&st, 50.0), percentile(&st, 99.0), st[st.len() - 1]) };
    println!(
        "kill -9 of the leader to the first chat message stored through a survivor (probe every 5 ms) over {} trials: p50 {sp50:.1} ms, p99 {sp99:.1} ms, max {smax:.1} ms",
        st.len()
    );
    let r1 = |x: f64| if x.is_finite() { serde_json::json!((x * 10.0).round() / 10.0) } else { serde_json::Value::Null };
    let json = serde_json::json!({
        "first_stored_p50_ms": r1(sp50),
        "first_stored_p99_ms": r1(sp99),
        "first_stored_max_ms": r1(smax),
        "first_stored_samples_ms": st.iter().map(|s| (s * 10.0).round() / 10.0).collect::<Vec<_>>(),
        "bench": "failover",
        "servers": o.servers,
        "trials": samples.len(),
        "failed": failures,
        "p50_ms": (p50 * 10.0).round() / 10.0,
        "p99_ms": (p99 * 10.0).round() / 10.0,
        "max_ms": (max * 10.0).round() / 10.0,
        "min_ms": (min * 10.0).round() / 10.0,
        "mean_ms": (mean * 10.0).round() / 10.0,
        "samples_ms": samples.iter().map(|s| (s * 10.0).round() / 10.0).collect::<Vec<_>>(),
    });
    println!("{json}");
    if failures == 0 {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("logs kept in {}", dir.display());
        std::process::exit(1);
    }
}
