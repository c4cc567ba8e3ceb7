//! The tokio driver: one unicast UDP socket per server, one discovery socket
//! for the group (multicast or broadcast), timers from `poll_timeout`.
//!
//! It follows the core's call rule: after every input (a datagram, a timeout,
//! `leave`) it persists the durable state (the election part whenever it changed,
//! the chat part at most every 200 ms; see `state`), then sends every
//! datagram and logs every event, then sleeps until the next deadline or datagram.
//!
//! Around that loop: the metrics endpoint (`--metrics`, see [`crate::metrics`]), whose scrapes
//! the loop answers between two inputs, and systemd's notification socket (`READY=1` once the
//! sockets are bound and the loop runs, `WATCHDOG=1` from the loop when the unit sets
//! `WatchdogSec=`, `STOPPING=1` on the way out); without `NOTIFY_SOCKET` those are no-ops.

use ringchat_core::chat::server::journal;
use ringchat_core::seal::{self, ChaChaPoly, KeyRing, Seal, SealMemory};
use ringchat_core::{Dest, Event, Instant, Server, ServerConfig, ServerId, Transmit};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::time::Duration;
use tracing::{debug, info, warn};

use crate::metrics::{Metrics, SampleRequest};
use crate::udp::Udp;

/// Default multicast discovery group.
pub const DEFAULT_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 77), 7777);
/// Default broadcast discovery target (limited broadcast on the discovery port).
pub const DEFAULT_BROADCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 7777);

/// How servers find each other besides `--join` (in a config file: `multicast`, `broadcast`, `off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// UDP multicast to a group (239.255.0.0/16 by default).
    Multicast,
    /// UDP broadcast (255.255.255.255 or a subnet's broadcast address).
    Broadcast,
    /// Only the `--join` list.
    Off,
}

/// Receive and send buffer asked for on the server's unicast socket.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Everything `ringchat server` needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Unicast address to bind.
    pub bind: SocketAddr,
    /// Discovery mechanism.
    pub discovery: Discovery,
    /// Multicast group or broadcast target (with the discovery port); defaults per mode.
    pub group: Option<SocketAddrV4>,
    /// Known peers.
    pub join: Vec<SocketAddr>,
    /// Interface address for multicast (and the advertised address when binding 0.0.0.0).
    pub interface: Option<Ipv4Addr>,
    /// Core timings and settings (its `discovery` and `join` are set from the fields above).
    pub config: ServerConfig,
    /// Where to keep the durable state.
    pub state: Option<PathBuf>,
    /// Where to serve metrics (`GET /metrics`).
    pub metrics: Option<SocketAddr>,
    /// The cluster's key ring file: server traffic is sealed with it, and the file is read
    /// again (key rotation) on SIGHUP and whenever it changes.
    pub key_file: Option<PathBuf>,
    /// Run without a key: server traffic is plain and anyone on the LAN can join, forge and
    /// read (for study on a private machine only).
    pub insecure_no_key: bool,
}

/// Sockets and state ready to run; building it performs every check that can fail at start.
pub struct Prepared {
    opts: Options,
    unicast: StdUdpSocket,
    discovery: Option<StdUdpSocket>,
    group: Option<SocketAddr>,
    advertised: SocketAddr,
    id: ServerId,
    previous: Option<ringchat_core::Durable>,
    chat_log: Option<crate::chatlog::ChatLog>,
    metrics: Option<std::net::TcpListener>,
    ring: Option<KeyRing>,
    memory: Option<SealMemory>,
}

impl Prepared {
    /// The address other servers are told to use.
    pub fn advertised(&self) -> SocketAddr {
        self.advertised
    }
}

