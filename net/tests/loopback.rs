//! Real `ringchat server` processes on 127.0.0.1 with `--discovery off` and
//! `--join` lists: election, failover after kill -9, hostile datagrams.

mod common;

use common::*;
use ringchat_core::wire::ServerMsg;
use ringchat_core::wire::{self, Body, Envelope, Packet, VERSION};
use ringchat_core::{ClusterId, NodeId, ServerId, ViewStamp};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

#[test]
fn three_servers_elect_one_leader() {
    let c = Cluster::start("elect3", 3);
    let (leader, reports) = c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    assert!(reports.iter().all(|r| r.members.len() == 3 && r.phase == "Member"));
    // A fault-free cold start on the ascending ring elects the highest id.
    let highest = reports.iter().map(|r| r.node).max().expect("three reports");
    assert_eq!(leader, highest);

    // The CLI's JSON carries the same facts.
    let (code, out, err) = run_cli(&["status", "--key-file", &key_arg(), "--server", &addr(c.ports[0]).to_string(), "--json"]);
    assert_eq!(code, Some(0), "status --json failed: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["leader"].as_str(), Some(leader.id.full().as_str()));
    assert!(v["epoch"].as_u64().is_some_and(|e| e >= 1));
    assert!(v["view_id"].as_u64().is_some());
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3));
    for m in v["members"].as_array().into_iter().flatten() {
        assert!(m["id"].is_string() && m["addr"].is_string() && m["alive"] == serde_json::Value::Bool(true), "member {m}");
    }
    assert_eq!(v["clients"].as_array().map(Vec::len), Some(0));
    assert!(v["cluster"].is_string() && v["phase"] == "Member" && v["is_leader"].is_boolean());
    // `rejected` counts bad input, and a healthy cold start has none; `ignored` counts what
    // a cold start refuses in its normal course (e.g. datagrams from a peer still founding).
    let counters = &v["counters"];
    let total = |keys: &[&str]| -> u64 { keys.iter().map(|k| counters[*k].as_u64().expect("counter")).sum() };
    assert_eq!(counters["rejected"].as_u64(), Some(total(&["malformed", "oversize", "wrong_version", "invalid"])), "{counters}");
    assert_eq!(counters["rejected"].as_u64(), Some(0), "a healthy cluster rejected nothing: {counters}");
    assert_eq!(counters["ignored"].as_u64(), Some(total(&["foreign_cluster", "non_member", "stale_epoch"])), "{counters}");

    // The human form names the leader too.
    let (code, out, _) = run_cli(&["status", "--key-file", &key_arg(), "--server", &addr(c.ports[0]).to_string()]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&format!("leader {leader}")), "{out}");
}

#[test]
fn leader_kill_elects_new_leader() {
    let mut c = Cluster::start("failover", 3);
    let (old, reports) = c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    let dead = reports.iter().position(|r| r.node == old).expect("the leader is one of the servers");
    let live: Vec<u16> = c.ports.iter().enumerate().filter(|(i, _)| *i != dead).map(|(_, p)| *p).collect();

    let t0 = Instant::now();
    c.procs[dead].kill();
    let new = c.wait_for("a new leader agreed by the two survivors", Duration::from_secs(10), || {
        let rs: Vec<_> = live.iter().map(|&p| status(p)).collect::<Option<Vec<_>>>()?;
        let l = rs[0].leader?;
        let ok = l.id != old.id && rs.iter().all(|r| r.leader == Some(l)) && rs.iter().filter(|r| r.is_leader && r.node == l).count() == 1;
        ok.then_some(l)
    });
    let took = t0.elapsed();
    eprintln!("failover took {} ms (new leader {new})", took.as_millis());
    assert!(took < Duration::from_secs(3), "failover took {took:?}");

    // The leader removes the dead server from the view (after remove_ms).
    c.wait_for("a view of the 2 survivors", Duration::from_secs(15), || {
        let rs: Vec<_> = live.iter().map(|&p| status(p)).collect::<Option<Vec<_>>>()?;
        let v = rs[0].view_id?;
        rs.iter()
            .all(|r| r.view_id == Some(v) && r.members.len() == 2 && r.members.iter().all(|m| m.alive && m.member.node.id != old.id))
            .then_some(())
    });
}

fn heartbeat(cluster: ClusterId, from: NodeId, epoch: u64) -> Packet {
    Packet::Peer(Envelope {
        cluster,
        from,
        epoch,
        body: Body::Heartbeat {
            leader: Some(from),
            committed: ViewStamp::default(),
            latest: ViewStamp::default(),
            digest: Default::default(),
        },
    })
}

