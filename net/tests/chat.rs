//! Chat over real processes on 127.0.0.1: `ringchat server` ×3 and
//! `ringchat client --json`. Synchronisation is by waiting for JSON events
//! with deadlines; every process is killed when its handle drops.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// A `ringchat client --json` process: commands in, events out.
struct JsonClient {
    name: String,
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    /// Every event seen so far, in order.
    seen: Vec<Value>,
}

impl JsonClient {
    fn start(name: &str, ports: &[u16]) -> JsonClient {
        let mut cmd = Command::new(BIN);
        cmd.args(["client", "--json", "--name", name]).env("RINGCHAT_HOME", home());
        for p in ports {
            cmd.args(["--server", &addr(*p).to_string()]);
        }
        JsonClient::spawn(name, &mut cmd, true)
    }

    /// Spawns `cmd` and reads its stdout as JSON lines on a thread. With `strict`,
    /// a line that is not JSON fails the test; otherwise it is skipped.
    fn spawn(name: &str, cmd: &mut Command, strict: bool) -> JsonClient {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn ringchat");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v = match serde_json::from_str::<Value>(&line) {
                    Ok(v) => v,
                    Err(e) if strict => panic!("printed non-JSON {line:?}: {e}"),
                    Err(_) => continue,
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        JsonClient { name: name.to_string(), child, stdin, rx, seen: Vec::new() }
    }

    fn cmd(&mut self, v: Value) {
        writeln!(self.stdin, "{v}").expect("write to client");
        self.stdin.flush().expect("flush");
    }

    /// Waits for the first event (seen before or arriving) after index `from` matching `pred`; returns its index.
    fn wait_from(&mut self, from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> usize {
        if let Some(i) = self.seen.iter().skip(from).position(&pred) {
            return from + i;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v);
                    if pred(self.seen.last().expect("just pushed")) {
                        return self.seen.len() - 1;
                    }
                }
                Err(_) => panic!("{}: timed out waiting for {what}; saw {:#?}", self.name, self.seen),
            }
        }
    }

    fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let i = self.wait_from(0, what, pred);
        self.seen[i].clone()
    }

    /// Takes whatever arrived without waiting.
    fn drain(&mut self) {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v);
        }
    }

    /// Submits `cmd` and waits for its `pending` then `stored` event; returns the id.
    fn submit_stored(&mut self, cmd: Value) -> String {
        let before = self.seen.len();
        self.cmd(cmd.clone());
        let i = self.wait_from(before, &format!("pending for {cmd}"), |v| v["event"] == "pending");
        let id = self.seen[i]["id"].as_str().expect("id").to_string();
        self.wait_from(i, &format!("stored {id}"), |v| {
            assert_ne!(v["event"], "failed", "{cmd} failed: {v}");
            v["event"] == "stored" && v["id"] == id.as_str()
        });
        id
    }

    fn shown_text(&mut self, text: &str) -> Value {
        let t = text.to_string();
        self.wait(&format!("shown {text:?}"), move |v| v["event"] == "shown" && v["text"] == t.as_str())
    }

    /// Shown ids and how often each was shown.
    fn shown_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for v in self.seen.iter().filter(|v| v["event"] == "shown") {
            *m.entry(v["id"].as_str().expect("id").to_string()).or_insert(0) += 1;
        }
        m
    }

    fn attached(&mut self) -> u16 {
        let v = self.wait("attached", |v| v["event"] == "attached");
        attached_port(&v)
    }
}

fn attached_port(v: &Value) -> u16 {
    let s: std::net::SocketAddr = v["server"].as_str().expect("server").parse().expect("addr");
    s.port()
}