/// Binds the sockets, loads the state and picks the advertised address.
/// Errors are one-line messages (without the `error: ` prefix).
pub fn prepare(opts: Options) -> Result<Prepared, String> {
    let (previous, chat_log) = match &opts.state {
        Some(path) => {
            let (previous, log) = crate::chatlog::restore(path)?;
            (previous, Some(log))
        }
        None => (None, None),
    };
    let group: Option<SocketAddrV4> = match opts.discovery {
        Discovery::Off => None,
        Discovery::Multicast => {
            let g = opts.group.unwrap_or(DEFAULT_GROUP);
            if !g.ip().is_multicast() {
                return Err(format!("--group {g} is not a multicast address (use --discovery broadcast for broadcast)"));
            }
            Some(g)
        }
        Discovery::Broadcast => Some(opts.group.unwrap_or(DEFAULT_BROADCAST)),
    };
    if group.is_some() && !opts.bind.is_ipv4() {
        return Err(format!("--bind {}: multicast and broadcast discovery need IPv4 (or use --discovery off)", opts.bind));
    }

    let unicast = bind_unicast(&opts)?;
    let local = unicast.local_addr().map_err(|e| format!("cannot read the bound address: {}", crate::io_msg(&e)))?;
    let advertised = advertised_addr(&opts, local, group)?;

    let discovery = match group {
        None => None,
        Some(g) => Some(bind_discovery(&opts, g, advertised)?),
    };

    let metrics = match opts.metrics {
        Some(addr) => Some(crate::metrics::bind(addr)?),
        None => None,
    };

    // Checked last, so a bad flag or a taken port is reported as before.
    let ring = match (&opts.key_file, opts.insecure_no_key) {
        (Some(_), true) => return Err("--key-file and --insecure-no-key contradict each other".into()),
        (Some(path), false) => Some(crate::keys::load(path)?),
        (None, true) => None,
        (None, false) => {
            return Err(
                "no cluster key: give --key-file FILE (make one with `ringchat keygen FILE`), or --insecure-no-key to run unsealed".into()
            )
        }
    };
    let memory = match (&opts.state, &ring) {
        (Some(state), Some(_)) => crate::keys::load_memory(&crate::keys::memory_path(state))?,
        _ => None,
    };
    let id = previous.as_ref().map(|d| d.id).unwrap_or_else(|| ServerId(uuid::Uuid::new_v4().as_u128()));
    Ok(Prepared { opts, unicast, discovery, group: group.map(SocketAddr::V4), advertised, id, previous, chat_log, metrics, ring, memory })
}

fn bind_unicast(opts: &Options) -> Result<StdUdpSocket, String> {
    let bind = opts.bind;
    let fail = |e: std::io::Error| format!("cannot bind {bind}: {}", crate::io_msg(&e));
    let sock = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP)).map_err(fail)?;
    sock.bind(&SockAddr::from(bind)).map_err(fail)?;
    // Bursts under load outrun the default buffers (~200 KiB): a dropped datagram costs a
    // repair round trip. The kernel caps this at its `rmem_max`/`wmem_max`; best effort.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    match opts.discovery {
        Discovery::Off => {}
        Discovery::Broadcast => sock.set_broadcast(true).map_err(fail)?,
        Discovery::Multicast => {
            // Group datagrams leave from this socket, so their source is our unicast address.
            let _ = sock.set_multicast_ttl_v4(1);
            let _ = sock.set_multicast_loop_v4(true); // servers on one host find each other
            let iface = opts.interface.or(match bind.ip() {
                IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
                _ => None,
            });
            if let Some(ip) = iface {
                sock.set_multicast_if_v4(&ip).map_err(|e| format!("cannot send multicast on interface {ip}: {}", crate::io_msg(&e)))?;
            }
        }
    }
    sock.set_nonblocking(true).map_err(fail)?;
    Ok(sock.into())
}

