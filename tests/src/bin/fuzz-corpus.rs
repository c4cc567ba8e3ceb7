//! Writes the fuzz targets' seed corpus (see docs/fuzzing.md): real datagrams of every kind,
//! recorded from simulator runs (server to server plain and sealed, client to server, server
//! to client), the traffic one simulated server and one simulated client received, snapshots
//! and state files of a server that received it, and key files.
//!
//! `cargo run --release -p ringchat-tests --bin fuzz-corpus -- fuzz/corpus` (deterministic:
//! the same files every time). The framing and the key follow `fuzz/src/lib.rs`.

use ringchat_core::chat::transfer::Snapshot;
use ringchat_core::seal::{ChaChaPoly, ClusterKey, KeyRing, Seal, SealMemory};
use ringchat_core::wire::{self, Body, Packet};
use ringchat_core::{Instant, NodeId, Server, ServerConfig, ServerId};
use ringchat_sim::world::{server_addr, World};
use ringchat_sim::{FaultMode, SimConfig};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The fuzz targets' cluster key (`ringchat_fuzz::FUZZ_KEY`).
const FUZZ_KEY: [u8; 32] = [0x5a; 32];
/// Servers in the recorded runs.
const SERVERS: usize = 5;

/// One delivered datagram: virtual µs, sender, receiver (indexes at or above `SERVERS` are clients).
type Record = (u64, usize, usize, Vec<u8>);

fn record(cfg: SimConfig) -> Vec<Record> {
    let log: Rc<RefCell<Vec<Record>>> = Rc::default();
    let tap = log.clone();
    let outcome =
        World::new(cfg).with_tap(Box::new(move |now, from, to, bytes| tap.borrow_mut().push((now, from, to, bytes.to_vec())))).run();
    assert!(outcome.report.ok, "the recorded run failed its checks");
    Rc::try_unwrap(log).map(RefCell::into_inner).unwrap_or_default()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("corpus file");
}

/// A datagram's kind, for file names: `peer-KIND`, `c2s-KIND`, `s2c-KIND`.
fn kind(bytes: &[u8]) -> Option<String> {
    match wire::decode(bytes).ok()? {
        Packet::Peer(env) => Some(format!("peer-{}", env.body.kind())),
        Packet::FromClient(m) => Some(format!("c2s-{}", m.kind())),
        Packet::ToClient(m) => Some(format!("s2c-{}", m.kind())),
    }
}

/// Frames a sequence as the server and client targets read it.
fn frames(records: &[&Record]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut last = records.first().map(|r| r.0).unwrap_or(0);
    for (at, from, _, bytes) in records {
        let from = if *from < SERVERS { *from as u8 } else { 128 + (*from - SERVERS) as u8 % 16 };
        out.push(from);
        out.push(((at - last) / 1000).min(255) as u8);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
        last = *at;
    }
    out
}

