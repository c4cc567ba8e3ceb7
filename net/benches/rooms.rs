//! Chat at the size of a LAN (issue 17): what a room message costs to store, a login with a
//! long backlog, and fan-out to a big room.
//!
//! `cargo bench -p ringchat-net --bench rooms -- [--messages N] [--waiting N] [--members N] [--rounds N] [--users N] [--online N]`
//!
//! 1. Storage, in process: N room messages (default 100,000) to rooms of 10 and of 100
//!    members who never read them; the encoded chat state per message, and the ratio of the
//!    two (1.0: storage grows with messages, not with messages × members).
//! 2. A login with a backlog, on 3 loopback servers: a member away while `--waiting`
//!    messages (default 10,000) are sent to its room logs in again; the time until the last
//!    is shown and the bytes it received, against the time the sender took to store them.
//! 3. Fan-out, on 3 loopback servers: a room of `--members` (default 1,000) clients driven
//!    from this thread; from send to shown at the last member, p50 and p99 over `--rounds`
//!    messages (default 20), against a raw UDP round trip measured in the same run.
//! 4. Users, on the same servers: `--users` (default 10,000) register by logging in,
//!    `--online` (default 1,000) at a time, and each sends a private message to a registered
//!    user; login times per batch, and the servers' resident memory after.

mod common;

use common::*;
use ringchat_core::chat::state::{ChatState, Plants};
use ringchat_core::id::{NodeId, ServerId};
use ringchat_core::wire::chat::{Item, MsgId, Target};
use ringchat_core::wire::client::Op;
use ringchat_net::client::{SyncClient, SyncEvent};
use std::time::{Duration, Instant};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Encoded chat state after `messages` room messages spread over 10 rooms of `members`.
fn stored_bytes(messages: usize, members: usize) -> (usize, Duration) {
    let origin = NodeId { id: ServerId(1), incarnation: 1 };
    let mut s = ChatState::default();
    let mut seq = 0;
    let mut key = || {
        seq += 1;
        (origin, seq)
    };
    for r in 0..10 {
        for m in 0..members {
            let (user, room) = (format!("u{r}-{m}"), format!("#r{r}"));
            let item = Item::Join { id: MsgId { client: 1 + (r * members + m) as u64, seq: 1 }, user, room, fence: 1, lamport: 1 };
            s.apply(key(), &item, Plants::default());
        }
    }
    let start = Instant::now();
    for n in 0..messages {
        let r = n % 10;
        let (from, room) = (format!("u{r}-0"), Some(format!("#r{r}")));
        let id = MsgId { client: 1_000_000 + (n / 16) as u64, seq: (n % 16) as u64 + 1 };
        let item = Item::Chat { id, from, room, to: Vec::new(), cut: s.cut(), text: "a short line of chat".into() };
        s.apply(key(), &item, Plants::default());
    }
    let took = start.elapsed();
    assert_eq!(s.inbox_total(), messages * (members - 1), "every member but the sender owes every message");
    (postcard::to_allocvec(&s).expect("encodes").len(), took)
}

fn storage() {
    let n = arg("--messages", 100_000);
    let (small, t_small) = stored_bytes(n, 10);
    let (big, t_big) = stored_bytes(n, 100);
    println!("storage: {n} room messages nobody read (the text lives in the store, not counted here)");
    println!("  rooms of  10: chat state {:>10} bytes ({:.1} B/message), applied in {:?}", small, small as f64 / n as f64, t_small);
    println!("  rooms of 100: chat state {:>10} bytes ({:.1} B/message), applied in {:?}", big, big as f64 / n as f64, t_big);
    println!("  ratio 100/10 members: {:.2} (a copy per member would be {:.1})", big as f64 / small as f64, 99.0 / 9.0);
}

/// Steps `clients` until `done`; panics after `limit`.
fn run(clients: &mut [SyncClient], limit: Duration, what: &str, mut on: impl FnMut(usize, SyncEvent) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let mut done = false;
        for (i, c) in clients.iter_mut().enumerate() {
            for e in c.step(Duration::ZERO) {
                done |= on(i, e);
            }
        }
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::yield_now();
    }
}

fn online(clients: &mut [SyncClient]) {
    let mut on = vec![false; clients.len()];
    run(clients, Duration::from_secs(120), "logins", |i, e| {
        on[i] |= matches!(e, SyncEvent::Attached(_));
        on.iter().all(|o| *o)
    });
}

fn submit(clients: &mut [SyncClient], i: usize, op: Op) {
    let id = clients[i].submit(op).expect("submit");
    run(clients, Duration::from_secs(30), "stored", |_, e| {
        assert_ne!(e, SyncEvent::Failed(id), "failed");
        e == SyncEvent::Stored(id)
    });
}

fn backlog(c: &Cluster) {
    let n = arg("--waiting", 10_000);
    let id = c.identity();
    let mut away = vec![SyncClient::new("away", vec![c.addrs[1]], 10, id).expect("client")];
    online(&mut away);
    submit(&mut away, 0, Op::Join("#backlog".into()));
    let mut sender = vec![SyncClient::new("sender", vec![c.addrs[0]], 11, id).expect("client")];
    online(&mut sender);
    submit(&mut sender, 0, Op::Join("#backlog".into()));
    drop(away);
    let start = Instant::now();
    for k in 0..n {
        submit(&mut sender, 0, Op::Chat { to: Target::Room("#backlog".into()), text: format!("backlog {k}") });
    }
    let sending = start.elapsed();
    let start = Instant::now();
    let mut back = vec![SyncClient::new("away", vec![c.addrs[1]], 12, id).expect("client")];
    let mut shown = 0;
    run(&mut back, Duration::from_secs(300), "backlog shown", |_, e| {
        shown += usize::from(matches!(e, SyncEvent::Shown { .. }));
        shown >= n
    });
    let login = start.elapsed();
    let bytes = back[0].received_bytes();
    println!("backlog: {n} messages waiting for a member away");
    println!("  sent and stored one at a time in {:.2} s ({:.0} µs each)", sending.as_secs_f64(), us(sending) / n as f64);
    println!(
        "  login to last shown {:.2} s ({:.0} µs each; ratio to storing them {:.2}); {} bytes received ({:.0} B/message)",
        login.as_secs_f64(),
        us(login) / n as f64,
        login.as_secs_f64() / sending.as_secs_f64(),
        bytes,
        bytes as f64 / n as f64
    );
}