/// The concrete address peers should use for us.
fn advertised_addr(opts: &Options, local: SocketAddr, group: Option<SocketAddrV4>) -> Result<SocketAddr, String> {
    if !local.ip().is_unspecified() {
        return Ok(local);
    }
    if let Some(ip) = opts.interface {
        return Ok(SocketAddr::new(IpAddr::V4(ip), local.port()));
    }
    // Ask the routing table which source address reaches a peer (or the group).
    let mut probes: Vec<SocketAddr> = opts.join.iter().copied().filter(|a| a.is_ipv4() == local.is_ipv4()).collect();
    if let Some(g) = group {
        probes.push(SocketAddr::V4(g));
    }
    for target in probes {
        if let Some(ip) = source_ip_towards(local, target) {
            return Ok(SocketAddr::new(ip, local.port()));
        }
    }
    Err(format!("cannot tell which address to advertise for {}; pass --bind IP:PORT or --interface IP", opts.bind))
}

fn source_ip_towards(local: SocketAddr, target: SocketAddr) -> Option<IpAddr> {
    let unspecified = SocketAddr::new(local.ip(), 0);
    let probe = Socket::new(Domain::for_address(unspecified), Type::DGRAM, Some(Protocol::UDP)).ok()?;
    let _ = probe.set_broadcast(true);
    probe.bind(&SockAddr::from(unspecified)).ok()?;
    probe.connect(&SockAddr::from(target)).ok()?;
    let ip = probe.local_addr().ok()?.as_socket()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn bind_discovery(opts: &Options, group: SocketAddrV4, advertised: SocketAddr) -> Result<StdUdpSocket, String> {
    let fail = |what: &str, e: std::io::Error| format!("{what}: {}", crate::io_msg(&e));
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| fail("cannot open the discovery socket", e))?;
    sock.set_reuse_address(true).map_err(|e| fail("cannot set SO_REUSEADDR", e))?;
    match opts.discovery {
        Discovery::Multicast => {
            // Bound to the group address itself, the socket only sees group traffic;
            // 0.0.0.0 is the portable fallback.
            let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, group.port());
            if sock.bind(&SockAddr::from(group)).is_err() {
                sock.bind(&SockAddr::from(any)).map_err(|e| fail(&format!("cannot bind discovery port {any}"), e))?;
            }
            let iface = match (opts.interface, advertised.ip()) {
                (Some(ip), _) => ip,
                (None, IpAddr::V4(ip)) => ip,
                (None, IpAddr::V6(_)) => Ipv4Addr::UNSPECIFIED,
            };
            sock.join_multicast_v4(group.ip(), &iface).or_else(|_| sock.join_multicast_v4(group.ip(), &Ipv4Addr::UNSPECIFIED)).map_err(
                |e| {
                    fail(
                        &format!(
                            "cannot join multicast group {} on {iface} (no multicast route? try --interface IP or --discovery off)",
                            group.ip()
                        ),
                        e,
                    )
                },
            )?;
        }
        Discovery::Broadcast => {
            sock.set_broadcast(true).map_err(|e| fail("cannot set SO_BROADCAST", e))?;
            let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, group.port());
            sock.bind(&SockAddr::from(any)).map_err(|e| fail(&format!("cannot bind discovery port {any}"), e))?;
        }
        Discovery::Off => return Err("no discovery socket without discovery".into()),
    }
    sock.set_nonblocking(true).map_err(|e| fail("cannot make the discovery socket non-blocking", e))?;
    Ok(sock.into())
}

/// Runs a prepared server until Ctrl-C or SIGTERM, then leaves cleanly.
/// Returns the process exit code.
pub fn run(p: Prepared) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {}", crate::io_msg(&e));
            return 1;
        }
    };
    rt.block_on(async move {
        match serve(p).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        }
    })
}

struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    fn now(&self) -> Instant {
        Instant(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn deadline(&self, t: Instant) -> tokio::time::Instant {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        self.origin.checked_add(Duration::from_micros(t.0)).map_or(far, |d| d.min(far))
    }
}

struct Node {
    server: Server,
    unicast: Udp,
    group: Option<SocketAddr>,
    state: Option<PathBuf>,
    /// The chat log beside the state file and its group commit (with `--state`).
    commit: Option<crate::chatlog::Committer>,
    /// Datagrams waiting for the chat log batch (their tag) to be durable, in order.
    held: std::collections::VecDeque<(u64, Transmit)>,
    /// Chat copies sent ahead of the oldest held datagram.
    bypassed: u64,
    /// Election part last written.
    saved: Option<ringchat_core::cluster::ElectionPart>,
    /// Chat part last written, and when.
    saved_chat: Option<ringchat_core::cluster::ChatMark>,
    saved_at: std::time::Instant,
    /// A whole-state write running off the event loop, and the log segment it names.
    writing: Option<tokio::task::JoinHandle<Result<u64, String>>>,
    /// Counts what moves (with `--metrics`).
    metrics: Option<std::sync::Arc<Metrics>>,
    /// systemd's notification socket (leadership and view changes go there as STATUS).
    notify: crate::sd::Notifier,
    /// Seals server datagrams and opens them (insecure: passes everything through).
    seal: Seal<ChaChaPoly>,
    /// The key ring file, and its text as last read.
    key_file: Option<(PathBuf, String)>,
    /// Where the seal's replay memory is kept (beside the state file), and when it was saved.
    memory_file: Option<PathBuf>,
    memory_saved_at: std::time::Instant,
    memory_saved: Option<SealMemory>,
}

/// The seal's replay memory is written at most this often (and at once for a new sender life).
const MEMORY_SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often the key file is checked for a change (besides SIGHUP).
const KEY_CHECK_EVERY: Duration = Duration::from_millis(500);

/// Most datagrams held for the chat log's group commit before the loop waits for the disk.
const MAX_HELD: usize = 16_384;

/// The whole state is written for chat changes at most this often (they are in the chat log
/// at once).
const CHAT_SAVE_EVERY: Duration = Duration::from_secs(1);

impl Node {
    /// Waits for a running whole-state write, and lets the chat log drop what it made unneeded.
    async fn await_writing(&mut self) -> Result<(), String> {
        if let Some(w) = self.writing.take() {
            let from = w.await.map_err(|e| format!("state writer failed: {e}"))??;
            if let Some(c) = &self.commit {
                c.with_log(|log| log.landed(from))?;
            }
        }
        Ok(())
    }

    /// Writes the whole state now (after the running chat log batch), starts a new chat log
    /// segment after it, and lets every held datagram go: the write holds all they depend on.
    async fn write_whole(&mut self, path: &std::path::Path) -> Result<(), String> {
        self.await_writing().await?;
        let commit = self.commit.as_mut().ok_or("no chat log beside the state file")?;
        commit.settle().await?;
        let d = self.server.durable();
        let body = crate::state::encode(d)?;
        commit.with_log(|log| -> Result<(), String> {
            let from = log.rotate();
            crate::state::write(path, from, &body)?;
            log.landed(from);
            Ok(())
        })??;
        self.saved = Some(d.election_part());
        self.saved_chat = Some(d.chat_mark());
        self.saved_at = std::time::Instant::now();
        self.release(u64::MAX).await;
        Ok(())
    }

    /// Writes the whole state once more on the way out.
    async fn final_save(&mut self) -> Result<(), String> {
        match self.state.clone() {
            Some(path) => self.write_whole(&path).await,
            None => Ok(()),
        }
    }

    /// Makes this input durable before its datagrams leave: the whole state at once if the
    /// election part changed or the core asks for it; else the messages it delivered go to the
    /// chat log's group commit, and the returned batch must be durable before the input's
    /// datagrams leave. Now and then the whole state is written off the event loop, so the log
    /// stays short.
    async fn persist(&mut self) -> Result<Option<u64>, String> {
        let journal = self.server.take_journal();
        let Some(path) = self.state.clone() else { return Ok(None) };
        if self.writing.as_ref().is_some_and(|w| w.is_finished()) {
            self.await_writing().await?;
        }
        let d = self.server.durable();
        if journal.reset || self.saved.as_ref() != Some(&d.election_part()) {
            // A vote or a view is on disk before any datagram that depends on it leaves.
            self.write_whole(&path).await?;
            return Ok(None);
        }
        let commit = self.commit.as_mut().ok_or("no chat log beside the state file")?;
        let gate = commit.add(journal.delivered);
        let mark = d.chat_mark();
        if self.writing.is_none() && self.saved_at.elapsed() >= CHAT_SAVE_EVERY && self.saved_chat != Some(mark) {
            let body = crate::state::encode(d)?;
            let from = commit.with_log(|log| log.rotate())?;
            self.writing = Some(tokio::task::spawn_blocking(move || crate::state::write(&path, from, &body).map(|()| from)));
            self.saved_chat = Some(mark);
            self.saved_at = std::time::Instant::now();
        }
        Ok(gate)
    }

    /// Sends the held datagrams whose chat log batch (`upto` and before) is durable.
    async fn release(&mut self, upto: u64) {
        while self.held.front().is_some_and(|(tag, _)| *tag <= upto) {
            if let Some((_, t)) = self.held.pop_front() {
                self.send(t).await;
            }
        }
        if self.held.is_empty() {
            self.bypassed = 0;
        }
    }

    /// Sends one datagram and counts it.
    async fn send(&mut self, t: Transmit) {
        let to = match t.dest {
            Dest::Addr(a) => a,
            Dest::Group => match self.group {
                Some(g) => g,
                None => return,
            },
        };
        let sent = self.unicast.send_to(&t.bytes, to).await;
        if let Some(m) = &self.metrics {
            match sent {
                Ok(_) => m.datagram_out(t.kind, t.bytes.len(), t.retransmit),
                Err(_) => m.send_error(),
            }
        }
        if let Err(e) = sent {
            debug!(kind = t.kind, %to, "send failed: {}", crate::io_msg(&e));
        }
    }

    /// A chat log batch is durable: its datagrams leave, and the next batch starts.
    async fn on_synced(&mut self, batch: u64) {
        self.release(batch).await;
        if let Some(c) = &mut self.commit {
            c.kick();
        }
    }

    /// Saves the seal's replay memory: at once when a sender life not seen before was
    /// accepted, else at most every [`MEMORY_SAVE_EVERY`] if it changed.
    fn save_memory(&mut self, force: bool) -> Result<(), String> {
        let Some(path) = &self.memory_file else { return Ok(()) };
        let new_life = self.seal.take_new_lives();
        if !(force || new_life || self.memory_saved_at.elapsed() >= MEMORY_SAVE_EVERY) {
            return Ok(());
        }
        let memory = self.seal.memory();
        if self.memory_saved.as_ref() != Some(&memory) {
            crate::keys::save_memory(path, &memory)?;
            self.memory_saved = Some(memory);
        }
        self.memory_saved_at = std::time::Instant::now();
        Ok(())
    }

    /// Reads the key file again and installs the ring if it changed (a rotation step). A file
    /// that cannot be read or parsed leaves the ring as it was, with a warning.
    fn reload_keys(&mut self, asked: bool) {
        let Some((path, last)) = &self.key_file else {
            if asked {
                info!("SIGHUP: no key file to reload (running with --insecure-no-key)");
            }
            return;
        };
        let text = match crate::keys::read(path) {
            Ok(t) => t,
            Err(e) => return warn!("{e}; keeping the key ring in use"),
        };
        if text == *last && !asked {
            return;
        }
        match KeyRing::parse(&text) {
            Ok(ring) => {
                let keys: Vec<String> = ring.keys().iter().map(|k| k.id().to_string()).collect();
                info!(primary = %ring.primary().id(), keys = %keys.join(","), "key ring loaded");
                self.seal.set_ring(ring);
                self.server.set_identity(self.seal.identity());
                self.key_file = Some((path.clone(), text));
            }
            Err(e) => warn!("key file {}: {e}; keeping the key ring in use", path.display()),
        }
    }

    /// The call rule: persist, then send every datagram, then report every event. Datagrams
    /// that wait for the chat log's group commit are held, in order, until it is durable.
    async fn after_input(&mut self) -> Result<(), String> {
        let gate = self.persist().await?;
        self.save_memory(false)?;
        while let Some(t) = seal::drive::poll_transmit(&mut self.server, &mut self.seal) {
            match gate {
                // A chat copy claims nothing about this server's disk: it leaves at once, so
                // peers append to their logs while we do (see the core's journal).
                Some(_) if journal::leaves_at_once(t.kind) && self.bypassed < journal::MAX_AHEAD => {
                    self.bypassed += u64::from(!self.held.is_empty());
                    self.send(t).await;
                }
                Some(batch) => self.held.push_back((batch, t)),
                None => self.send(t).await,
            }
        }
        if let Some(c) = &mut self.commit {
            c.kick();
            // A disk that falls behind slows the loop down instead of holding without bound.
            if self.held.len() > MAX_HELD && c.is_running() {
                let batch = c.synced().await?;
                self.on_synced(batch).await;
            }
        }
        let mut changed = false;
        while let Some(e) = self.server.poll_event() {
            log_event(&e);
            if let Some(m) = &self.metrics {
                m.event(&e);
            }
            changed |= matches!(
                e,
                Event::BecameLeader { .. }
                    | Event::SteppedDown { .. }
                    | Event::LeaderLearned { .. }
                    | Event::LeaderLost { .. }
                    | Event::ViewInstalled { .. }
                    | Event::Left { .. }
            );
        }
        if let Some(m) = &self.metrics {
            for us in self.server.take_stored_latencies() {
                m.observe_stored_latency(us);
            }
        }
        if changed && self.notify.enabled() {
            self.notify_status();
        }
        Ok(())
    }

    /// Feeds one received datagram to the core.
    fn feed(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if let Some(m) = &self.metrics {
            m.datagram_in(bytes.len());
        }
        seal::drive::feed(&mut self.server, &mut self.seal, now, from, bytes);
    }

    /// One line for `systemctl status`.
    fn notify_status(&self) {
        let s = &self.server;
        let role = if s.is_leader() { "leader" } else { "follower" };
        let leader = s.leader().map_or_else(|| "none".to_string(), |l| l.to_string());
        let view = s.committed_view().map_or_else(|| "no view".to_string(), |v| format!("view {} of {}", v.stamp.id, v.members.len()));
        let line = format!("{role} in cluster {}, epoch {}, leader {leader}, {view}", s.cluster(), s.epoch());
        self.notify.send(crate::sd::Note::Status(line));
    }
}

fn log_event(e: &Event) {
    match e {
        Event::BecameLeader { cluster, epoch } => info!(%cluster, epoch, "became leader"),
        Event::SteppedDown { cluster, epoch } => info!(%cluster, epoch, "stepped down"),
        Event::LeaderLearned { cluster, epoch, leader } => info!(%cluster, epoch, %leader, "leader learned"),
        Event::LeaderLost { cluster, epoch } => info!(%cluster, epoch, "leader lost"),
        Event::ViewInstalled { cluster, view } => {
            let members: Vec<String> = view.members.iter().map(|m| format!("{}@{}", m.node, m.addr)).collect();
            info!(%cluster, epoch = view.stamp.epoch, view = view.stamp.id, "view installed: [{}]", members.join(", "));
        }
        Event::Joined { cluster, node } => info!(%cluster, %node, "joined cluster"),
        Event::Left { cluster, node } => info!(%cluster, %node, "left cluster"),
        Event::EpochAdopted { cluster, epoch } => debug!(%cluster, epoch, "epoch adopted"),
        Event::Voted { cluster, epoch, leader } => debug!(%cluster, epoch, %leader, "voted"),
        Event::LeaderActionApplied { cluster, epoch, seen } => debug!(%cluster, epoch, seen, "leader action applied"),
    }
}

async fn recv_opt(sock: Option<&Udp>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// The running chat log batch, once durable (pending forever when none runs).
async fn synced_opt(commit: Option<&mut crate::chatlog::Committer>) -> Result<u64, String> {
    match commit {
        Some(c) if c.is_running() => c.synced().await,
        _ => std::future::pending().await,
    }
}

async fn sample_request(rx: Option<&mut tokio::sync::mpsc::Receiver<SampleRequest>>) -> Option<SampleRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn tick_opt(t: Option<&mut tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

/// SIGHUP (reload the key file), where there is such a signal.
fn hangup_signal() -> Option<Hangup> {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn hangup_opt(h: Option<&mut Hangup>) {
    #[cfg(unix)]
    if let Some(h) = h {
        h.recv().await;
        return;
    }
    let _ = h;
    std::future::pending::<()>().await
}

/// Ctrl-C or SIGTERM. The handlers are installed here, at once (not when the future is first
/// polled): a stop asked for right after the server reported itself ready still leaves cleanly.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, int) {
                (Some(mut term), Some(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                (Some(mut term), None) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                (None, _) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Most datagrams fed to the core before its output is sent.
const DRAIN_MAX: usize = 64;

async fn serve(p: Prepared) -> Result<(), String> {
    let Prepared { opts, unicast, discovery, group, advertised, id, previous, chat_log, metrics: metrics_listener, ring, memory } = p;
    let unicast = Udp::new(unicast).map_err(|e| format!("cannot register the socket: {}", crate::io_msg(&e)))?;
    let discovery = match discovery {
        Some(s) => Some(Udp::new(s).map_err(|e| format!("cannot register the discovery socket: {}", crate::io_msg(&e)))?),
        None => None,
    };
    let mut cfg = opts.config.clone();
    cfg.discovery = group.is_some();
    cfg.join = opts.join.clone();
    cfg.build = crate::VERSION.to_string();
    cfg.sealed = ring.is_some();
    cfg.identity = ring.as_ref().map(KeyRing::identity_public);
    let clock = Clock { origin: tokio::time::Instant::now() };
    let seed = uuid::Uuid::new_v4().as_u128() as u64;
    let restarted = previous.is_some();
    let server = Server::new(cfg, id, advertised, previous, seed, clock.now());
    info!(
        node = %server.node(),
        id = %id.full(),
        bind = %opts.bind,
        advertised = %advertised,
        discovery = ?opts.discovery,
        group = ?group,
        join = ?opts.join,
        restarted,
        "server started"
    );
    let seal = match ring {
        Some(ring) => {
            info!(primary = %ring.primary().id(), keys = ring.keys().len(), "server traffic is sealed");
            Seal::new(server.node(), ring, memory.as_ref())
        }
        None => {
            warn!("RUNNING WITHOUT A KEY (--insecure-no-key): server traffic is plain; anyone on this network can join, forge and read");
            Seal::insecure(server.node())
        }
    };
    let key_file = match &opts.key_file {
        Some(path) => Some((path.clone(), crate::keys::read(path)?)),
        None => None,
    };
    let memory_file = opts.state.as_ref().filter(|_| seal.is_sealed()).map(|s| crate::keys::memory_path(s));
    let mut node = Node {
        seal,
        key_file,
        memory_file,
        memory_saved_at: std::time::Instant::now(),
        memory_saved: memory,
        server,
        unicast,
        group,
        state: opts.state.clone(),
        commit: chat_log.map(crate::chatlog::Committer::new),
        held: std::collections::VecDeque::new(),
        bypassed: 0,
        saved: None,
        saved_chat: None,
        saved_at: std::time::Instant::now(),
        writing: None,
        metrics: None,
        notify: crate::sd::Notifier::from_env(),
    };
    // The metrics endpoint runs beside the loop; a scrape asks the loop for a sample.
    let mut samples = None;
    if let Some(listener) = metrics_listener {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("cannot register the metrics socket: {}", crate::io_msg(&e)))?;
        let local = listener.local_addr().map_err(|e| format!("cannot read the metrics address: {}", crate::io_msg(&e)))?;
        let m = std::sync::Arc::new(Metrics::new());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(crate::metrics::serve(listener, m.clone(), tx));
        node.metrics = Some(m);
        samples = Some(rx);
        info!(%local, "serving metrics on http://{local}/metrics");
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut hangup = hangup_signal();
    let mut key_check = tokio::time::interval(KEY_CHECK_EVERY);
    key_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    node.after_input().await?;
    // The sockets are bound and the loop is about to run: tell systemd (a no-op without it).
    node.notify.send(crate::sd::Note::Ready);
    if node.notify.enabled() {
        node.notify_status();
    }
    // With WatchdogSec=, the loop itself proves it is alive, twice per period.
    let mut watchdog = crate::sd::Notifier::watchdog().map(|period| {
        let mut t = tokio::time::interval((period / 2).max(Duration::from_millis(10)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });

    let mut ubuf = vec![0u8; 2048];
    let mut dbuf = vec![0u8; 2048];
    // The last receive found more datagrams queued behind the first.
    let mut busy = false;
    loop {
        // Everything the last input caused has already been sent and saved.
        let mut settled = false;
        let wake = node.server.poll_timeout().map(|t| clock.deadline(t)).unwrap_or_else(|| clock.deadline(Instant(u64::MAX)));
        tokio::select! {
            r = node.unicast.recv_from(&mut ubuf) => match r {
                Ok((n, from)) => {
                    node.feed(clock.now(), from, &ubuf[..n]);
                    // While datagrams queue up, whatever else is ready is fed before sending: the
                    // core then packs its replies into fewer datagrams. Otherwise the reply leaves
                    // at once; asking the socket for more first would only delay it.
                    let sent = !busy;
                    if sent {
                        node.after_input().await.inspect_err(|e| warn!("{e}"))?;
                    }
                    busy = false;
                    for _ in 1..DRAIN_MAX {
                        let Ok((n, from)) = node.unicast.try_recv_from(&mut ubuf) else { break };
                        node.feed(clock.now(), from, &ubuf[..n]);
                        busy = true;
                    }
                    settled = sent && !busy;
                }
                Err(e) => debug!("receive failed: {}", crate::io_msg(&e)),
            },
            r = recv_opt(discovery.as_ref(), &mut dbuf) => match r {
                Ok((n, from)) => node.feed(clock.now(), from, &dbuf[..n]),
                Err(e) => debug!("discovery receive failed: {}", crate::io_msg(&e)),
            },
            _ = tokio::time::sleep_until(wake) => node.server.handle_timeout(clock.now()),
            r = synced_opt(node.commit.as_mut()) => {
                node.on_synced(r.inspect_err(|e| warn!("{e}"))?).await;
                settled = true;
            }
            Some(reply) = sample_request(samples.as_mut()) => {
                // A scrape: read, change nothing. Everything before it was already sent.
                if let Some(m) = &node.metrics {
                    m.sample(&node.server);
                }
                let _ = reply.send(());
                settled = true;
            }
            _ = hangup_opt(hangup.as_mut()) => {
                node.reload_keys(true);
                settled = true;
            }
            _ = key_check.tick() => {
                node.reload_keys(false);
                node.save_memory(false).inspect_err(|e| warn!("{e}"))?;
                settled = true;
            }
            _ = tick_opt(watchdog.as_mut()) => {
                node.notify.send(crate::sd::Note::Watchdog);
                settled = true;
            }
            _ = &mut shutdown => {
                info!("shutting down: leaving the cluster");
                node.notify.send(crate::sd::Note::Stopping);
                node.server.leave(clock.now());
                node.after_input().await?;
                let saved = node.final_save().await.and(node.save_memory(true));
                // STOPPING=1 (and what came before it) reaches systemd before the process ends.
                node.notify.close(Duration::from_secs(1));
                return saved;
            }
        }
        if !settled {
            node.after_input().await.inspect_err(|e| warn!("{e}"))?;
        }
    }
}
