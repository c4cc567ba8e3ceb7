//! `ringchat server --metrics IP:PORT`: Prometheus/OpenMetrics text on `GET /metrics`.
//!
//! [`Metrics`] holds the counters the driver bumps as it moves datagrams and events, and the
//! gauges it samples from the core when a scrape asks for them ([`Metrics::sample`], called by
//! the event loop between two inputs: a scrape reads state and changes none). [`serve`] is a
//! small HTTP/1.1 responder: one request per connection, a bounded request head, timeouts, a
//! bounded number of connections. It shares the server's thread but never holds it: every
//! wait is an `await`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use ringchat_core::{ChatStats, Counters, Event, Server};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Transmit kind of a client's "stored" acknowledgement (`ServerMsg::Stored`'s `kind()`).
pub const KIND_STORED: &str = "stored";
/// Transmit kind of a message shown to a client (`ServerMsg::Show`'s `kind()`).
pub const KIND_SHOW: &str = "show";

/// Upper bounds of the stored-latency histogram, in seconds: 50 µs to 5 s in 1-2.5-5 steps.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutLabels {
    kind: &'static str,
    retransmit: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// The server's metrics (all `ringchat_`-prefixed). Cheap to update from the event loop:
/// atomics, and a read lock for the labelled families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    started: std::time::Instant,
    uptime: Gauge<f64, AtomicU64>,
    leader_changes: Family<EventLabel, Counter>,
    is_leader: Gauge,
    epoch: Gauge,
    view_size: Gauge,
    view_id: Gauge,
    views_installed: Counter,
    elections_started: Counter,
    datagrams_in: Counter,
    bytes_in: Counter,
    datagrams_in_by_kind: Family<KindLabel, Counter>,
    datagrams_out: Family<OutLabels, Counter>,
    bytes_out: Counter,
    send_errors: Counter,
    rejected: Family<CauseLabel, Counter>,
    store: Gauge,
    inbox: Gauge,
    holdback: Gauge,
    holdback_max: Gauge,
    inbox_max: Gauge,
    sessions: Gauge,
    duplicates_suppressed: Counter,
    chat_stored: Counter,
    chat_shown: Counter,
    stored_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("ringchat");
        let m = Metrics {
            registry: Registry::default(),
            started: std::time::Instant::now(),
            uptime: Gauge::default(),
            leader_changes: Family::default(),
            is_leader: Gauge::default(),
            epoch: Gauge::default(),
            view_size: Gauge::default(),
            view_id: Gauge::default(),
            views_installed: Counter::default(),
            elections_started: Counter::default(),
            datagrams_in: Counter::default(),
            bytes_in: Counter::default(),
            datagrams_in_by_kind: Family::default(),
            datagrams_out: Family::default(),
            bytes_out: Counter::default(),
            send_errors: Counter::default(),
            rejected: Family::default(),
            store: Gauge::default(),
            inbox: Gauge::default(),
            holdback: Gauge::default(),
            holdback_max: Gauge::default(),
            inbox_max: Gauge::default(),
            sessions: Gauge::default(),
            duplicates_suppressed: Counter::default(),
            chat_stored: Counter::default(),
            chat_shown: Counter::default(),
            stored_latency: Histogram::new(LATENCY_BUCKETS),
        };
        let build: Family<BuildLabels, Gauge> = Family::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION"), commit: crate::GIT_COMMIT }).set(1);
        r.register("build_info", "Version and git commit of this binary (value 1)", build);
        r.register_with_unit("uptime", "Time since the server started", Unit::Seconds, m.uptime.clone());
        r.register(
            "leader_changes",
            "Changes of leadership seen by this server, by event (became_leader, stepped_down, leader_learned)",
            m.leader_changes.clone(),
        );
        r.register("is_leader", "1 if this server leads its cluster, else 0", m.is_leader.clone());
        r.register("epoch", "Epoch this server adopted in its cluster", m.epoch.clone());
        r.register("view_size", "Members of the last view this server installed (0 before any)", m.view_size.clone());
        r.register("view_id", "Id of the last view this server installed (0 before any)", m.view_id.clone());
        r.register("views_installed", "Views this server installed", m.views_installed.clone());
        r.register("elections_started", "Elections this server started", m.elections_started.clone());
        r.register("datagrams_in", "Datagrams received (unicast and discovery sockets)", m.datagrams_in.clone());
        r.register_with_unit("received", "Bytes of the datagrams received", Unit::Bytes, m.bytes_in.clone());
        r.register("datagrams_in_by_kind", "Datagrams received, by message kind", m.datagrams_in_by_kind.clone());
        r.register("datagrams_out", "Datagrams sent, by message kind and whether a retransmission", m.datagrams_out.clone());
        r.register_with_unit("sent", "Bytes of the datagrams sent", Unit::Bytes, m.bytes_out.clone());
        r.register("send_errors", "Datagrams the socket refused to send", m.send_errors.clone());
        r.register("rejected", "Datagrams refused or ignored by the core, by cause (the core's counters)", m.rejected.clone());
        r.register("store_messages", "Messages in the retransmission store", m.store.clone());
        r.register("inbox_entries", "Unacknowledged inbox entries over all users", m.inbox.clone());
        r.register("holdback_messages", "Messages held back for their causal past", m.holdback.clone());
        r.register("holdback_max_messages", "Largest hold-back queue seen", m.holdback_max.clone());
        r.register("inbox_max_entries", "Largest inbox seen", m.inbox_max.clone());
        r.register("sessions", "Client sessions on this server", m.sessions.clone());
        r.register("duplicates_suppressed", "Retried copies not shown again", m.duplicates_suppressed.clone());
        r.register("chat_stored", "Stored acknowledgements sent to clients", m.chat_stored.clone());
        r.register("chat_shown", "Messages shown to clients (show datagrams sent)", m.chat_shown.clone());
        r.register_with_unit(
            "stored_latency",
            "Time from a client's send to its stored acknowledgement",
            Unit::Seconds,
            m.stored_latency.clone(),
        );
        Metrics { registry: root, ..m }
    }

    /// A datagram of `len` bytes arrived (on either socket).
    pub fn datagram_in(&self, len: usize) {
        self.datagrams_in.inc();
        self.bytes_in.inc_by(len as u64);
    }

    /// A datagram of message kind `kind` arrived (for when the core reports what it received).
    pub fn observe_in(&self, kind: &'static str) {
        self.datagrams_in_by_kind.get_or_create(&KindLabel { kind }).inc();
    }

    /// A datagram left: `kind` is the core's `Transmit::kind`.
    pub fn datagram_out(&self, kind: &'static str, len: usize, retransmit: bool) {
        self.datagrams_out.get_or_create(&OutLabels { kind, retransmit }).inc();
        self.bytes_out.inc_by(len as u64);
        match kind {
            KIND_STORED => {
                self.chat_stored.inc();
            }
            KIND_SHOW => {
                self.chat_shown.inc();
            }
            _ => {}
        }
    }

    /// The socket refused a datagram.
    pub fn send_error(&self) {
        self.send_errors.inc();
    }

    /// A protocol event.
    pub fn event(&self, e: &Event) {
        let change = match e {
            Event::BecameLeader { .. } => "became_leader",
            Event::SteppedDown { .. } => "stepped_down",
            Event::LeaderLearned { .. } => "leader_learned",
            Event::ViewInstalled { view, .. } => {
                self.views_installed.inc();
                self.view_size.set(view.members.len() as i64);
                self.view_id.set(gauge(view.stamp.id));
                return;
            }
            _ => return,
        };
        self.leader_changes.get_or_create(&EventLabel { event: change }).inc();
    }

    /// One client operation took `micros` from its send to its stored acknowledgement.
    pub fn observe_stored_latency(&self, micros: u64) {
        self.stored_latency.observe(micros as f64 / 1e6);
    }

    /// Reads the gauges and the core's counters from `server` (it changes nothing there).
    pub fn sample(&self, server: &Server) {
        // The core counts datagrams in by kind; the counters catch up to its totals.
        for (kind, n) in server.received() {
            let c = self.datagrams_in_by_kind.get_or_create(&KindLabel { kind });
            c.inc_by(n.saturating_sub(c.get()));
        }
        self.is_leader.set(i64::from(server.is_leader()));
        self.epoch.set(gauge(server.epoch()));
        let (size, id) = server.committed_view().map_or((0, 0), |v| (v.members.len() as i64, gauge(v.stamp.id)));
        self.view_size.set(size);
        self.view_id.set(id);
        self.counters(server.counters());
        self.chat(&server.chat_stats());
    }

    /// The core's counters: each refusal cause, and elections started.
    fn counters(&self, c: &Counters) {
        // Destructured field by field: a counter added to the core fails to compile here.
        let Counters {
            malformed,
            oversize,
            wrong_version,
            invalid,
            foreign_cluster,
            non_member,
            stale_epoch,
            tokens_refused,
            elections_started,
            seal_malformed,
            seal_wrong_key,
            seal_bad_tag,
            seal_replay,
            seal_stale,
            seal_wrong_receiver,
            unsealed,
            rival_leader,
            rate_limited,
            reply_too_large,
            bad_signature,
            fragments_dropped,
        } = c;
        for (cause, n) in [
            ("malformed", malformed),
            ("oversize", oversize),
            ("wrong_version", wrong_version),
            ("invalid", invalid),
            ("foreign_cluster", foreign_cluster),
            ("non_member", non_member),
            ("stale_epoch", stale_epoch),
            ("tokens_refused", tokens_refused),
            ("seal_malformed", seal_malformed),
            ("seal_wrong_key", seal_wrong_key),
            ("seal_bad_tag", seal_bad_tag),
            ("seal_replay", seal_replay),
            ("seal_stale", seal_stale),
            ("seal_wrong_receiver", seal_wrong_receiver),
            ("unsealed", unsealed),
            ("rival_leader", rival_leader),
            ("rate_limited", rate_limited),
            ("reply_too_large", reply_too_large),
            ("bad_signature", bad_signature),
            ("fragments_dropped", fragments_dropped),
        ] {
            catch_up(&self.rejected.get_or_create(&CauseLabel { cause }), *n);
        }
        catch_up(&self.elections_started, *elections_started);
    }

    fn chat(&self, s: &ChatStats) {
        let ChatStats { store, inbox, holdback, max_holdback, inbox_max, duplicates_suppressed, sessions } = s;
        self.store.set(*store as i64);
        self.inbox.set(*inbox as i64);
        self.holdback.set(*holdback as i64);
        self.holdback_max.set(gauge(*max_holdback));
        self.inbox_max.set(gauge(*inbox_max));
        self.sessions.set(*sessions as i64);
        catch_up(&self.duplicates_suppressed, *duplicates_suppressed);
    }

    /// The metrics as OpenMetrics text (uptime as of now).
    pub fn encode(&self) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let mut out = String::with_capacity(8192);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Moves `counter` up to the core's monotonic `total`.
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// Asks the event loop to [`Metrics::sample`] the server; answered with `()` once done.
pub type SampleRequest = oneshot::Sender<()>;

