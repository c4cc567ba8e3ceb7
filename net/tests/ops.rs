//! The operator's server: metrics scraped over HTTP, `ringchat status` over a whole cluster,
//! systemd readiness and a clean stop on SIGTERM, a config file on a running server, and the
//! systemd unit. Real processes on 127.0.0.1 with `--discovery off` and `--join` lists.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn metrics_cluster(name: &str, n: usize) -> (Cluster, Vec<u16>) {
    let mports: Vec<u16> = (0..n).map(|_| free_tcp_port()).collect();
    let c = Cluster::start_with(name, n, |i| vec!["--metrics".into(), format!("127.0.0.1:{}", mports[i])]);
    (c, mports)
}

/// Scrapes `port` until `f` accepts the text (or the deadline passes).
fn scrape_until(c: &Cluster, port: u16, what: &str, f: impl Fn(&str) -> bool) -> String {
    c.wait_for(what, Duration::from_secs(15), || http_get(port, "/metrics").filter(|(code, body)| *code == 200 && f(body)).map(|(_, b)| b))
}

#[test]
fn metrics_of_a_three_server_cluster() {
    let (c, mports) = metrics_cluster("metrics3", 3);
    let (leader, reports) = c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));

    // A message through the leader's server: a stored acknowledgement and a show go out there.
    let at = reports.iter().position(|r| r.node == leader).expect("the leader is one of them");
    let mut alice = ringchat_net::client::SyncClient::new("alice", vec![addr(c.ports[at])], 0xa11ce, Some(test_ring().identity_public()))
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut stored, mut shown) = (false, false);
    let mut sent = false;
    while !(stored && shown) {
        assert!(Instant::now() < deadline, "no stored and shown message: stored {stored} shown {shown}\n{}", c.logs());
        if alice.is_online() && !alice.is_busy() && !sent {
            alice.send("alice", "note to self".into()).expect("send");
            sent = true;
        }
        for e in alice.step(Duration::from_millis(20)) {
            match e {
                ringchat_net::client::SyncEvent::Stored(_) => stored = true,
                ringchat_net::client::SyncEvent::Shown { .. } => shown = true,
                _ => {}
            }
        }
    }

    let texts: Vec<String> = mports
        .iter()
        .map(|&p| scrape_until(&c, p, "a scrape with a view of 3", |t| sample(t, "ringchat_view_size", "") == Some(3.0)))
        .collect();
    let leading: Vec<f64> = texts.iter().map(|t| sample(t, "ringchat_is_leader", "").expect("is_leader")).collect();
    assert_eq!(leading.iter().filter(|v| **v == 1.0).count(), 1, "exactly one server leads: {leading:?}");
    assert_eq!(leading.iter().filter(|v| **v == 0.0).count(), 2, "{leading:?}");
    assert_eq!(leading[at], 1.0, "the leader's server reports leading");
    for t in &texts {
        assert!(t.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
        assert_eq!(sample(t, "ringchat_view_size", ""), Some(3.0));
        assert!(sample(t, "ringchat_epoch", "").is_some_and(|e| e >= 1.0), "{t}");
        assert!(sample(t, "ringchat_uptime_seconds", "").is_some_and(|u| u > 0.0));
        assert!(sample(t, "ringchat_datagrams_in_total", "").is_some_and(|n| n > 0.0));
        assert!(sample(t, "ringchat_received_bytes_total", "").is_some_and(|n| n > 0.0));
        assert!(sample(t, "ringchat_datagrams_out_total", "kind=\"heartbeat\",retransmit=\"false\"").is_some_and(|n| n > 0.0), "{t}");
        assert!(sample_sum(t, "ringchat_leader_changes_total") >= 1.0, "every server saw a leader appear: {t}");
        assert!(sample(t, "ringchat_views_installed_total", "").is_some_and(|n| n >= 1.0));
        for cause in ["malformed", "oversize", "wrong_version", "invalid", "foreign_cluster", "non_member", "stale_epoch", "tokens_refused"]
        {
            assert!(sample(t, "ringchat_rejected_total", &format!("cause=\"{cause}\"")).is_some(), "{cause}: {t}");
        }
        assert!(sample(t, "ringchat_elections_started_total", "").is_some());
        for g in ["ringchat_store_messages", "ringchat_inbox_entries", "ringchat_holdback_messages", "ringchat_sessions"] {
            assert!(sample(t, g, "").is_some(), "{g}");
        }
        assert!(t.contains("ringchat_build_info{version=\""), "{t}");
    }
    let t = &texts[at];
    assert!(sample(t, "ringchat_chat_stored_total", "").is_some_and(|n| n >= 1.0), "{t}");
    assert!(sample(t, "ringchat_chat_shown_total", "").is_some_and(|n| n >= 1.0), "{t}");
    assert!(sample(t, "ringchat_sessions", "").is_some_and(|n| n >= 1.0), "{t}");
    assert!(sample_sum(t, "ringchat_leader_changes_total") >= 1.0);
    assert_eq!(sample(t, "ringchat_leader_changes_total", "event=\"became_leader\""), Some(1.0), "{t}");
}

