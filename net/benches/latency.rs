//! Chat latency on loopback: alice (attached to server A) → A → B → bob
//! (attached to server B), submit to shown, p50/p99, as a ratio to a raw UDP
//! round trip measured in the same run.
//!
//! Chat messages are paced like interactive chat: one at a time, each after
//! a quiet gap. Waking an idle process costs more than waking a busy one, so the
//! baseline is measured the same way, one raw round trip after each gap,
//! interleaved with the chat samples (the two see the same machine load), its gap
//! starting once the servers' work for the last message is over. A
//! back-to-back raw round trip is printed too, as the optimistic reference.
//! So is a floor: the same path (client → A → B → client) through two bare relay
//! processes, which pays the hops and wakeups and none of the protocol's work, and
//! a round trip between two processes (the echo above is a thread of the bench).
//!
//! Sealing's cost: the chat samples are taken on an unsealed cluster (`--insecure-no-key`), then
//! on a sealed one (ChaCha20-Poly1305), in the same run; the sealed figures are the main ones and
//! the p50 difference is printed (target: at most 20 us added).
//!
//! `cargo bench -p ringchat-net --bench latency -- [--samples N] [--gap-us N]`

mod common;

use common::*;
use ringchat_net::client::{SyncClient, SyncEvent};
use std::net::UdpSocket;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A UDP echo thread and the socket that pings it.
struct RawEcho {
    a: UdpSocket,
    baddr: std::net::SocketAddr,
    echo: Option<std::thread::JoinHandle<()>>,
}

impl RawEcho {
    fn start() -> RawEcho {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let baddr = b.local_addr().expect("addr");
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = b.recv_from(&mut buf) {
                if n == 1 {
                    break;
                }
                let _ = b.send_to(&buf[..n], from);
            }
        });
        a.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
        RawEcho { a, baddr, echo: Some(echo) }
    }

    /// One round trip of a 100-byte datagram (None if it was lost).
    fn round_trip(&self) -> Option<Duration> {
        self.through(self.baddr)
    }

    /// How long a 100-byte datagram sent to `to` takes to come back (None if it was lost).
    fn through(&self, to: std::net::SocketAddr) -> Option<Duration> {
        let mut buf = [0u8; 2048];
        let t = Instant::now();
        self.a.send_to(&[7u8; 100], to).expect("send");
        self.a.recv_from(&mut buf).ok().map(|_| t.elapsed())
    }
}

impl Drop for RawEcho {
    fn drop(&mut self) {
        let _ = self.a.send_to(&[0], self.baddr);
        if let Some(e) = self.echo.take() {
            let _ = e.join();
        }
    }
}

/// Relay processes (this binary run with `--relay NEXT`): a datagram sent to the first
/// reaches `back` after crossing all of them. With two, the floor of the chat path: as many
/// process hops and wakeups (client, A, B, client), and no protocol work at all. With one, a
/// raw round trip between two processes, as every hop of the chat path is.
struct RelayChain {
    first: std::net::SocketAddr,
    procs: Vec<std::process::Child>,
}