/// Most bytes of a request head read.
pub const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request and take the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest wait for the event loop's sample (stale values are served after it).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds the metrics listener (before the server starts, so a taken port fails the start).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| format!("cannot bind the metrics address {addr}: {}", crate::io_msg(&e)))?;
    l.set_nonblocking(true).map_err(|e| format!("cannot make the metrics socket non-blocking: {}", crate::io_msg(&e)))?;
    Ok(l)
}

/// Serves `GET /metrics` on `listener` until the runtime stops. `sampler` reaches the event loop.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, sampler: mpsc::Sender<SampleRequest>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            // Out of descriptors, say: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue }; // too many: dropped, closed
        let (metrics, sampler) = (metrics.clone(), sampler.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, respond(stream, &metrics, &sampler)).await;
            drop(slot);
        });
    }
}

/// Reads one request head and answers it; the connection closes after the response.
async fn respond(mut stream: tokio::net::TcpStream, metrics: &Metrics, sampler: &mpsc::Sender<SampleRequest>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            return reply(&mut stream, "431 Request Header Fields Too Large", "text/plain", b"request too large\n", true).await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let (tx, rx) = oneshot::channel();
            if sampler.try_send(tx).is_ok() {
                let _ = tokio::time::timeout(SAMPLE_TIMEOUT, rx).await;
            }
            let body = metrics.encode();
            reply(&mut stream, "200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", body.as_bytes(), method == "GET")
                .await
        }
        ("GET" | "HEAD", _) => reply(&mut stream, "404 Not Found", "text/plain", b"try /metrics\n", method == "GET").await,
        _ => reply(&mut stream, "405 Method Not Allowed", "text/plain", b"GET /metrics only\n", true).await,
    }
}