/// Replays what server `node` received into a real server of the same id (unsealed, as its
/// plain bytes), returning the server after each of `marks` datagrams.
fn replay(id: ServerId, inbound: &[&Record], mut at_mark: impl FnMut(usize, &Server)) {
    let mut s = Server::new(ServerConfig::default(), id, server_addr(0), None, 1, Instant(0));
    for (i, (at, from, _, bytes)) in inbound.iter().enumerate() {
        let now = Instant(*at);
        while s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(s.poll_timeout().unwrap_or(now));
            while s.poll_transmit().is_some() {}
        }
        let from = if *from < SERVERS { server_addr(*from) } else { ringchat_sim::world::client_addr(*from - SERVERS) };
        s.handle_datagram(now, from, bytes);
        while s.poll_transmit().is_some() {}
        while s.poll_event().is_some() {}
        at_mark(i + 1, &s);
    }
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let chat = |seed, faults| SimConfig {
        seed,
        servers: SERVERS,
        duration_ms: 20_000,
        faults,
        clients: 6,
        rooms: 2,
        unsealed: true,
        ..SimConfig::default()
    };
    let calm = record(chat(1, FaultMode::None));
    let mut stormy = record(chat(7, FaultMode::Swarm));
    stormy.extend(record(chat(11, FaultMode::Swarm)));
    let sealed = record(SimConfig { unsealed: false, ..chat(3, FaultMode::None) });

    // decode: up to three datagrams of every kind, plain, from every run (the largest first).
    let mut by_kind: BTreeMap<String, Vec<&Vec<u8>>> = BTreeMap::new();
    for (_, _, _, bytes) in calm.iter().chain(&stormy) {
        if let Some(k) = kind(bytes) {
            by_kind.entry(k).or_default().push(bytes);
        }
    }
    for (k, list) in &mut by_kind {
        list.sort_by_key(|b| std::cmp::Reverse(b.len()));
        list.dedup();
        let picks = [0, list.len() / 2, list.len() - 1];
        for (i, b) in picks.iter().filter_map(|&i| list.get(i)).enumerate() {
            write(&root.join("decode"), &format!("{k}-{i}"), b);
        }
    }

    // open: every peer kind plain (the target seals it) and sealed with the fuzz key, client
    // datagrams (plain by design), and a few sealed by the simulator (another key).
    let ring = KeyRing::new(ClusterKey::new(FUZZ_KEY));
    let me = NodeId { id: ServerId(u128::MAX - 1), incarnation: 1 };
    for (k, list) in &by_kind {
        let b = list[list.len() / 2];
        write(&root.join("open"), &format!("{k}-plain"), b);
        if let Some(sender) = wire::peer_sender(b) {
            let mut seal = Seal::<ChaChaPoly>::new(sender, ring.clone(), None);
            write(&root.join("open"), &format!("{k}-sealed-any"), &seal.seal(b.to_vec(), None));
            write(&root.join("open"), &format!("{k}-sealed-me"), &seal.seal(b.to_vec(), Some(me)));
        }
    }
    for (i, (_, _, _, b)) in sealed.iter().filter(|r| r.1 < SERVERS && r.2 < SERVERS).step_by(997).take(6).enumerate() {
        write(&root.join("open"), &format!("sim-sealed-{i}"), b);
    }

    // server: what server 0 received in the calm run (it never restarts there), in windows,
    // after its 16-byte id.
    let id = calm.iter().find(|r| r.1 == 0 && r.2 < SERVERS).and_then(|r| wire::peer_sender(&r.3)).map(|n| n.id).expect("server 0 spoke");
    let to_server: Vec<&Record> = calm.iter().filter(|r| r.2 == 0).collect();
    for (name, lo, hi) in [("first-100", 0, 100), ("first-400", 0, 400), ("later-200", 2_000, 2_200), ("late-200", 6_000, 6_200)] {
        let window = &to_server[lo.min(to_server.len())..hi.min(to_server.len())];
        let mut input = id.0.to_be_bytes().to_vec();
        input.extend(frames(window));
        write(&root.join("server"), name, &input);
    }

    // client: what the busiest client received, after its 8-byte id (read off the answers it got).
    let busiest = (SERVERS..SERVERS + 6).max_by_key(|c| calm.iter().filter(|r| r.2 == *c).count()).unwrap_or(SERVERS);
    let to_client: Vec<&Record> = calm.iter().filter(|r| r.2 == busiest).collect();
    let client_id = to_client
        .iter()
        .find_map(|r| match wire::decode(&r.3) {
            Ok(Packet::ToClient(wire::ServerMsg::Assign { client, .. } | wire::ServerMsg::LoginOk { client, .. })) => Some(client),
            _ => None,
        })
        .expect("the client was answered");
    for (name, lo, hi) in [("first-150", 0, 150), ("all", 0, usize::MAX)] {
        let mut input = client_id.to_be_bytes().to_vec();
        input.extend(frames(&to_client[lo.min(to_client.len())..hi.min(to_client.len())]));
        write(&root.join("client"), name, &input);
    }

    // snapshot: snapshots peers sent each other in the stormy runs, whole; and the chat state
    // of a server that received the calm run's traffic.
    // (sender, offer nonce) -> (chunks in the offer, chunks received by index).
    type Chunks = BTreeMap<u32, Vec<u8>>;
    let mut offers: BTreeMap<(usize, u64), (u32, Chunks)> = BTreeMap::new();
    let mut snapshots = 0;
    for (_, from, _, b) in &stormy {
        if let Ok(Packet::Peer(env)) = wire::decode(b) {
            if let Body::SnapshotChunk { nonce, index, total, bytes } = env.body {
                let (t, chunks) = offers.entry((*from, nonce)).or_insert((total, BTreeMap::new()));
                chunks.insert(index, bytes);
                if chunks.len() as u32 == *t && snapshots < 3 {
                    let whole: Vec<u8> = chunks.values().flatten().copied().collect();
                    let snap: Snapshot = postcard::from_bytes(&whole).expect("a snapshot a server sent decodes");
                    assert!(snap.is_well_formed(), "a snapshot a server sent is refused by the checks on install");
                    write(&root.join("snapshot"), &format!("sim-{snapshots}"), &whole);
                    snapshots += 1;
                    chunks.clear();
                }
            }
        }
    }
    // state_file: the server's state file at a few points (and its chat state as a snapshot).
    replay(id, &to_server, |i, s| {
        if [50, 400, 3_000, to_server.len()].contains(&i) {
            let d = s.durable();
            let file = ringchat_net::state::file_bytes(d).expect("encodes");
            assert_eq!(ringchat_net::state::decode(&file).map(|l| l.durable).as_ref(), Ok(d), "a server's own state file is refused");
            write(&root.join("state_file"), &format!("after-{i}"), &file);
            let snap = Snapshot {
                delivered: d.chat.causal.delivered.clone(),
                retired: d.chat.causal.retired.clone(),
                store: d.chat.causal.stored().cloned().collect(),
                state: d.chat.state.clone(),
            };
            assert!(snap.is_well_formed(), "a server's own state is refused by the checks on install");
            write(&root.join("snapshot"), &format!("state-after-{i}"), &postcard::to_stdvec(&snap).expect("encodes"));
        }
    });

    // key_file: key rings, key ids, seal memories.
    let mut two = KeyRing::new(ClusterKey::new([1; 32]));
    two.install(ClusterKey::new([2; 32])).expect("installs");
    two.use_key(ClusterKey::new([2; 32]).id()).expect("uses");
    write(&root.join("key_file"), "ring-one", ring.render().as_bytes());
    write(&root.join("key_file"), "ring-two", two.render().as_bytes());
    write(&root.join("key_file"), "key-id", ClusterKey::new([1; 32]).id().to_string().as_bytes());
    let mut receiver = Seal::<ChaChaPoly>::new(me, ring.clone(), None);
    for (_, _, _, b) in calm.iter().filter(|r| r.2 < SERVERS).take(200) {
        if let Some(sender) = wire::peer_sender(b).filter(|s| s.id != me.id) {
            let _ = receiver.open(server_addr(1), &Seal::<ChaChaPoly>::new(sender, ring.clone(), None).seal(b.to_vec(), None));
        }
    }
    let memory: SealMemory = receiver.memory();
    write(&root.join("key_file"), "seal-memory", &postcard::to_stdvec(&memory).expect("encodes"));

    // seal_sequence: a few operation strings (its own format; see the target).
    write(&root.join("seal_sequence"), "open-replay-restart", &[0, 1, 1, 0, 5, 0, 0, 0, 1, 2, 5, 0, 0, 9, 2, 0, 3, 2, 0]);
    write(&root.join("seal_sequence"), "rotate", &[4, 0, 0, 3, 2, 0, 7, 0, 1, 4, 1, 1, 0, 4, 1, 0, 4, 2, 0, 0, 3, 1, 0, 8, 0, 1]);
    let files: usize =
        std::fs::read_dir(&root).expect("root").flatten().map(|d| std::fs::read_dir(d.path()).map(|r| r.count()).unwrap_or(0)).sum();
    println!("fuzz corpus: {files} files under {}", root.display());
}