#[test]
fn hostile_datagrams_are_counted_and_ignored() {
    // Plain datagrams test the decoder and the core's checks (sealed servers refuse them all
    // as `unsealed` before decoding; see tests/seal.rs).
    let c = Cluster::start_with("hostile", 3, |_| vec!["--insecure-no-key".into()]);
    let (leader, before) = c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64);
    for (r, &port) in before.iter().zip(&c.ports) {
        let to = addr(port);
        let other = r.members.iter().map(|m| m.member.node).find(|n| *n != r.node).expect("another member");
        let send = |bytes: &[u8]| {
            let _ = sock.send_to(bytes, to);
        };
        // Random bytes, some starting with the right version byte.
        for i in 0..20 {
            let len = 1 + (rng.next() % 300) as usize;
            let mut b = rng.bytes(len);
            if i % 2 == 0 {
                b[0] = VERSION;
            }
            send(&b);
        }
        // Every truncation of a valid datagram, and an empty one.
        let valid = wire::encode(&heartbeat(r.cluster, other, r.epoch)).expect("fits");
        for len in 0..valid.len() {
            send(&valid[..len]);
        }
        // Oversize.
        let mut big = vec![VERSION; 2000];
        big[1..].copy_from_slice(&rng.bytes(1999));
        send(&big);
        // Wrong version byte on a valid datagram.
        let mut wrong = valid.clone();
        wrong[0] = VERSION.wrapping_add(1);
        send(&wrong);
        // A status reply sent to a server.
        send(&wire::encode(&Packet::ToClient(ServerMsg::Status(r.clone()))).expect("fits"));
        // Replayed old datagrams: a member's heartbeat of a stale epoch,
        // one of another cluster, one from a server not in the view.
        send(&wire::encode(&heartbeat(r.cluster, other, 0)).expect("fits"));
        send(&wire::encode(&heartbeat(ClusterId(rng.next() as u128 | 1), other, r.epoch)).expect("fits"));
        let stranger = NodeId { id: ServerId(rng.next() as u128), incarnation: 1 };
        send(&wire::encode(&heartbeat(r.cluster, stranger, r.epoch)).expect("fits"));
    }

    let after = c.wait_for("every rejection counter to go up", Duration::from_secs(10), || {
        let rs: Vec<_> = c.ports.iter().map(|&p| status(p)).collect::<Option<Vec<_>>>()?;
        let up = before.iter().zip(&rs).all(|(b, a)| {
            let (b, a) = (&b.counters, &a.counters);
            a.malformed > b.malformed
                && a.oversize > b.oversize
                && a.wrong_version > b.wrong_version
                && a.invalid > b.invalid
                && a.stale_epoch > b.stale_epoch
                && a.foreign_cluster > b.foreign_cluster
                && a.non_member > b.non_member
                && a.rejected() >= b.rejected() + 40
        });
        up.then_some(rs)
    });
    // Still one cluster with the same leader, epoch and view.
    let (leader_after, again) = c.wait_for("agreement after the attack", Duration::from_secs(5), || agreement(&c.ports));
    assert_eq!(leader_after, leader);
    for ((b, a), r) in before.iter().zip(&after).zip(&again) {
        assert_eq!(a.leader, Some(leader));
        assert_eq!((a.epoch, r.epoch), (b.epoch, b.epoch), "the epoch moved");
        assert_eq!(r.view_id, b.view_id, "the view changed");
        assert_eq!(a.counters.elections_started, b.counters.elections_started, "an election started");
    }
}

#[test]
fn restart_with_state_keeps_id_and_comes_back_as_next_incarnation() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ringchat-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("state dir");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let state = |i: usize| dir.join(format!("s{i}.json")).to_string_lossy().into_owned();
    let mut c = Cluster { name: "state".into(), procs: Vec::new(), ports: ports.clone() };
    for (i, &p) in ports.iter().enumerate() {
        c.procs.push(spawn_server("state", p, &ports, &["--state", &state(i)]));
    }
    let (_, reports) = c.wait_for("one leader and one view of 3", Duration::from_secs(15), || agreement(&c.ports));
    // Restart a follower: same server id, next incarnation, back in the view.
    let i = reports.iter().position(|r| !r.is_leader).expect("a follower");
    let old = reports[i].node;
    c.procs[i].kill();
    c.procs[i] = spawn_server("state", ports[i], &ports, &["--state", &state(i)]);
    let (_, rs) = c.wait_for("the restarted server back in one view of 3", Duration::from_secs(20), || {
        agreement(&c.ports).filter(|(_, rs)| rs[i].node.incarnation > old.incarnation)
    });
    assert_eq!(rs[i].node.id, old.id);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_leaves_cleanly_and_exits_0() {
    let port = free_port();
    let mut p = spawn_server("sigterm", port, &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(port).is_none_or(|r| !r.is_leader) {
        assert!(Instant::now() < deadline, "a lone server never led");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sigterm(&p.child), "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = p.child.try_wait().expect("try_wait") {
            break s.code();
        }
        assert!(Instant::now() < deadline, "server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(code, Some(0));
    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
    assert!(log.contains("left cluster"), "{log}");
}