async fn reply(stream: &mut tokio::net::TcpStream, status: &str, ctype: &str, body: &[u8], with_body: bool) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    if with_body {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name{labels}` in OpenMetrics text.
    fn value(text: &str, sample: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
    }

    #[test]
    fn observe_in_counts_by_kind() {
        let m = Metrics::new();
        m.observe_in("heartbeat");
        m.observe_in("heartbeat");
        m.observe_in("chat");
        let t = m.encode();
        assert_eq!(value(&t, "ringchat_datagrams_in_by_kind_total{kind=\"heartbeat\"}"), Some(2.0), "{t}");
        assert_eq!(value(&t, "ringchat_datagrams_in_by_kind_total{kind=\"chat\"}"), Some(1.0), "{t}");
        assert!(t.contains("# TYPE ringchat_datagrams_in_by_kind counter"), "{t}");
        assert!(t.ends_with("# EOF\n"), "{t}");
    }

    #[test]
    fn stored_latency_is_a_histogram_from_50us_to_5s() {
        let m = Metrics::new();
        for us in [10, 50, 51, 700, 3_000, 120_000, 4_000_000, 9_000_000] {
            m.observe_stored_latency(us);
        }
        let t = m.encode();
        let bucket = |le: &str| value(&t, &format!("ringchat_stored_latency_seconds_bucket{{le=\"{le}\"}}"));
        assert_eq!(bucket("0.00005"), Some(2.0), "10 and 50 µs: {t}");
        assert_eq!(bucket("0.0001"), Some(3.0), "51 µs");
        assert_eq!(bucket("0.001"), Some(4.0), "700 µs");
        assert_eq!(bucket("0.005"), Some(5.0), "3 ms");
        assert_eq!(bucket("0.25"), Some(6.0), "120 ms");
        assert_eq!(bucket("5.0"), Some(7.0), "4 s");
        assert_eq!(bucket("+Inf"), Some(8.0), "9 s only in +Inf");
        assert_eq!(value(&t, "ringchat_stored_latency_seconds_count"), Some(8.0));
        let sum = value(&t, "ringchat_stored_latency_seconds_sum").expect("sum");
        assert!((sum - 13.12381).abs() < 1e-6, "{sum}");
        assert_eq!(LATENCY_BUCKETS.first(), Some(&0.000_05));
        assert_eq!(LATENCY_BUCKETS.last(), Some(&5.0));
    }

    #[test]
    fn outgoing_kinds_count_stored_and_shown() {
        let m = Metrics::new();
        m.datagram_out(KIND_STORED, 40, false);
        m.datagram_out(KIND_SHOW, 100, false);
        m.datagram_out(KIND_SHOW, 100, true);
        m.datagram_out("heartbeat", 60, false);
        let t = m.encode();
        assert_eq!(value(&t, "ringchat_chat_stored_total"), Some(1.0), "{t}");
        assert_eq!(value(&t, "ringchat_chat_shown_total"), Some(2.0), "{t}");
        assert_eq!(value(&t, "ringchat_sent_bytes_total"), Some(300.0), "{t}");
        assert_eq!(value(&t, "ringchat_datagrams_out_total{kind=\"show\",retransmit=\"true\"}"), Some(1.0), "{t}");
    }

    #[test]
    fn the_kinds_counted_are_the_cores() {
        use ringchat_core::wire::MsgId;
        use ringchat_core::wire::ServerMsg;
        let id = MsgId { client: 1, seq: 1 };
        assert_eq!(ServerMsg::Stored { id, stamp: Default::default() }.kind(), KIND_STORED);
        let show =
            ServerMsg::Show { id, from: "a".into(), room: None, text: "t".into(), stamp: Default::default(), attempt: 1, no: 1, client: 1 };
        assert_eq!(show.kind(), KIND_SHOW);
    }

    #[test]
    fn counters_catch_up_with_the_core() {
        let m = Metrics::new();
        let mut c = Counters { malformed: 3, elections_started: 1, ..Counters::default() };
        m.counters(&c);
        c.malformed = 5;
        m.counters(&c);
        m.counters(&c);
        let t = m.encode();
        assert_eq!(value(&t, "ringchat_rejected_total{cause=\"malformed\"}"), Some(5.0), "{t}");
        assert_eq!(value(&t, "ringchat_rejected_total{cause=\"stale_epoch\"}"), Some(0.0), "{t}");
        assert_eq!(value(&t, "ringchat_elections_started_total"), Some(1.0), "{t}");
        assert!(value(&t, "ringchat_uptime_seconds").is_some(), "{t}");
    }
}
