//! Sealed server traffic over real processes on 127.0.0.1: a process without the key can
//! neither join nor move the leader, key rotation under chat load loses nothing, a recorded
//! datagram is refused after both sides restart, and refusals are counted in `status`.
//! Synchronisation is by polling with deadlines, never by sleeping.

mod common;

use common::*;
use ringchat_core::seal::{ChaChaPoly, ClusterKey, KeyRing, Seal};
use ringchat_core::wire::{self, Body, Envelope, Packet, StatusReport};
use ringchat_core::{NodeId, ServerId, View, ViewStamp};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn path_arg(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// A forged view commit at epoch+1 naming `by` as the only member: what an outsider would
/// send to make itself leader.
fn forged_commit(r: &StatusReport, by: NodeId, port: u16) -> Packet {
    let member = ringchat_core::Member { node: by, addr: addr(port) };
    let view = View { stamp: ViewStamp { epoch: r.epoch + 1, id: r.view_id.unwrap_or(0) + 1 }, members: vec![member] };
    Packet::Peer(Envelope { cluster: r.cluster, from: by, epoch: r.epoch + 1, body: Body::ViewCommit { view } })
}

fn counters_of(ports: &[u16]) -> Option<Vec<StatusReport>> {
    ports.iter().map(|&p| status(p)).collect()
}

#[test]
fn a_process_without_the_key_cannot_join_nor_change_the_leader() {
    let c = Cluster::start("nokey", 3);
    let (leader, before) = c.wait_for("one leader and one view of 3", WAIT, || agreement(&c.ports));
    assert!(before.iter().all(|r| r.sealed), "the test cluster is sealed");
    // Two intruders that know every address: one with a key of its own, one with none.
    let wrong = new_key_file("nokey-wrong");
    let p_wrong = free_port();
    let p_plain = free_port();
    let _wrong = spawn_server("nokey", p_wrong, &c.ports, &["--key-file", &path_arg(&wrong)]);
    let _plain = spawn_server("nokey", p_plain, &c.ports, &["--insecure-no-key"]);
    // And forged view commits, plain and sealed under the wrong key, to every member.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
    let me = NodeId { id: ServerId(0xbad), incarnation: 1 };
    let mut forger = Seal::<ChaChaPoly>::new(me, KeyRing::parse(&std::fs::read_to_string(&wrong).expect("key")).expect("ring"), None);
    for (r, &port) in before.iter().zip(&c.ports) {
        let plain = wire::encode(&forged_commit(r, me, p_plain)).expect("fits");
        let _ = sock.send_to(&plain, addr(port));
        let _ = sock.send_to(&forger.seal(plain, None), addr(port));
    }
    // Every member refuses them all, before decoding.
    c.wait_for("wrong-key and unsealed datagrams counted at every member", WAIT, || {
        let rs = counters_of(&c.ports)?;
        rs.iter().all(|r| r.counters.seal_wrong_key >= 3 && r.counters.unsealed >= 3).then_some(())
    });
    let (leader_after, after) = c.wait_for("agreement after the intrusion", WAIT, || agreement(&c.ports));
    assert_eq!(leader_after, leader, "the leader changed");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((a.epoch, a.view_id, a.members.len()), (b.epoch, b.view_id, 3), "the view or epoch moved");
    }
    for (p, r) in [(p_wrong, status_as(p_wrong, &wrong)), (p_plain, status(p_plain))] {
        let r = r.unwrap_or_else(|| panic!("the intruder at {p} answers status"));
        assert!(r.members.iter().all(|m| !c.ports.contains(&m.member.addr.port())), "an intruder sees the cluster: {}", brief(&r));
    }
}

