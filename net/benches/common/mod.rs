//! Shared by the chat benchmarks: a 3-server loopback cluster of real processes.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Distinct free UDP ports on 127.0.0.1 (probe sockets held together).
pub fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    socks.iter().map(|s| s.local_addr().expect("local addr").port()).collect()
}

/// Server processes, killed when dropped.
pub struct Cluster {
    pub procs: Vec<Child>,
    pub addrs: Vec<SocketAddr>,
    pub dir: Option<PathBuf>,
    /// The key ring, when sealed (status asks as an operator).
    pub ring: Option<ringchat_core::seal::KeyRing>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Cluster {
    /// `n` sealed servers; with `state`, each keeps a `--state` file in a temporary directory.
    pub fn start(n: usize, state: bool) -> Cluster {
        Cluster::start_sealed(n, state, true)
    }

    /// `n` servers, sealed with a fresh key ring or run with `--insecure-no-key`.
    pub fn start_sealed(n: usize, state: bool, sealed: bool) -> Cluster {
        let ports = free_ports(n);
        let addrs: Vec<SocketAddr> = ports.iter().map(|p| addr(*p)).collect();
        let dir = state.then(|| {
            // A fresh directory per cluster: a bench may start several in one run.
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let d = std::env::temp_dir().join(format!("ringchat-bench-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).expect("temp dir");
            d
        });
        let key = std::env::temp_dir().join(format!("ringchat-bench-{}-{}.key", std::process::id(), ports[0]));
        let _ = std::fs::remove_file(&key);
        let ring = sealed.then(|| {
            ringchat_net::keys::keygen(&key).expect("bench key file");
            ringchat_net::keys::load(&key).expect("bench key file")
        });
        let mut procs = Vec::new();
        for a in &addrs {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringchat"));
            cmd.args(["server", "--bind", &a.to_string(), "--discovery", "off"]);
            for b in addrs.iter().filter(|b| *b != a) {
                cmd.args(["--join", &b.to_string()]);
            }
            if let Some(d) = &dir {
                cmd.arg("--state").arg(d.join(format!("{}.state", a.port())));
            }
            if sealed {
                cmd.arg("--key-file").arg(&key);
            } else {
                cmd.arg("--insecure-no-key");
            }
            cmd.env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            procs.push(cmd.spawn().expect("spawn ringchat server"));
        }
        let c = Cluster { procs, addrs, dir, ring };
        // Wait for one leader and a view of n (status polling with a deadline).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rs: Option<Vec<_>> =
                c.addrs.iter().map(|a| ringchat_net::status::query(*a, c.ring.as_ref(), Duration::from_millis(300)).ok()).collect();
            if let Some(rs) = rs {
                if rs.iter().all(|r| r.leader.is_some() && r.leader == rs[0].leader && r.members.len() == n) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "cluster did not form");
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }
}

impl Cluster {
    /// The identity clients seal to (`None`: unsealed).
    pub fn identity(&self) -> Option<[u8; 32]> {
        self.ring.as_ref().map(ringchat_core::seal::KeyRing::identity_public)
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