impl RelayChain {
    fn start(back: std::net::SocketAddr, relays: usize) -> RelayChain {
        let mut procs = Vec::new();
        let mut next = back;
        for _ in 0..relays {
            let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
                .args(["--relay", &next.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn a relay");
            let mut line = String::new();
            let out = child.stdout.take().expect("piped stdout");
            std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).expect("relay address");
            next = line.trim().parse().expect("relay address");
            procs.push(child);
        }
        RelayChain { first: next, procs }
    }
}

impl Drop for RelayChain {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs as a relay: forwards every datagram to `next` (blocking socket calls, nothing else).
fn relay(next: &str) {
    let next: std::net::SocketAddr = next.parse().expect("relay target");
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    println!("{}", s.local_addr().expect("addr"));
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = s.recv_from(&mut buf) {
        let _ = s.send_to(&buf[..n], next);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--relay") {
        relay(args.get(i + 1).map_or("", String::as_str));
        return;
    }
    let mut samples = 2000usize;
    let mut gap = Duration::from_millis(1);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--samples" => samples = args.next().and_then(|v| v.parse().ok()).unwrap_or(samples),
            "--gap-us" => gap = Duration::from_micros(args.next().and_then(|v| v.parse().ok()).unwrap_or(1000)),
            "--bench" => {}
            _ => {}
        }
    }
    let raw_echo = RawEcho::start();
    let (plain_lat, _, plain_failed) = chat_samples(samples, gap, false, &raw_echo);
    let (mut lat, mut paced, failed) = chat_samples(samples, gap, true, &raw_echo);
    report(samples, gap, raw_echo, &mut lat, &mut paced, failed);
    let mut plain_lat = plain_lat;
    plain_lat.sort();
    let (s50, u50) = (percentile(&lat, 0.5), percentile(&plain_lat, 0.5));
    println!(
        "sealing: chat p50 sealed {:.1} us, unsealed {:.1} us, added {:+.1} us (target at most 20 us); p99 sealed {:.1} us, unsealed {:.1} us ({} unsealed failed)",
        us(s50),
        us(u50),
        us(s50) - us(u50),
        us(percentile(&lat, 0.99)),
        us(percentile(&plain_lat, 0.99)),
        plain_failed
    );
}