#[test]
fn the_metrics_endpoint_is_bounded_and_changes_nothing() {
    use std::io::{Read, Write};
    let (c, mports) = metrics_cluster("metricsbound", 1);
    let m = mports[0];
    c.wait_for("a lone leader", Duration::from_secs(15), || status(c.ports[0]).filter(|r| r.is_leader));
    assert_eq!(http_get(m, "/").map(|(code, _)| code), Some(404));
    assert_eq!(http_get(m, "/metrics?x=1").map(|(code, _)| code), Some(200));
    // A POST is refused.
    let mut s = std::net::TcpStream::connect(addr(m)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    // A request head without end is cut off at its bound.
    let mut s = std::net::TcpStream::connect(addr(m)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let junk = vec![b'x'; 16 * 1024];
    let _ = s.write_all(&junk);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    // Idle connections (fewer than the bound) hold nothing up: scrapes and the protocol go on.
    let idle: Vec<std::net::TcpStream> = (0..4).map(|_| std::net::TcpStream::connect(addr(m)).expect("connect")).collect();
    let before = status(c.ports[0]).expect("status");
    for _ in 0..5 {
        let (code, body) = http_get(m, "/metrics").expect("scrape");
        assert_eq!(code, 200);
        assert_eq!(sample(&body, "ringchat_is_leader", ""), Some(1.0));
    }
    let after = status(c.ports[0]).expect("status");
    assert_eq!(
        (before.epoch, before.view_id, before.leader),
        (after.epoch, after.view_id, after.leader),
        "scrapes change no protocol state"
    );
    drop(idle);
}

#[test]
fn a_config_file_runs_a_server_and_flags_override_it() {
    let (file_port, flag_port, mport) = (free_port(), free_port(), free_tcp_port());
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ringchat-ops-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ringchat.toml");
    let text = format!(
        "bind = \"127.0.0.1:{file_port}\"\ndiscovery = \"off\"\nmetrics = \"127.0.0.1:{mport}\"\nexpect = 1\n[protocol]\nheartbeat_ms = 50\n"
    );
    std::fs::write(&path, text).expect("write config");
    // spawn_server gives --bind (the flag wins over the file's bind) and --discovery off.
    let p = spawn_server("config", flag_port, &[], &["--config", path.to_str().expect("utf-8 path")]);
    let c = Cluster { name: "config".into(), procs: vec![p], ports: vec![flag_port] };
    c.wait_for("a lone leader on the flag's port", Duration::from_secs(15), || status(flag_port).filter(|r| r.is_leader));
    // The file's metrics address is served.
    let body = scrape_until(&c, mport, "metrics on the file's address", |t| sample(t, "ringchat_is_leader", "") == Some(1.0));
    assert_eq!(sample(&body, "ringchat_view_size", ""), Some(1.0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A datagram socket standing in for systemd's notification socket, read at once by a thread
/// (as systemd does: its queue holds only a few datagrams).
#[cfg(unix)]
struct Notify {
    path: std::path::PathBuf,
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

#[cfg(unix)]
impl Notify {
    fn new(name: &str) -> Notify {
        let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("notify-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                if tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                    break;
                }
            }
        });
        Notify { path, rx, seen: Vec::new() }
    }

    /// Waits for a message with the line `want` (after those already taken).
    fn wait_for(&mut self, want: &str, timeout: Duration) {
        self.wait_line(want, timeout, |l| l == want)
    }

    /// Waits for a message with a line that `f` accepts (after those already taken).
    fn wait_line(&mut self, want: &str, timeout: Duration, f: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(msg) => {
                    let found = msg.lines().any(&f);
                    self.seen.push(msg);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!("no {want} within {timeout:?}; got {:?}", self.seen),
            }
        }
    }
}

#[cfg(unix)]
impl Drop for Notify {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(unix)]
#[test]
fn systemd_readiness_watchdog_and_a_clean_stop_on_sigterm() {
    use std::process::{Command, Stdio};
    let mut notify = Notify::new("sd");
    let port = free_port();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ringchat-ops-sd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let state = dir.join("state");
    let _ = std::fs::remove_file(&state);
    let log = dir.join("server.log");
    let mut cmd = Command::new(BIN);
    cmd.args(["server", "--bind", &addr(port).to_string(), "--discovery", "off", "--state", state.to_str().expect("utf-8")]);
    cmd.arg("--key-file").arg(test_key_file());
    cmd.env("NOTIFY_SOCKET", &notify.path).env("WATCHDOG_USEC", "100000").env_remove("WATCHDOG_PID").env("RUST_LOG", "info");
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(std::fs::File::create(&log).expect("log")));
    let child = cmd.spawn().expect("spawn");
    let mut p = Proc { child, port, log: log.clone() };

    // READY=1 once the sockets are bound and the loop runs: the server answers at once.
    notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(status(port).is_some(), "ready but not answering; notifications {:?}", notify.seen);
    // WatchdogSec= of 100 ms: the loop pings twice per period.
    notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(port).is_none_or(|r| !r.is_leader) {
        assert!(Instant::now() < deadline, "a lone server never led");
        std::thread::sleep(Duration::from_millis(10));
    }
    // `systemctl status` shows the role.
    notify.wait_line("STATUS=leader ...", Duration::from_secs(5), |l| l.starts_with("STATUS=leader in cluster"));

    // SIGTERM as `systemctl stop` sends it: STOPPING=1, a clean leave, the state written, exit 0.
    assert!(sigterm(&p.child), "kill -TERM failed");
    let t0 = Instant::now();
    let exit = wait_exit(&mut p.child, Duration::from_secs(5)).unwrap_or_else(|| panic!("no exit within 5 s of SIGTERM"));
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    eprintln!("exited {} ms after SIGTERM", t0.elapsed().as_millis());
    notify.wait_for("STOPPING=1", Duration::from_secs(1));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("left cluster"), "{text}");
    assert!(std::fs::metadata(&state).is_ok_and(|m| m.len() > 12), "the state file is written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn a_notification_socket_nobody_reads_does_not_stop_the_server() {
    // The service manager's queue holds a few datagrams; watchdog pings every 5 ms fill it at
    // once. The event loop must not wait for it: the server goes on answering, and stops on
    // SIGTERM within the notifier's bounded last wait.
    use std::process::{Command, Stdio};
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("notify-deaf-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let _deaf = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["server", "--bind", &addr(port).to_string(), "--discovery", "off"]);
    cmd.arg("--key-file").arg(test_key_file());
    cmd.env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "10000").env_remove("WATCHDOG_PID");
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut p = Proc { child: cmd.spawn().expect("spawn"), port, log: path.clone() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(port).is_none_or(|r| !r.is_leader) {
        assert!(Instant::now() < deadline, "a lone server never led");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Well past the point where the queue is full: still answering, several times over.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert!(status(port).is_some(), "the server stopped answering");
    }
    assert!(sigterm(&p.child));
    let exit = wait_exit(&mut p.child, Duration::from_secs(5)).expect("exit within 5 s of SIGTERM");
    assert_eq!(exit.code(), Some(0));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn without_systemd_the_server_runs_and_stops_as_before() {
    // No NOTIFY_SOCKET: readiness and watchdog are no-ops; SIGTERM still leaves cleanly.
    let port = free_port();
    let mut p = spawn_server("nosd", port, &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(port).is_none() {
        assert!(Instant::now() < deadline, "no answer");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sigterm(&p.child));
    let exit = wait_exit(&mut p.child, Duration::from_secs(5)).expect("exit within 5 s of SIGTERM");
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ringchat.service")).expect("unit");
    for line in ["Type=notify", "StateDirectory=ringchat", "Restart=on-failure", "--state /var/lib/ringchat/"] {
        assert!(unit.contains(line), "the unit lacks {line}");
    }
    let analyze = std::process::Command::new("systemd-analyze").arg("--version").output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        eprintln!("note: systemd-analyze is not installed; skipping `systemd-analyze verify`");
        return;
    }
    // Verified with ExecStart pointing at this build (verify wants the binary to exist).
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ringchat-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ringchat.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/ringchat", BIN)).expect("write unit");
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze verify");
    let err = String::from_utf8_lossy(&out.stderr);
    // Lines about this unit only (the host's own units may have complaints of their own).
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("ringchat")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn status_json(args: &[&str]) -> Value {
    let (code, out, err) = run_cli(args);
    assert_eq!(code, Some(0), "ringchat {args:?}: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}): {out}"))
}

#[test]
fn status_lists_every_member_of_the_cluster() {
    let mut c = Cluster::start("status3", 3);
    let (leader, _) = c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    let asked = addr(c.ports[0]).to_string();
    let v = status_json(&["status", "--key-file", &key_arg(), "--server", &asked, "--json"]);
    let rows = v["endpoints"].as_array().expect("endpoints");
    assert_eq!(rows.len(), 3, "{v}");
    assert_eq!(rows.iter().filter(|r| r["leader"] == Value::Bool(true)).count(), 1, "{v}");
    assert_eq!(v["leaders"].as_u64(), Some(1));
    assert_eq!(v["reachable"].as_u64(), Some(3));
    let leader_row = rows.iter().find(|r| r["leader"] == Value::Bool(true)).expect("a leader row");
    assert_eq!(leader_row["node"].as_str(), Some(leader.id.full().as_str()));
    let mut addrs: Vec<&str> = rows.iter().filter_map(|r| r["addr"].as_str()).collect();
    addrs.sort();
    let mut want: Vec<String> = c.ports.iter().map(|&p| addr(p).to_string()).collect();
    want.sort();
    assert_eq!(addrs, want);
    for r in rows {
        assert_eq!(r["state"], "alive", "{r}");
        assert_eq!(r["epoch"], v["epoch"], "{r}");
        assert_eq!(r["view"], v["view_id"], "{r}");
        assert!(r["clients"].is_u64() && r["store"].is_u64() && r["refused"].is_u64(), "{r}");
    }
    assert_eq!(rows.iter().filter(|r| r["asked"] == Value::Bool(true)).count(), 1);

    // Scripts that read the asked server's fields by key out of the text (tests/lan.sh does)
    // see the same values as with --only, which asks that server alone.
    let text = run_cli(&["status", "--key-file", &key_arg(), "--server", &asked, "--json"]).1;
    let only = status_json(&["status", "--key-file", &key_arg(), "--server", &asked, "--json", "--only"]);
    assert!(only.get("endpoints").is_none());
    // As `sed 's/.*"KEY":"\([^"]*\)".*/\1/'` and `s/.*"KEY":\([0-9][0-9]*\).*/\1/` read them: the last
    // string (or number) value of KEY anywhere in the line; and the first string value of `id`.
    let values = |key: &str, string: bool| -> Vec<String> {
        let pat = if string { format!("\"{key}\":\"") } else { format!("\"{key}\":") };
        text.match_indices(&pat)
            .map(|(i, _)| &text[i + pat.len()..])
            .filter_map(|rest| {
                let v: String =
                    if string { rest.split('"').next()?.to_string() } else { rest.chars().take_while(char::is_ascii_digit).collect() };
                (string || !v.is_empty()).then_some(v)
            })
            .collect()
    };
    assert_eq!(values("leader", true).last(), Some(&leader.id.full()), "the last string leader is the top-level one");
    assert_eq!(values("epoch", false).last(), Some(&only["epoch"].to_string()));
    assert_eq!(values("view_id", false).last(), Some(&only["view_id"].to_string()));
    assert_eq!(values("id", true).first(), only["id"].as_str().map(str::to_string).as_ref());
    assert_eq!(text.matches("\"self\":").count(), 3);
    assert_eq!(text.matches("\"alive\":true").count(), 3);
    assert_eq!(text.contains("\"is_leader\":true"), only["is_leader"] == Value::Bool(true));

    // The table for people: a header, one line per server, one leader.
    let (code, out, err) = run_cli(&["status", "--key-file", &key_arg(), "--server", &asked]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[1].starts_with("ID") && lines[1].contains("ADDRESS") && lines[1].contains("STATE"), "{out}");
    let table: Vec<&str> = lines.iter().skip(2).filter(|l| l.contains("127.0.0.1:")).copied().collect();
    assert_eq!(table.len(), 3, "{out}");
    assert_eq!(table.iter().filter(|l| l.split_whitespace().any(|w| w == "leader")).count(), 1, "{out}");
    assert!(table.iter().all(|l| l.contains("alive")), "{out}");

    // A member killed -9: still listed, unreachable from here, within the timeout.
    let dead = c.ports.iter().position(|&p| p != c.ports[0] && status(p).is_some_and(|r| !r.is_leader)).expect("a follower");
    let dead_addr = addr(c.ports[dead]).to_string();
    c.procs[dead].kill();
    let t0 = Instant::now();
    let v = status_json(&["status", "--key-file", &key_arg(), "--server", &asked, "--json", "--timeout-ms", "300"]);
    assert!(t0.elapsed() < Duration::from_secs(5));
    let rows = v["endpoints"].as_array().expect("endpoints");
    let row = rows.iter().find(|r| r["addr"] == dead_addr.as_str()).expect("the dead member is still in the view");
    assert_eq!(row["state"], "unreachable", "{v}");
    assert!(row["epoch"].is_null());
}

#[test]
fn status_finds_the_cluster_through_the_discovery_target() {
    // As a client does: `Find` to the discovery target, and the member that answers is asked.
    // The target here is one server's own (loopback, unicast) address: nothing is multicast.
    let c = Cluster::start("statusfind", 2);
    c.wait_for("one leader and one view of 2", Duration::from_secs(15), || agreement(&c.ports));
    let target = addr(c.ports[1]).to_string();
    let v = status_json(&["status", "--key-file", &key_arg(), "--discovery", "broadcast", "--group", &target, "--json"]);
    assert_eq!(v["endpoints"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["server"].as_str(), Some(target.as_str()));
    // Nobody there: one line, exit 1.
    let nobody = addr(free_port()).to_string();
    let (code, _, err) =
        run_cli(&["status", "--key-file", &key_arg(), "--discovery", "broadcast", "--group", &nobody, "--timeout-ms", "200"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