/// A raw UDP round trip on loopback (the baseline), median of 1,000.
fn udp_round_trip() -> Duration {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let (to_b, to_a) = (b.local_addr().expect("addr"), a.local_addr().expect("addr"));
    let mut buf = [0u8; 1500];
    let mut t: Vec<Duration> = (0..1000)
        .map(|_| {
            let s = Instant::now();
            a.send_to(&[0u8; 200], to_b).expect("send");
            b.recv_from(&mut buf).expect("recv");
            b.send_to(&[0u8; 200], to_a).expect("send");
            a.recv_from(&mut buf).expect("recv");
            s.elapsed()
        })
        .collect();
    t.sort();
    percentile(&t, 0.5)
}

fn fan_out(c: &Cluster) {
    let (members, rounds) = (arg("--members", 1_000), arg("--rounds", 20));
    let id = c.identity();
    let mut clients: Vec<SyncClient> =
        (0..members).map(|i| SyncClient::new(&format!("f{i:04}"), vec![c.addrs[i % 3]], 100_000 + i as u64, id).expect("client")).collect();
    online(&mut clients);
    let joins: Vec<_> = clients.iter_mut().map(|c| c.submit(Op::Join("#fan".into())).expect("join")).collect();
    let mut joined = vec![false; members];
    run(&mut clients, Duration::from_secs(120), "joins", |i, e| {
        joined[i] |= e == SyncEvent::Stored(joins[i]);
        joined.iter().all(|j| *j)
    });
    let mut times = Vec::new();
    for k in 0..rounds {
        let text = format!("fan {k}");
        let start = Instant::now();
        clients[0].submit(Op::Chat { to: Target::Room("#fan".into()), text: text.clone() }).expect("send");
        let mut got = vec![false; members];
        got[0] = true;
        run(&mut clients, Duration::from_secs(60), "fan-out", |i, e| {
            if let SyncEvent::Shown { text: t, .. } = e {
                got[i] |= t == text;
            }
            got.iter().all(|g| *g)
        });
        times.push(start.elapsed());
    }
    times.sort();
    let rtt = udp_round_trip();
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!("fan-out: a message to a room of {members} on 3 servers, send to shown at the last member ({rounds} messages)");
    println!(
        "  p50 {:.1} ms, p99 {:.1} ms; raw UDP round trip {:.1} µs (p50 is {:.0} round trips)",
        us(p50) / 1e3,
        us(p99) / 1e3,
        us(rtt),
        us(p50) / us(rtt)
    );
}

/// Registered users and clients online at once: `--users` (10,000) users log in, `--online`
/// (1,000) at a time on 3 servers; each then sends a private message to a user of the first
/// batch, which the server refuses as `no such user` unless that name is registered. Every
/// name stays bound after its client leaves.
fn users(c: &Cluster) {
    let (total, at_once) = (arg("--users", 10_000), arg("--online", 1_000));
    let id = c.identity();
    let mut logins = Vec::new();
    let mut sends = Vec::new();
    let start = Instant::now();
    let mut first = 0;
    while first < total {
        let n = at_once.min(total - first);
        let t = Instant::now();
        let mut clients: Vec<SyncClient> = (0..n)
            .map(|i| {
                let k = first + i;
                SyncClient::new(&format!("user{k:05}"), vec![c.addrs[k % 3]], 1_000_000 + k as u64, id).expect("client")
            })
            .collect();
        online(&mut clients);
        logins.push(t.elapsed());
        let t = Instant::now();
        let ids: Vec<MsgId> = (0..n)
            .map(|i| clients[i].send(&format!("user{:05}", (i + 1) % at_once.min(total)), format!("hello {first}")).expect("send"))
            .collect();
        let mut stored = vec![false; n];
        run(&mut clients, Duration::from_secs(120), "messages to registered users", |i, e| {
            assert_ne!(e, SyncEvent::Failed(ids[i]), "a message to a registered user failed");
            stored[i] |= e == SyncEvent::Stored(ids[i]);
            stored.iter().all(|s| *s)
        });
        sends.push(t.elapsed());
        first += n;
    }
    let all = start.elapsed();
    logins.sort();
    sends.sort();
    println!("users: {total} registered, {at_once} online at once on 3 servers ({} batches)", logins.len());
    println!(
        "  {at_once} logging in together: median {:.2} s, slowest {:.2} s; one private message each, all stored: median {:.2} s; {:.1} s in all",
        logins[logins.len() / 2].as_secs_f64(),
        logins[logins.len() - 1].as_secs_f64(),
        sends[sends.len() / 2].as_secs_f64(),
        all.as_secs_f64()
    );
    let rss: Vec<String> = c.procs.iter().map(|p| resident_mb(p.id()).map_or("?".into(), |m| format!("{m:.0} MB"))).collect();
    println!("  servers' resident memory after: {}", rss.join(", "));
}

/// A process's resident memory in MB (Linux), if it can be read.
fn resident_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    storage();
    let c = Cluster::start(3, false);
    backlog(&c);
    fan_out(&c);
    users(&c);
}