/// Chat samples on a fresh 3-server cluster (sealed or not), each after a paced raw round trip:
/// (chat latencies, paced raw round trips, failed sends).
fn chat_samples(samples: usize, gap: Duration, sealed: bool, raw_echo: &RawEcho) -> (Vec<Duration>, Vec<Duration>, usize) {
    let cluster = Cluster::start_sealed(3, false, sealed);
    let (sa, sb) = (cluster.addrs[0], cluster.addrs[1]);
    let identity = cluster.identity();
    // bob: attached to B only, reports the time his client took each message (before
    // its acknowledgement leaves).
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let bob = std::thread::spawn(move || {
        let mut bob = SyncClient::new("bob", vec![sb], 2, identity).expect("bob");
        let mut ready = false;
        while stop_rx.try_recv().is_err() {
            for e in bob.step(Duration::from_millis(5)) {
                match e {
                    SyncEvent::Attached(_) if !ready => {
                        ready = true;
                        let _ = ready_tx.send(());
                    }
                    SyncEvent::Shown { text, at, .. } => {
                        let _ = tx.send((text, at));
                    }
                    _ => {}
                }
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).expect("bob attached");
    let mut alice = SyncClient::new("alice", vec![sa], 1, identity).expect("alice");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !alice.is_online() {
        assert!(Instant::now() < deadline, "alice did not attach");
        alice.step(Duration::from_millis(5));
    }
    let warmup = 100;
    let mut lat = Vec::new();
    let mut paced = Vec::new();
    let mut failed = 0;
    // After a chat message, server A still sends the copies a majority did not need, within
    // COPY_DEFER_US: the quiet gap before a raw sample starts after that, as it does for a
    // chat sample (nothing runs in the gap after a raw sample).
    let settle = Duration::from_micros(ringchat_core::chat::server::COPY_DEFER_US);
    for k in 0..samples + warmup {
        // Pacing, not synchronisation: each sample starts after the same quiet gap.
        std::thread::sleep(settle + gap);
        if let Some(d) = raw_echo.round_trip() {
            if k >= warmup {
                paced.push(d);
            }
        }
        std::thread::sleep(gap);
        let text = format!("m{k}");
        let t0 = Instant::now();
        alice.send("bob", text.clone()).expect("send");
        // Wait until bob is shown it and alice has it stored (one outstanding message).
        let mut shown = None;
        let deadline = Instant::now() + Duration::from_secs(12);
        while (shown.is_none() || alice.is_busy()) && Instant::now() < deadline {
            if alice.is_busy() {
                for e in alice.step(Duration::from_micros(200)) {
                    if matches!(e, SyncEvent::Failed(_)) {
                        failed += 1;
                    }
                }
            } else if let Ok((t, at)) = rx.recv_timeout(Duration::from_millis(5)) {
                // Stored: only bob's report is left to wait for.
                if t == text {
                    shown = Some(at);
                }
            }
            while let Ok((t, at)) = rx.try_recv() {
                if t == text {
                    shown = Some(at);
                }
            }
        }
        if let Some(at) = shown {
            if k >= warmup {
                lat.push(at - t0);
            }
        }
    }
    let _ = stop_tx.send(());
    let _ = bob.join();
    drop(cluster);
    (lat, paced, failed)
}

/// Prints the figures of the (sealed) chat samples against the raw baselines and the floor.
fn report(samples: usize, gap: Duration, raw_echo: RawEcho, lat: &mut Vec<Duration>, paced: &mut Vec<Duration>, failed: usize) {
    let mut hot: Vec<Duration> = (0..samples).filter_map(|_| raw_echo.round_trip()).collect();
    // The floor, after the chat samples (measured among them, its extra processes and longer
    // cycle slowed the chat samples down): paced the same way.
    let back = raw_echo.a.local_addr().expect("addr");
    let (chain, echo) = (RelayChain::start(back, 2), RelayChain::start(back, 1));
    let (mut floor, mut paced_procs, mut paced_again) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..samples {
        std::thread::sleep(gap);
        floor.extend(raw_echo.through(chain.first));
        std::thread::sleep(gap);
        paced_procs.extend(raw_echo.through(echo.first));
        std::thread::sleep(gap);
        paced_again.extend(raw_echo.round_trip());
    }
    drop((chain, echo));
    drop(raw_echo);
    lat.sort();
    paced.sort();
    for v in [&mut hot, &mut floor, &mut paced_procs, &mut paced_again] {
        v.sort();
    }
    let (p50, p99) = (percentile(lat, 0.5), percentile(lat, 0.99));
    let (r50, r99) = (percentile(paced, 0.5), percentile(paced, 0.99));
    let (h50, h99) = (percentile(&hot, 0.5), percentile(&hot, 0.99));
    let gap_us = gap.as_micros();
    println!(
        "raw UDP round trip on loopback, paced ({gap_us} us gap): p50 {:.1} us, p99 {:.1} us ({} samples)",
        us(r50),
        us(r99),
        paced.len()
    );
    let f50 = percentile(&floor, 0.5);
    println!(
        "floor: the same path through two bare relay processes, paced: p50 {:.1} us ({:.2}x the paced raw round trip); chat adds {:.1} us over it",
        us(f50),
        us(f50) / us(r50),
        us(p50) - us(f50)
    );
    let e50 = percentile(&paced_procs, 0.5);
    println!(
        "raw UDP round trip between two processes, paced: p50 {:.1} us, {:.2}x the thread round trip measured alongside it ({:.1} us); chat is {:.2}x it (for information: the target is judged against the first baseline)",
        us(e50),
        us(e50) / us(percentile(&paced_again, 0.5)),
        us(percentile(&paced_again, 0.5)),
        us(p50) / us(e50)
    );
    println!("raw UDP round trip on loopback, back to back: p50 {:.1} us, p99 {:.1} us ({} samples)", us(h50), us(h99), hot.len());
    println!(
        "chat alice -> server A -> server B -> bob, sealed (submit to shown, {gap_us} us gap): p50 {:.1} us, p99 {:.1} us ({} samples, {} failed)",
        us(p50),
        us(p99),
        lat.len(),
        failed
    );
    println!("ratio to the paced raw round trip: p50 {:.2}x, p99 {:.2}x (target p50 <= 5x)", us(p50) / us(r50), us(p99) / us(r99));
    println!("ratio to the back-to-back raw round trip: p50 {:.2}x, p99 {:.2}x", us(p50) / us(h50), us(p99) / us(h99));
    println!(
        "latency: p50_us={:.1} p99_us={:.1} paced_raw_p50_us={:.1} hot_raw_p50_us={:.1} floor_p50_us={:.1} procs_raw_p50_us={:.1} ratio_p50={:.2} hot_ratio_p50={:.2}",
        us(p50),
        us(p99),
        us(r50),
        us(h50),
        us(f50),
        us(e50),
        us(p50) / us(r50),
        us(p50) / us(h50)
    );
}
