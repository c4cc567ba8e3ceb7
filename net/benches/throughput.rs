//! Chat throughput through a 3-server loopback cluster: `--clients N` clients
//! (spread over the servers, driven by a few threads) each keep one private
//! message outstanding to a partner (the core allows one at a time); counts
//! `stored` per second over `--secs S` and reports the p50/p99 submit-to-stored
//! latency at that load, and the messages shown to their recipients meanwhile
//! (delivery must keep up with acceptance). `--state` gives every server a
//! `--state` file.
//!
//! Sealing's cost: by default the run measures an unsealed cluster (`--insecure-no-key`) and a
//! sealed one (ChaCha20-Poly1305), one after the other, and prints the ratio (target: at most
//! 10% fewer messages per second sealed). `--sealed-only` / `--unsealed-only` measure one.
//!
//! `cargo bench -p ringchat-net --bench throughput -- [--clients 200] [--secs 5] [--threads 2] [--state] [--sealed-only|--unsealed-only]`

mod common;

use common::*;
use ringchat_net::client::{SyncClient, SyncEvent};
use std::time::{Duration, Instant};

fn main() {
    let (mut clients, mut secs, mut threads, mut state) = (200usize, 5u64, 2usize, false);
    let mut modes = vec![false, true];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--clients" => clients = args.next().and_then(|v| v.parse().ok()).unwrap_or(clients),
            "--secs" => secs = args.next().and_then(|v| v.parse().ok()).unwrap_or(secs),
            "--threads" => threads = args.next().and_then(|v| v.parse().ok()).unwrap_or(threads).max(1),
            "--state" => state = true,
            "--sealed-only" => modes = vec![true],
            "--unsealed-only" => modes = vec![false],
            _ => {}
        }
    }
    let rates: Vec<(bool, f64)> = modes.iter().map(|&sealed| (sealed, measure(clients, secs, threads, state, sealed))).collect();
    if let ([(false, plain)], [(true, sealed)]) = (&rates[..1], &rates[rates.len() - 1..]) {
        println!(
            "sealing: throughput sealed/unsealed {:.3} ({:+.1}%; target at most 10% loss)",
            sealed / plain,
            (sealed / plain - 1.0) * 100.0
        );
    }
}

/// One cluster's figures (printed); returns its stored messages per second.
fn measure(clients: usize, secs: u64, threads: usize, state: bool, sealed: bool) -> f64 {
    let cluster = Cluster::start_sealed(3, state, sealed);
    let addrs = cluster.addrs.clone();
    let start = Instant::now() + Duration::from_secs(3);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                let mine: Vec<usize> = (0..clients).filter(|i| i % threads == t).collect();
                let mut cs: Vec<(SyncClient, String, Option<Instant>)> = mine
                    .iter()
                    .map(|&i| {
                        let server = addrs[i % addrs.len()];
                        let c = SyncClient::new(&format!("u{i}"), vec![server], 1000 + i as u64).expect("client");
                        (c, format!("u{}", (i + 1) % clients), None)
                    })
                    .collect();
                let mut lat = Vec::new();
                let (mut failed, mut seq, mut shown) = (0u64, 0u64, 0u64);
                let end = start + Duration::from_secs(secs);
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let mut idle = true;
                    for (c, to, sent) in cs.iter_mut() {
                        for e in c.step(Duration::ZERO) {
                            idle = false;
                            match e {
                                SyncEvent::Stored(_) => {
                                    if let Some(t0) = sent.take() {
                                        if t0 >= start {
                                            lat.push(t0.elapsed());
                                        }
                                    }
                                }
                                SyncEvent::Failed(_) => {
                                    failed += 1;
                                    *sent = None;
                                }
                                SyncEvent::Shown { .. } if Instant::now() >= start => shown += 1,
                                _ => {}
                            }
                        }
                        if c.is_online() && !c.is_busy() {
                            seq += 1;
                            if c.send(to, format!("load {seq}")).is_ok() {
                                *sent = Some(Instant::now());
                                idle = false;
                            }
                        }
                    }
                    if idle {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                (lat, failed, shown)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let (mut failed, mut shown) = (0, 0);
    for h in handles {
        let (l, f, n) = h.join().expect("client thread");
        lat.extend(l);
        failed += f;
        shown += n;
    }
    lat.sort();
    let rate = lat.len() as f64 / secs as f64;
    println!(
        "throughput ({}): {clients} clients, {threads} threads, {secs} s{}: {:.0} msgs/s stored, {:.0} msgs/s shown, submit-to-stored p50 {:.1} ms, p99 {:.1} ms, {failed} failed",
        if sealed { "sealed" } else { "unsealed" },
        if state { ", servers with --state" } else { "" },
        rate,
        shown as f64 / secs as f64,
        us(percentile(&lat, 0.5)) / 1000.0,
        us(percentile(&lat, 0.99)) / 1000.0
    );
    drop(cluster);
    rate
}