impl Drop for JsonClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` logs in once and goes away: the user exists, offline (a private message to a name
/// nobody holds is rejected).
fn claim(name: &str, ports: &[u16]) {
    let mut c = JsonClient::start(name, ports);
    c.attached();
}

fn no_duplicates(c: &JsonClient) {
    for (id, n) in c.shown_counts() {
        assert_eq!(n, 1, "{} was shown {id} {n} times", c.name);
    }
}

#[test]
fn three_clients_private_room_and_offline_inbox() {
    let c = Cluster::start("chat", 3);
    c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    let mut alice = JsonClient::start("alice", &c.ports);
    let mut bob = JsonClient::start("bob", &c.ports);
    let mut carol = JsonClient::start("carol", &c.ports);
    for cl in [&mut alice, &mut bob, &mut carol] {
        cl.attached();
    }
    alice.submit_stored(json!({"cmd":"join","room":"#r"}));
    bob.submit_stored(json!({"cmd":"join","room":"#r"}));
    carol.submit_stored(json!({"cmd":"join","room":"#r"}));

    // Private.
    let id = alice.submit_stored(json!({"cmd":"send","to":"bob","text":"p1 hi bob"}));
    let v = bob.shown_text("p1 hi bob");
    assert_eq!(
        (v["id"].as_str(), v["from"].as_str(), v["to"].as_str(), &v["room"]),
        (Some(id.as_str()), Some("alice"), Some("bob"), &Value::Null)
    );
    // Long: 4,000 bytes leave in fragments, each sealed like any datagram, and arrive whole.
    let long: String = (0..4_000).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
    let id = alice.submit_stored(json!({"cmd":"send","to":"bob","text":long}));
    assert_eq!(bob.shown_text(&long)["id"].as_str(), Some(id.as_str()));
    // Room: a reply is never shown before what it answers (causal order).
    let q = bob.submit_stored(json!({"cmd":"say","room":"#r","text":"r1 question"}));
    carol.shown_text("r1 question");
    let a = carol.submit_stored(json!({"cmd":"say","room":"#r","text":"r2 answer"}));
    let v = alice.shown_text("r2 answer");
    assert_eq!(v["room"], "#r");
    let iq = alice.wait_from(0, "r1", |v| v["event"] == "shown" && v["id"] == q.as_str());
    let ia = alice.wait_from(0, "r2", |v| v["event"] == "shown" && v["id"] == a.as_str());
    assert!(iq < ia, "alice was shown the answer before the question");
    bob.shown_text("r2 answer");

    // Oversize text: refused before anything is sent.
    let before = alice.seen.len();
    let max = ringchat_core::limits::MAX_TEXT;
    alice.cmd(json!({"cmd":"send","to":"bob","text":"x".repeat(max + 1)}));
    let i = alice.wait_from(before, "an error", |v| v["event"] == "error" || v["event"] == "pending");
    assert_eq!(alice.seen[i]["event"], "error", "{}", alice.seen[i]);
    assert!(alice.seen[i].to_string().contains(&max.to_string()), "the error names the bound: {}", alice.seen[i]);

    // Offline inbox: dave (who exists, but is away) logs in later and gets his messages.
    claim("dave", &c.ports);
    carol.submit_stored(json!({"cmd":"send","to":"dave","text":"inbox one"}));
    alice.submit_stored(json!({"cmd":"send","to":"dave","text":"inbox two"}));
    // status shows the waiting inbox on every server, and who is attached where.
    c.wait_for("dave's inbox of 2 on every server", Duration::from_secs(10), || {
        let reports: Vec<_> = c.ports.iter().map(|&p| status(p)).collect::<Option<Vec<_>>>()?;
        reports.iter().all(|r| r.inboxes.iter().any(|(u, n)| u == "dave" && *n == 2) && r.inbox_total >= 2).then_some(())
    });
    let attached: Vec<String> = c.ports.iter().filter_map(|&p| status(p)).flat_map(|r| r.clients.into_iter().map(|(n, _)| n)).collect();
    for u in ["alice", "bob", "carol"] {
        assert_eq!(attached.iter().filter(|n| *n == u).count(), 1, "{u} is not listed once among {attached:?}");
    }
    let mut dave = JsonClient::start("dave", &c.ports);
    dave.attached();
    dave.shown_text("inbox one");
    dave.shown_text("inbox two");

    // who lists the registered users.
    dave.cmd(json!({"cmd":"who"}));
    let v = dave.wait("who", |v| v["event"] == "who");
    let users: Vec<&str> = v["users"].as_array().expect("users").iter().filter_map(Value::as_str).collect();
    for u in ["alice", "bob", "carol", "dave"] {
        assert!(users.contains(&u), "{u} missing from {v}");
    }

    for cl in [&mut alice, &mut bob, &mut carol, &mut dave] {
        cl.drain();
        no_duplicates(cl);
    }
}

/// Queues `n` private messages from `from` to `to` at once; returns where to look for their events.
fn send_burst(from: &mut JsonClient, to: &str, tag: &str, n: usize) -> usize {
    from.drain();
    let before = from.seen.len();
    for k in 0..n {
        from.cmd(json!({"cmd":"send","to":to,"text":format!("{tag} {k}")}));
    }
    before
}

/// The ids of the next `n` submissions after `at`, each of which must be `stored`.
fn stored_ids(from: &mut JsonClient, at: usize, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut at = at;
    for _ in 0..n {
        let i = from.wait_from(at, "pending", |v| v["event"] == "pending");
        let id = from.seen[i]["id"].as_str().expect("id").to_string();
        from.wait_from(i, &format!("stored {id}"), |v| {
            assert_ne!(v["event"], "failed", "{v}");
            v["event"] == "stored" && v["id"] == id.as_str()
        });
        ids.push(id);
        at = i + 1;
    }
    ids
}

fn burst(from: &mut JsonClient, to: &str, tag: &str, n: usize) -> Vec<String> {
    let at = send_burst(from, to, tag, n);
    stored_ids(from, at, n)
}

fn all_shown_once(to: &mut JsonClient, ids: &[String]) {
    for id in ids {
        to.wait_from(0, &format!("shown {id}"), |v| v["event"] == "shown" && v["id"] == id.as_str());
    }
    to.drain();
    no_duplicates(to);
}

#[test]
fn leader_kill_chat_goes_on() {
    let mut c = Cluster::start("chat-leader", 3);
    let (leader, reports) = c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    let dead = reports.iter().position(|r| r.node == leader).expect("leader is a server");
    let live: Vec<u16> = c.ports.iter().enumerate().filter(|(i, _)| *i != dead).map(|(_, p)| *p).collect();
    let mut alice = JsonClient::start("alice", &c.ports);
    let mut bob = JsonClient::start("bob", &c.ports);
    alice.attached();
    bob.attached();
    let mut ids = burst(&mut alice, "bob", "before", 3);
    all_shown_once(&mut bob, &ids);

    let t0 = Instant::now();
    c.procs[dead].kill();
    // Queued right after the kill: stored once the survivors carry on.
    let at = send_burst(&mut alice, "bob", "during", 5);
    c.wait_for("a new leader agreed by the two survivors", Duration::from_secs(10), || {
        let rs: Vec<_> = live.iter().map(|&p| status(p)).collect::<Option<Vec<_>>>()?;
        let l = rs[0].leader?;
        (l.id != leader.id && rs.iter().all(|r| r.leader == Some(l)) && rs.iter().any(|r| r.is_leader)).then_some(())
    });
    let took = t0.elapsed();
    eprintln!("new leader {} ms after the kill", took.as_millis());
    assert!(took < Duration::from_secs(3), "failover took {took:?}");
    ids.extend(stored_ids(&mut alice, at, 5));
    ids.extend(burst(&mut alice, "bob", "after", 3));
    let back = burst(&mut bob, "alice", "reply", 3);
    all_shown_once(&mut bob, &ids);
    all_shown_once(&mut alice, &back);
}

#[test]
fn attached_server_kill_moves_the_client_and_loses_nothing() {
    let mut c = Cluster::start("chat-attached", 3);
    c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    let mut alice = JsonClient::start("alice", &c.ports);
    let mut bob = JsonClient::start("bob", &c.ports);
    let port = alice.attached();
    bob.attached();
    let mut ids = burst(&mut alice, "bob", "before", 3);
    let dead = c.ports.iter().position(|p| *p == port).expect("attached to a cluster server");
    let before = alice.seen.len();
    c.procs[dead].kill();
    // Queued at once: some wait while alice moves; every one must be stored.
    ids.extend(burst(&mut alice, "bob", "moving", 6));
    let i = alice.wait_from(before, "moving", |v| v["event"] == "moving");
    let j = alice.wait_from(i, "attached again", |v| v["event"] == "attached");
    assert_ne!(attached_port(&alice.seen[j]), port, "moved to the dead server");
    all_shown_once(&mut bob, &ids);
    alice.drain();
    no_duplicates(&alice);
}

/// A client given one server that is not the one the cluster assigns it asks
/// that server for the assignment and attaches to the assigned server.
#[test]
fn client_given_another_server_attaches_to_the_assigned_one() {
    let c = Cluster::start("chat-assign", 3);
    c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    let cluster: Vec<String> = c.ports.iter().map(|p| addr(*p).to_string()).collect();
    // The client id is random: a third of the clients are assigned the server
    // they were given; start clients until one is not.
    for attempt in 0..30 {
        let given = c.ports[attempt % c.ports.len()];
        let mut cl = JsonClient::start(&format!("assign{attempt}"), &[given]);
        let i = cl.wait_from(0, "assigned", |v| v["event"] == "assigned");
        let servers: Vec<String> =
            cl.seen[i]["servers"].as_array().expect("servers").iter().map(|s| s.as_str().expect("address").to_string()).collect();
        assert!(!servers.is_empty() && servers.iter().all(|s| cluster.contains(s)), "assigned {servers:?}, cluster {cluster:?}");
        assert!(!cl.seen[..i].iter().any(|v| v["event"] == "attached"), "attached before the assignment: {:?}", cl.seen);
        if servers[0] == addr(given).to_string() {
            continue;
        }
        let j = cl.wait_from(i, "attached", |v| v["event"] == "attached");
        assert_eq!(cl.seen[j]["server"].as_str(), Some(servers[0].as_str()), "{:?}", cl.seen);
        // And it chats from there.
        cl.submit_stored(json!({"cmd":"send","to":format!("assign{attempt}"),"text":"via the assigned server"}));
        return;
    }
    panic!("30 clients were all assigned the server they were given");
}

#[test]
fn demo_runs_a_cluster_and_a_client_and_quits_cleanly() {
    let mut demo =
        JsonClient::spawn("demo", Command::new(BIN).args(["demo", "--json", "--name", "alice"]).env("RINGCHAT_HOME", home()), false);
    demo.attached();
    demo.submit_stored(json!({"cmd":"send","to":"alice","text":"note to self"}));
    demo.shown_text("note to self");
    demo.cmd(json!({"cmd":"quit"}));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(s)) = demo.child.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not exit after quit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
}

/// A raw socket that learned a live client's id sends in its name, plain and on a channel of
/// its own: it gets a typed refusal, nothing forged is shown, and the live client's messages
/// still flow.
#[test]
fn impersonating_a_live_client_is_refused_and_loses_nothing() {
    use ringchat_core::time::Vc;
    use ringchat_core::wire::{decode, encode, Packet};
    use ringchat_core::wire::{ClientMsg, Op, RefusalReason, ServerMsg};
    use ringchat_core::wire::{MsgId, Target};

    let c = Cluster::start("chat-refused", 3);
    c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    let mut alice = JsonClient::start("alice", &c.ports);
    let mut bob = JsonClient::start("bob", &c.ports);
    let port = alice.attached();
    bob.attached();
    let mut ids = burst(&mut alice, "bob", "before", 2);
    // Alice's client id, from the ids of her messages ("{client:x}-{seq}").
    let client = u64::from_str_radix(ids[0].split('-').next().expect("client part"), 16).expect("hex client id");

    let raw = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    raw.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let forged = Packet::FromClient(ClientMsg::Send {
        id: MsgId { client, seq: 1_000 },
        op: Op::Chat { to: Target::User("bob".into()), text: "forged".into() },
        ctx: Vc::new(),
        retry: false,
        left_ms: 10_000,
    });
    let bytes = encode(&forged).expect("fits");
    // Plain, it is refused unread (and counted); on a channel of its own (anyone may open one:
    // the identity is public), it is refused as not its session.
    raw.send_to(&bytes, addr(port)).expect("send");
    c.wait_for("the plain forgery counted", WAIT, || status(port).filter(|r| r.counters.unsealed >= 1));
    let mut channel = ringchat_net::trust::Link::new(Some(test_ring().identity_public())).expect("channel");
    // Resent until answered (loopback UDP may drop), each answered by at most one refusal.
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        assert!(Instant::now() < deadline, "no answer to the forged send");
        raw.send_to(&channel.seal(&bytes), addr(port)).expect("send");
        let mut buf = [0u8; 2048];
        if let Ok((n, _)) = raw.recv_from(&mut buf) {
            let plain = channel.open(&buf[..n]).expect("the answer is sealed for the forger's channel");
            break decode(&plain).expect("the server's answer decodes");
        }
    };
    assert_eq!(answer, Packet::ToClient(ServerMsg::Refused { client, reason: RefusalReason::NotYourSession }));

    // Alice keeps her session: her messages (and bob's replies) still flow, once each.
    ids.extend(burst(&mut alice, "bob", "after", 3));
    let back = burst(&mut bob, "alice", "reply", 2);
    all_shown_once(&mut bob, &ids);
    all_shown_once(&mut alice, &back);
    assert!(!bob.seen.iter().any(|v| v["text"] == "forged"), "{:?}", bob.seen);
    assert!(!alice.seen.iter().any(|v| v["event"] == "moving" || v["event"] == "error"), "{:?}", alice.seen);
}

#[test]
fn a_server_joining_after_trimming_catches_up_by_snapshot() {
    let mut c = Cluster::start("late", 3);
    c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    let mut alice = JsonClient::start("alice", &c.ports);
    let mut bob = JsonClient::start("bob", &c.ports);
    alice.attached();
    bob.attached();
    alice.submit_stored(json!({"cmd":"send","to":"bob","text":"before the newcomer"}));
    bob.shown_text("before the newcomer");
    claim("dave", &c.ports);
    alice.submit_stored(json!({"cmd":"send","to":"dave","text":"waiting for dave"}));
    // Every server has trimmed what all three hold (the name bindings, acknowledged messages),
    // so a newcomer cannot get them message by message.
    c.wait_for("dave's inbox on every server, and everything else trimmed", Duration::from_secs(10), || {
        let reports: Vec<_> = c.ports.iter().map(|&p| status(p)).collect::<Option<Vec<_>>>()?;
        reports.iter().all(|r| r.inboxes.iter().any(|(u, n)| u == "dave" && *n == 1) && r.store == 1).then_some(())
    });
    let port = free_port();
    let all: Vec<u16> = c.ports.iter().copied().chain([port]).collect();
    c.procs.push(spawn_server("late", port, &all, &[]));
    c.ports.push(port);
    c.wait_for("one leader and one view of 4", Duration::from_secs(15), || agreement(&c.ports));
    c.wait_for("the newcomer holds dave's inbox, from a snapshot", Duration::from_secs(15), || {
        let r = status(port)?;
        (r.snapshots >= 1 && r.inboxes.iter().any(|(u, n)| u == "dave" && *n == 1)).then_some(())
    });
    // Chat goes on, and dave gets his message wherever he is assigned.
    bob.submit_stored(json!({"cmd":"send","to":"alice","text":"after the newcomer"}));
    alice.shown_text("after the newcomer");
    let mut dave = JsonClient::start("dave", &c.ports);
    dave.attached();
    dave.shown_text("waiting for dave");
    for cl in [&mut alice, &mut bob, &mut dave] {
        cl.drain();
        no_duplicates(cl);
    }
}

/// A second client under a taken name, with a key of its own (another person, or the same
/// person without the key file), is refused in words and changes nothing; the owner's next
/// process, with the owner's key, logs in.
#[test]
fn a_name_belongs_to_the_key_that_first_logged_in_with_it() {
    let c = Cluster::start("chat-owned", 3);
    c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    let mut carol = JsonClient::start("carol", &c.ports);
    carol.attached();
    carol.cmd(json!({"cmd":"quit"}));
    let other_key = log_path(&format!("mallory-as-carol-{}.key", std::process::id()));
    let _ = std::fs::remove_file(&other_key);
    let mut cmd = Command::new(BIN);
    cmd.args(["client", "--json", "--name", "carol", "--user-key"]).arg(&other_key).env("RINGCHAT_HOME", home());
    for p in &c.ports {
        cmd.args(["--server", &addr(*p).to_string()]);
    }
    let mut mallory = JsonClient::spawn("mallory", &mut cmd, true);
    let refused = mallory.wait("a refusal", |v| v["event"] == "error");
    assert_eq!(refused["message"], "login refused: name \"carol\" belongs to another key", "{refused}");
    assert!(!mallory.seen.iter().any(|v| v["event"] == "attached"), "{:?}", mallory.seen);
    let mut carol_again = JsonClient::start("carol", &c.ports);
    carol_again.attached();
}