#[test]
fn wrong_key_and_tampered_datagrams_are_counted_in_status() {
    let c = Cluster::start("count", 1);
    let port = c.ports[0];
    let r = c.wait_for("a lone leader", WAIT, || status(port).filter(|r| r.is_leader));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
    let me = NodeId { id: ServerId(0xbad), incarnation: 1 };
    let plain = wire::encode(&forged_commit(&r, me, port)).expect("fits");
    let mut wrong = Seal::<ChaChaPoly>::new(me, KeyRing::new(ClusterKey::new([7; 32])), None);
    let _ = sock.send_to(&wrong.seal(plain.clone(), None), addr(port));
    // Right key id, wrong secret: only the tag can tell.
    let mut sealed = wrong.seal(plain.clone(), None);
    let right = KeyRing::parse(&std::fs::read_to_string(test_key_file()).expect("key")).expect("ring");
    sealed[1..5].copy_from_slice(&right.primary().id().0.to_be_bytes());
    let _ = sock.send_to(&sealed, addr(port));
    let _ = sock.send_to(&plain, addr(port));
    let after = c.wait_for("each refusal counted", WAIT, || {
        status(port).filter(|a| a.counters.seal_wrong_key >= 1 && a.counters.seal_bad_tag >= 1 && a.counters.unsealed >= 1)
    });
    assert!(after.counters.rejected() >= 3);
    assert_eq!((after.epoch, after.is_leader), (r.epoch, true));
    let (code, out, _) = run_cli(&["status", "--key-file", &key_arg(), "--server", &addr(port).to_string(), "--only"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("seal: rejected wrong_key 1, bad_tag 1"), "{out}");
}

#[test]
fn a_sealed_cluster_answers_status_to_operators_only() {
    let c = Cluster::start("operators", 1);
    let port = c.ports[0];
    c.wait_for("a lone leader", WAIT, || status(port).filter(|r| r.is_leader && r.sealed));
    let server = addr(port).to_string();
    let (code, _, err) = run_cli(&["status", "--server", &server, "--only", "--timeout-ms", "300"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.lines().count() == 1 && err.contains("--key-file"), "{err}");
    assert!(status_plain(port).is_none(), "a plain status request was answered");
    let wrong = new_key_file("operators-wrong");
    let (code, _, err) = run_cli(&["status", "--key-file", &path_arg(&wrong), "--server", &server, "--only", "--timeout-ms", "300"]);
    assert_eq!(code, Some(1), "another cluster's key file is no credential: {err}");
    let r = status(port).expect("the operator's status");
    assert!(r.counters.unsealed >= 1 && r.counters.seal_wrong_key >= 1, "the refusals are counted: {}", brief(&r));
}

#[test]
fn an_unsealed_server_says_so_in_status() {
    let c = Cluster::start_with("unsealed", 1, |_| vec!["--insecure-no-key".into()]);
    let port = c.ports[0];
    c.wait_for("a lone leader", WAIT, || status_plain(port).filter(|r| r.is_leader && !r.sealed));
    let (code, out, _) = run_cli(&["status", "--server", &addr(port).to_string()]);
    assert_eq!(code, Some(0));
    assert!(out.contains("UNSEALED"), "{out}");
}

#[test]
fn a_server_without_a_key_or_with_a_bad_key_file_refuses_to_start() {
    let bind = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = run_cli(&["server", "--bind", &bind, "--discovery", "off"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.lines().count() == 1 && err.contains("--key-file") && err.contains("--insecure-no-key"), "{err}");
    let bad = new_key_file("bad");
    std::fs::write(&bad, "primary 1234\n").expect("write");
    let (code, _, err) = run_cli(&["server", "--bind", &bind, "--discovery", "off", "--key-file", &path_arg(&bad)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.lines().count() == 1 && err.contains("line 1"), "{err}");
    let (code, _, err) = run_cli(&["server", "--bind", &bind, "--discovery", "off", "--key-file", "/nonexistent/ringchat.key"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.lines().count() == 1 && err.contains("cannot read key file"), "{err}");
    let (code, _, err) = run_cli(&["keys", "list", "--key-file", "/nonexistent/ringchat.key"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Forwards nothing: records the datagrams that reach it.
struct Recorder {
    sock: UdpSocket,
    port: u16,
}

impl Recorder {
    fn new() -> Recorder {
        let port = free_port();
        let sock = UdpSocket::bind(addr(port)).expect("recorder socket");
        sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        Recorder { sock, port }
    }

    /// The first sealed datagram from `from_port` (within `WAIT`).
    fn sealed_from(&self, from_port: u16) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                if from.port() == from_port && ringchat_core::seal::frame::is_sealed(&buf[..n]) {
                    return buf[..n].to_vec();
                }
            }
        }
        panic!("no sealed datagram from port {from_port} reached the recorder");
    }
}

#[test]
fn a_replayed_datagram_is_refused_after_both_sides_restart() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ringchat-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("state dir");
    let rec = Recorder::new();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let state = |i: usize| path_arg(&dir.join(format!("s{i}.state")));
    // Server 0 also "knows" the recorder's port: its discovery datagrams to it are recorded.
    let join = |i: usize| -> Vec<u16> {
        if i == 0 {
            ports.iter().copied().chain([rec.port]).collect()
        } else {
            ports.clone()
        }
    };
    let mut c = Cluster { name: "replay".into(), procs: Vec::new(), ports: ports.clone() };
    for (i, &p) in ports.iter().enumerate() {
        c.procs.push(spawn_server("replay", p, &join(i), &["--state", &state(i)]));
    }
    let recorded = rec.sealed_from(ports[0]);
    let (_, reports) = c.wait_for("one leader and one view of 3", WAIT, || agreement(&c.ports));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
    // Delivered to server 1 twice now: the first copy may open (it is new there), the second is a replay.
    let replays = reports[1].counters.seal_replay;
    let _ = sock.send_to(&recorded, addr(ports[1]));
    let _ = sock.send_to(&recorded, addr(ports[1]));
    c.wait_for("the second copy refused as a replay", WAIT, || status(ports[1]).filter(|r| r.counters.seal_replay > replays));
    // Both sides restart: the sender (a new life) and the receiver (its replay memory from disk).
    for i in [0, 1] {
        c.procs[i].kill();
        c.procs[i] = spawn_server("replay", ports[i], &join(i), &["--state", &state(i)]);
    }
    let (_, again) = c.wait_for("one leader and one view of 3 after the restarts", WAIT, || agreement(&c.ports));
    assert!(again[0].node.incarnation > reports[0].node.incarnation && again[1].node.incarnation > reports[1].node.incarnation);
    for to in [ports[1], ports[0], ports[2]] {
        let _ = sock.send_to(&recorded, addr(to));
    }
    for (i, &p) in ports.iter().enumerate() {
        c.wait_for(&format!("server {i} refused the recorded datagram"), WAIT, || {
            status(p)
                .filter(|r| r.counters.seal_replay + r.counters.seal_stale > again[i].counters.seal_replay + again[i].counters.seal_stale)
        });
    }
    let (_, after) = c.wait_for("agreement after the replay", WAIT, || agreement(&c.ports));
    for (a, b) in after.iter().zip(&again) {
        assert_eq!((a.epoch, a.view_id), (b.epoch, b.view_id), "the replay moved a view or an epoch");
    }
    assert!(dir.join("s1.state.seal").exists(), "the replay memory lives beside the state file");
}

/// A `ringchat client --json` process.
struct JsonClient {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    seen: Vec<Value>,
}

impl JsonClient {
    fn start(name: &str, ports: &[u16]) -> JsonClient {
        let mut cmd = Command::new(BIN);
        cmd.args(["client", "--json", "--name", name]).env("RINGCHAT_HOME", home());
        for p in ports {
            cmd.args(["--server", &addr(*p).to_string()]);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn client");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        JsonClient { child, stdin, rx, seen: Vec::new() }
    }

    fn cmd(&mut self, v: Value) {
        writeln!(self.stdin, "{v}").expect("write to client");
        self.stdin.flush().expect("flush");
    }

    /// Waits until `n` events match `pred`.
    fn wait_count(&mut self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + WAIT;
        while self.seen.iter().filter(|v| pred(v)).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    assert_ne!(v["event"], "failed", "{v}");
                    self.seen.push(v);
                }
                Err(_) => panic!("timed out waiting for {what}; saw {:#?}", self.seen),
            }
        }
    }
}

impl Drop for JsonClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rotation_from_key_a_to_key_b_under_chat_load_loses_no_message() {
    // Each server its own copy of the key file, as on separate hosts.
    let files: Vec<_> = (0..3)
        .map(|i| {
            let f = log_path(&format!("rotate-{i}-{}.key", std::process::id()));
            std::fs::copy(test_key_file(), &f).expect("copy key file");
            f
        })
        .collect();
    let c = Cluster::start_with("rotate", 3, |i| vec!["--key-file".into(), path_arg(&files[i])]);
    c.wait_for("one leader and one view of 3", WAIT, || agreement(&c.ports));
    let mut alice = JsonClient::start("alice", &c.ports);
    let mut bob = JsonClient::start("bob", &c.ports);
    alice.wait_count("attached", 1, |v| v["event"] == "attached");
    bob.wait_count("attached", 1, |v| v["event"] == "attached");
    let mut sent = 0;
    let send_some = |alice: &mut JsonClient, sent: &mut usize| {
        for _ in 0..3 {
            alice.cmd(json!({"cmd":"send","to":"bob","text":format!("m{sent}")}));
            *sent += 1;
        }
    };
    // Install B everywhere, use B everywhere, remove A everywhere; messages in flight throughout.
    let first =
        std::process::Command::new(BIN).args(["keys", "install", "--key-file", &path_arg(&files[0])]).output().expect("keys install");
    assert!(first.status.success(), "{first:?}");
    let b_hex = String::from_utf8_lossy(&first.stdout).trim().rsplit(' ').next().expect("hex").to_string();
    let b_id = ClusterKey::from_hex(&b_hex).expect("printed key").id().to_string();
    let a_id = KeyRing::parse(&std::fs::read_to_string(test_key_file()).expect("key")).expect("ring").primary().id().to_string();
    let steps: Vec<Vec<String>> =
        vec![vec!["install".into(), b_hex.clone()], vec!["use".into(), b_id.clone()], vec!["remove".into(), a_id.clone()]];
    for (s, step) in steps.iter().enumerate() {
        for (i, f) in files.iter().enumerate() {
            send_some(&mut alice, &mut sent);
            if !(s == 0 && i == 0) {
                let mut args = vec!["keys".to_string(), step[0].clone(), "--key-file".into(), path_arg(f)];
                args.push(step[1].clone());
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let (code, _, err) = run_cli(&args);
                assert_eq!(code, Some(0), "keys {step:?} on server {i}: {err}");
            }
            // The running server picks the change up (no restart): its log says so.
            let log = c.procs[i].log.clone();
            c.wait_for(&format!("server {i} to load step {s}"), WAIT, || {
                let text = std::fs::read_to_string(&log).ok()?;
                (text.matches("key ring loaded").count() > s).then_some(())
            });
            alice.wait_count("stored", sent, |v| v["event"] == "stored");
        }
    }
    send_some(&mut alice, &mut sent);
    alice.wait_count("every message stored", sent, |v| v["event"] == "stored");
    bob.wait_count("every message shown", sent, |v| v["event"] == "shown");
    let mut texts: Vec<String> =
        bob.seen.iter().filter(|v| v["event"] == "shown").map(|v| v["text"].as_str().unwrap_or("").to_string()).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), sent, "a message was lost or shown twice");
    // The operator now holds key B: status asked with A is refused, with B answered.
    let rs: Vec<StatusReport> =
        c.ports.iter().zip(&files).map(|(&p, f)| status_as(p, f)).collect::<Option<_>>().expect("every server answers key B's operator");
    assert!(status_as(c.ports[0], &test_key_file()).is_none(), "a removed key still asks for status");
    for r in &rs {
        assert_eq!((r.counters.seal_wrong_key, r.counters.seal_bad_tag), (0, 0), "a rotation step refused a datagram: {}", brief(r));
    }
    let ring = ringchat_net::keys::load(&files[2]).expect("ring");
    assert_eq!((ring.primary().id().to_string(), ring.keys().len()), (b_id, 1));
}
