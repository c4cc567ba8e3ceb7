//! `ringchat status`: find a server of the cluster (given, or through the discovery group as
//! a client finds one), ask it for its [`StatusReport`] over UDP, ask every member of its view
//! for theirs (in parallel, within the same timeout), and render one table or one JSON object.

use crate::driver::{Discovery, DEFAULT_BROADCAST, DEFAULT_GROUP};
use crate::trust::Link;
use ringchat_core::seal::KeyRing;
use ringchat_core::wire::{self, Packet};
use ringchat_core::wire::{ClientMsg, RefusalReason, ServerMsg, StatusReport};
use ringchat_core::NodeId;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// Why a status query failed.
#[derive(Debug)]
pub enum QueryError {
    /// No socket to ask from.
    Socket(String),
    /// No answer within the timeout.
    Timeout,
    /// The server answers status to operators only (holders of the cluster's key file).
    NotOperator,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Socket(e) => write!(f, "{e}"),
            QueryError::Timeout => write!(f, "no answer"),
            QueryError::NotOperator => write!(f, "the cluster answers status to operators only: give --key-file FILE"),
        }
    }
}

/// Who asks for status: an operator, holding the cluster's key ring (a sealed cluster answers
/// only them, on an operator channel), or anyone (`None`: plain, as an unsealed cluster takes).
pub type Operator<'a> = Option<&'a KeyRing>;

fn link_of(operator: Operator<'_>) -> Result<Link, QueryError> {
    match operator {
        Some(ring) => Link::operator(ring),
        None => Link::new(None),
    }
    .map_err(QueryError::Socket)
}

/// Asks `server` for its status, re-sending the request a few times within
/// `timeout` (a datagram may be lost). Anything that is not a status report is ignored.
pub fn query(server: SocketAddr, operator: Operator<'_>, timeout: Duration) -> Result<StatusReport, QueryError> {
    let local: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(local).map_err(|e| QueryError::Socket(format!("cannot bind {local}: {}", crate::io_msg(&e))))?;
    query_with(&sock, server, operator, timeout)
}

/// [`query`] from a socket the caller owns (pollers reuse one socket).
pub fn query_with(sock: &UdpSocket, server: SocketAddr, operator: Operator<'_>, timeout: Duration) -> Result<StatusReport, QueryError> {
    let mut link = link_of(operator)?;
    let plain = wire::encode(&Packet::FromClient(ClientMsg::Status)).ok_or(QueryError::Timeout)?;
    let start = Instant::now();
    let resend = (timeout / 4).clamp(Duration::from_millis(5), Duration::from_millis(200));
    let mut buf = [0u8; ringchat_core::limits::MAX_DATAGRAM + 1];
    let mut next_send = start;
    loop {
        let now = Instant::now();
        let elapsed = now.duration_since(start);
        if elapsed >= timeout {
            return Err(QueryError::Timeout);
        }
        if now >= next_send {
            // A send can fail (host unreachable, link down): keep trying until the deadline.
            let _ = sock.send_to(&link.seal(&plain), server);
            next_send = now + resend;
        }
        let wait = (next_send.min(start + timeout)).saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        if sock.set_read_timeout(Some(wait)).is_err() {
            return Err(QueryError::Socket("cannot set a read timeout".into()));
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _from)) => match link.open(&buf[..n]).map(|p| wire::decode(&p)) {
                Some(Ok(Packet::ToClient(ServerMsg::Status(report)))) => return Ok(report),
                Some(Ok(Packet::ToClient(ServerMsg::Refused { reason: RefusalReason::OperatorOnly, .. }))) => {
                    return Err(QueryError::NotOperator)
                }
                _ => {}
            },
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            // e.g. ECONNREFUSED from an ICMP port unreachable: the server may come up; retry.
            Err(_) => std::thread::sleep(Duration::from_millis(1).min(wait)),
        }
    }
}

/// A server's full id (32 hex digits).
pub fn id_hex(node: NodeId) -> String {
    node.id.full()
}

/// Address of `node`'s server in the report's member list.
pub fn addr_of(r: &StatusReport, node: NodeId) -> Option<SocketAddr> {
    r.members.iter().find(|m| m.member.node.id == node.id).map(|m| m.member.addr)
}

/// What `status` prints about a server running with `--insecure-no-key`.
pub const UNSEALED: &str = "WARNING: UNSEALED: this server runs with --insecure-no-key; anyone on the network can join, forge and read";

/// The report as one JSON object (`ringchat status --json`).
pub fn to_json(server: SocketAddr, r: &StatusReport) -> Value {
    let c = &r.counters;
    let members: Vec<Value> = r
        .members
        .iter()
        .map(|mr| {
            let (m, alive) = (&mr.member, mr.alive);
            json!({
                "heard_ms_ago": mr.heard_ms_ago,
                "id": id_hex(m.node),
                "incarnation": m.node.incarnation,
                "addr": m.addr.to_string(),
                "alive": alive,
                "leader": r.leader.is_some_and(|l| l.id == m.node.id),
                "self": m.node.id == r.node.id,
            })
        })
        .collect();
    let mut v = json!({
        "server": server.to_string(),
        "id": id_hex(r.node),
        "incarnation": r.node.incarnation,
        "cluster": format!("{:032x}", r.cluster.0),
        "phase": r.phase,
        "is_leader": r.is_leader,
        "epoch": r.epoch,
        "leader": r.leader.map(id_hex),
        "leader_incarnation": r.leader.map(|l| l.incarnation),
        "leader_addr": r.leader.and_then(|l| addr_of(r, l)).map(|a| a.to_string()),
        "view_id": r.view_id,
        "sealed": r.sealed,
        "members": members,
        "clients": r.clients.iter().map(|(name, addr)| json!({"name": name, "addr": addr.map(|a| a.to_string())})).collect::<Vec<Value>>(),
        "clients_total": r.clients_total,
        "inboxes": r.inboxes.iter().map(|(user, n)| json!({"user": user, "size": n})).collect::<Vec<Value>>(),
        "inbox_total": r.inbox_total,
        "snapshots": r.snapshots,
        "store": r.store,
        "holdback": r.holdback,
        "counters": {
            "store_full": r.store_full,
            "holdback_full": r.holdback_full,
            "malformed": c.malformed,
            "oversize": c.oversize,
            "wrong_version": c.wrong_version,
            "invalid": c.invalid,
            "foreign_cluster": c.foreign_cluster,
            "non_member": c.non_member,
            "stale_epoch": c.stale_epoch,
            "seal_malformed": c.seal_malformed,
            "seal_wrong_key": c.seal_wrong_key,
            "seal_bad_tag": c.seal_bad_tag,
            "seal_replay": c.seal_replay,
            "seal_stale": c.seal_stale,
            "seal_wrong_receiver": c.seal_wrong_receiver,
            "unsealed": c.unsealed,
            "rejected": c.rejected(),
            "ignored": c.ignored(),
            "tokens_refused": c.tokens_refused,
            "elections_started": c.elections_started,
        },
    });
    // Added apart: one more field in the literal above passes serde_json's macro recursion limit.
    if let Some(counters) = v.get_mut("counters").and_then(Value::as_object_mut) {
        counters.insert("rival_leader".into(), c.rival_leader.into());
        counters.insert("rate_limited".into(), c.rate_limited.into());
        counters.insert("reply_too_large".into(), c.reply_too_large.into());
        counters.insert("bad_signature".into(), c.bad_signature.into());
        counters.insert("fragments_dropped".into(), c.fragments_dropped.into());
    }
    v["store_warning"] = store_warning(r).into();
    v
}

/// The report for people.
pub fn to_human(server: SocketAddr, r: &StatusReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let role = if r.is_leader { "leader" } else { "follower" };
    let _ = writeln!(s, "server {server}  node {}  cluster {}  phase {}  role {role}", r.node, r.cluster, r.phase);
    let leader = match r.leader {
        Some(l) => match addr_of(r, l) {
            Some(a) => format!("{l} ({a})"),
            None => l.to_string(),
        },
        None => "none".into(),
    };
    let _ = writeln!(s, "epoch {}  leader {leader}", r.epoch);
    if !r.sealed {
        let _ = writeln!(s, "{UNSEALED}");
    }
    if let Some(w) = store_warning(r) {
        let _ = writeln!(s, "{w}");
    }
    match r.view_id {
        Some(v) => {
            let _ = writeln!(s, "view {v}: {} members", r.members.len());
        }
        None => {
            let _ = writeln!(s, "view none installed: {} members known", r.members.len());
        }
    }
    for mr in &r.members {
        let m = &mr.member;
        let mut tags = vec![if mr.alive { "alive" } else { "suspected" }];
        if r.leader.is_some_and(|l| l.id == m.node.id) {
            tags.push("leader");
        }
        if m.node.id == r.node.id {
            tags.push("this server");
        }
        let _ = writeln!(s, "  {:<12} {:<22} {}", m.node.to_string(), m.addr.to_string(), tags.join(", "));
    }
    let c = &r.counters;
    let _ = writeln!(
        s,
        "rejected {} (malformed {}, oversize {}, wrong_version {}, invalid {})  ignored {} (foreign_cluster {}, non_member {}, stale_epoch {})",
        c.rejected(),
        c.malformed,
        c.oversize,
        c.wrong_version,
        c.invalid,
        c.ignored(),
        c.foreign_cluster,
        c.non_member,
        c.stale_epoch
    );
    let _ = writeln!(
        s,
        "seal: rejected wrong_key {}, bad_tag {}, replay {}, malformed {}, unsealed {}  ignored stale {}, wrong_receiver {}",
        c.seal_wrong_key, c.seal_bad_tag, c.seal_replay, c.seal_malformed, c.unsealed, c.seal_stale, c.seal_wrong_receiver
    );
    let _ = writeln!(
        s,
        "unproven: rate_limited {}, reply_too_large {}, bad_signature {}  rival_leader {}  fragments_dropped {}",
        c.rate_limited, c.reply_too_large, c.bad_signature, c.rival_leader, c.fragments_dropped
    );
    let _ = writeln!(s, "clients {}{}", r.clients_total, if r.clients.len() < r.clients_total as usize { " (first listed)" } else { "" });
    for (name, addr) in &r.clients {
        let _ = writeln!(s, "  {name:<24} {}", addr.map_or_else(|| "(address shown to operators)".to_string(), |a| a.to_string()));
    }
    let _ = writeln!(
        s,
        "inbox entries {}  stored messages {}  held back {}  snapshots installed {}",
        r.inbox_total, r.store, r.holdback, r.snapshots
    );
    for (user, n) in &r.inboxes {
        let _ = writeln!(s, "  {user:<24} {n}");
    }
    let _ = write!(
        s,
        "tokens_refused {}  elections_started {}  store_full {}  holdback_full {}",
        c.tokens_refused, c.elections_started, r.store_full, r.holdback_full
    );
    s
}

/// A warning once the store is three quarters full: at `MAX_STORE - STORE_HEADROOM` the
/// server starts no new message (its senders are told `failed`) until users read theirs.
pub fn store_warning(r: &StatusReport) -> Option<String> {
    use ringchat_core::limits::{MAX_STORE, STORE_HEADROOM};
    let store = r.store as usize;
    (store >= MAX_STORE / 4 * 3).then(|| {
        format!(
            "WARNING: STORE {}% FULL: {store} of {MAX_STORE} messages (unread ones of users away included); \
             at {} this server accepts no new message",
            store * 100 / MAX_STORE,
            MAX_STORE - STORE_HEADROOM
        )
    })
}

/// How a member of the view looks from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// It answered, and the server asked first does not suspect it.
    Alive,
    /// It answered, but the server asked first suspects it (it may be about to leave the view).
    Suspected,
    /// It did not answer within the timeout.
    Unreachable,
}

impl Reach {
    /// The word shown in the table and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Alive => "alive",
            Reach::Suspected => "suspected",
            Reach::Unreachable => "unreachable",
        }
    }
}

/// One server of the table.
#[derive(Clone, Debug)]
pub struct Row {
    /// Its life, as the view lists it.
    pub node: NodeId,
    /// Its address, as the view lists it.
    pub addr: SocketAddr,
    /// Its own report, if it answered.
    pub report: Option<StatusReport>,
    /// Whether it answered, and whether it is suspected.
    pub reach: Reach,
    /// The server asked first.
    pub asked: bool,
}

/// The cluster as seen from one server and the members of its view.
#[derive(Clone, Debug)]
pub struct Survey {
    /// The server asked first.
    pub server: SocketAddr,
    /// Its report.
    pub report: StatusReport,
    /// It, then the other members of its view in its order.
    pub rows: Vec<Row>,
}

impl Survey {
    /// Rows whose own report says they lead.
    pub fn leaders(&self) -> usize {
        self.rows.iter().filter(|r| r.report.as_ref().is_some_and(|p| p.is_leader)).count()
    }
}

/// Asks `server` for its report, then every other member of its view for theirs, each within
/// `timeout` (the members in parallel). Fails only if `server` does not answer.
pub fn survey(server: SocketAddr, operator: Operator<'_>, timeout: Duration) -> Result<Survey, QueryError> {
    let report = query(server, operator, timeout)?;
    let me = Row { node: report.node, addr: server, report: Some(report.clone()), reach: Reach::Alive, asked: true };
    let others: Vec<(NodeId, SocketAddr, bool)> =
        report.members.iter().filter(|m| m.member.node.id != report.node.id).map(|m| (m.member.node, m.member.addr, m.alive)).collect();
    let answers: Vec<Option<StatusReport>> = std::thread::scope(|s| {
        let asks: Vec<_> = others.iter().map(|(_, addr, _)| s.spawn(move || query(*addr, operator, timeout).ok())).collect();
        asks.into_iter().map(|h| h.join().ok().flatten()).collect()
    });
    let mut rows = vec![me];
    for ((node, addr, alive), answer) in others.into_iter().zip(answers) {
        let reach = match (&answer, alive) {
            (None, _) => Reach::Unreachable,
            (Some(_), true) => Reach::Alive,
            (Some(_), false) => Reach::Suspected,
        };
        rows.push(Row { node, addr, report: answer, reach, asked: false });
    }
    Ok(Survey { server, report, rows })
}

/// Finds a server the way a client does: sends `Find` to the discovery group (multicast) or
/// broadcast target and takes the first member that answers with an assignment.
pub fn find(
    discovery: Discovery,
    group: Option<SocketAddrV4>,
    interface: Option<Ipv4Addr>,
    operator: Operator<'_>,
    timeout: Duration,
) -> Result<SocketAddr, QueryError> {
    let mut link = link_of(operator)?;
    let target = match discovery {
        Discovery::Off => return Err(QueryError::Socket("no discovery to find a server with".into())),
        Discovery::Multicast => {
            let g = group.unwrap_or(DEFAULT_GROUP);
            if !g.ip().is_multicast() {
                return Err(QueryError::Socket(format!(
                    "--group {g} is not a multicast address (use --discovery broadcast for broadcast)"
                )));
            }
            g
        }
        Discovery::Broadcast => group.unwrap_or(DEFAULT_BROADCAST),
    };
    let fail = |what: &str, e: std::io::Error| QueryError::Socket(format!("{what}: {}", crate::io_msg(&e)));
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| fail("cannot bind a UDP socket", e))?;
    match discovery {
        Discovery::Broadcast => sock.set_broadcast(true).map_err(|e| fail("cannot set SO_BROADCAST", e))?,
        _ => {
            let _ = sock.set_multicast_ttl_v4(1);
            let _ = sock.set_multicast_loop_v4(true); // a server on this host answers too
            if let Some(ip) = interface {
                let s2 = socket2::SockRef::from(&sock);
                s2.set_multicast_if_v4(&ip).map_err(|e| fail(&format!("cannot send multicast on interface {ip}"), e))?;
            }
        }
    }
    let client = (uuid::Uuid::new_v4().as_u128() as u64) | 1;
    let request = wire::encode(&Packet::FromClient(ClientMsg::Find { client })).ok_or(QueryError::Timeout)?;
    let start = Instant::now();
    let resend = (timeout / 4).clamp(Duration::from_millis(5), Duration::from_millis(200));
    let mut buf = [0u8; ringchat_core::limits::MAX_DATAGRAM + 1];
    let mut next_send = start;
    loop {
        let now = Instant::now();
        if now.duration_since(start) >= timeout {
            return Err(QueryError::Timeout);
        }
        if now >= next_send {
            let _ = sock.send_to(&link.seal(&request), target);
            next_send = now + resend;
        }
        let wait = (next_send.min(start + timeout)).saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).map_err(|e| fail("cannot set a read timeout", e))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let plain = link.open(&buf[..n]).unwrap_or_default();
                if let Ok(Packet::ToClient(ServerMsg::Assign { client: c, .. })) = wire::decode(&plain) {
                    if c == client {
                        return Ok(from);
                    }
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(1).min(wait)),
        }
    }
}

/// A column of the table: its header and its cell for a row. Adding a column is adding a line
/// to [`COLUMNS`] (uptime, version and last-heard will come with the core's report).
pub struct Column {
    /// Header.
    pub header: &'static str,
    /// The cell of `row` in `survey`.
    pub cell: fn(&Survey, &Row) -> String,
}

fn report_cell(row: &Row, f: impl Fn(&StatusReport) -> String) -> String {
    row.report.as_ref().map_or_else(|| "-".to_string(), f)
}

/// The table's columns, left to right.
pub const COLUMNS: &[Column] = &[
    Column { header: "ID", cell: |_, r| format!("{}{}", r.node, if r.asked { "*" } else { "" }) },
    Column { header: "ADDRESS", cell: |_, r| r.addr.to_string() },
    Column { header: "STATE", cell: |_, r| r.reach.as_str().to_string() },
    Column {
        header: "LEADER",
        cell: |s, r| match &r.report {
            Some(p) if p.is_leader => "leader".into(),
            Some(_) => String::new(),
            // No answer: what the server asked first believes.
            None if s.report.leader.is_some_and(|l| l.id == r.node.id) => "leader?".into(),
            None => String::new(),
        },
    },
    Column { header: "EPOCH", cell: |_, r| report_cell(r, |p| p.epoch.to_string()) },
    Column { header: "VIEW", cell: |_, r| report_cell(r, |p| p.view_id.map_or_else(|| "none".into(), |v| v.to_string())) },
    Column { header: "PHASE", cell: |_, r| report_cell(r, |p| p.phase.clone()) },
    Column { header: "UPTIME", cell: |_, r| report_cell(r, |p| duration(p.uptime_ms)) },
    Column {
        header: "HEARD",
        // When the server asked first last heard from this one.
        cell: |s, r| {
            let heard = s.report.members.iter().find(|m| m.member.node.id == r.node.id).and_then(|m| m.heard_ms_ago);
            if r.asked {
                "-".into()
            } else {
                heard.map_or_else(|| "never".into(), |ms| format!("{}ms", ms))
            }
        },
    },
    Column { header: "VERSION", cell: |_, r| report_cell(r, |p| if p.build.is_empty() { "?".into() } else { p.build.clone() }) },
    Column { header: "CLIENTS", cell: |_, r| report_cell(r, |p| p.clients_total.to_string()) },
    Column { header: "STORE", cell: |_, r| report_cell(r, |p| p.store.to_string()) },
    Column { header: "INBOX", cell: |_, r| report_cell(r, |p| p.inbox_total.to_string()) },
    Column { header: "REFUSED", cell: |_, r| report_cell(r, |p| refused(p).to_string()) },
];

/// The refusals of a report that deserve attention: datagrams rejected as bad input. Datagrams
/// ignored in a cluster's normal life (from founding or joining servers, earlier lives,
/// superseded epochs) are shown apart, as `ignored`.
pub fn refused(r: &StatusReport) -> u64 {
    r.counters.rejected()
}

/// A duration for people: `41s`, `12m`, `3h`, `2d`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The survey as a table for people (`ringchat status`).
pub fn survey_to_human(s: &Survey) -> String {
    use std::fmt::Write;
    let r = &s.report;
    let mut out = String::new();
    let leader = match r.leader {
        Some(l) => match addr_of(r, l) {
            Some(a) => format!("{l} ({a})"),
            None => l.to_string(),
        },
        None => "none".into(),
    };
    let view = r.view_id.map_or_else(|| "no view installed".to_string(), |v| format!("view {v} of {} members", r.members.len()));
    let _ = writeln!(out, "cluster {}  epoch {}  leader {leader}  {view}  (asked {})", r.cluster, r.epoch, s.server);
    if !r.sealed {
        let _ = writeln!(out, "{UNSEALED}");
    }
    let cells: Vec<Vec<String>> = s.rows.iter().map(|row| COLUMNS.iter().map(|c| (c.cell)(s, row)).collect()).collect();
    let widths: Vec<usize> =
        COLUMNS.iter().enumerate().map(|(i, c)| cells.iter().map(|r| r[i].len()).chain([c.header.len()]).max().unwrap_or(0)).collect();
    let line = |items: Vec<&str>| -> String {
        let padded: Vec<String> = items.iter().zip(&widths).map(|(t, w)| format!("{t:<w$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(COLUMNS.iter().map(|c| c.header).collect()));
    for row in &cells {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
    let leaders = s.leaders();
    let unreachable = s.rows.iter().filter(|r| r.reach == Reach::Unreachable).count();
    let mut notes = vec![format!("{} servers, {leaders} leading", s.rows.len())];
    if unreachable > 0 {
        notes.push(format!("{unreachable} unreachable from here"));
    }
    let _ = write!(out, "* asked first; {}", notes.join(", "));
    out
}

/// One row as JSON. Its keys avoid the top-level ones of [`to_json`] (`id`, `alive`, `self`,
/// `is_leader`, `view_id`, a string `leader`), so line-oriented scripts that pick the asked
/// server's fields out of the text by key keep working.
pub fn row_to_json(row: &Row) -> Value {
    let p = row.report.as_ref();
    json!({
        "node": id_hex(row.node),
        "short": row.node.to_string(),
        "incarnation": row.node.incarnation,
        "addr": row.addr.to_string(),
        "state": row.reach.as_str(),
        "asked": row.asked,
        "leader": p.is_some_and(|p| p.is_leader),
        "epoch": p.map(|p| p.epoch),
        "view": p.and_then(|p| p.view_id),
        "phase": p.map(|p| p.phase.clone()),
        "clients": p.map(|p| p.clients_total),
        "store": p.map(|p| p.store),
        "inbox": p.map(|p| p.inbox_total),
        "holdback": p.map(|p| p.holdback),
        "refused": p.map(refused),
        "ignored": p.map(|p| p.counters.ignored()),
        "uptime_ms": p.map(|p| p.uptime_ms),
        "build": p.map(|p| p.build.clone()),
    })
}

/// The survey as one JSON object: the asked server's report as [`to_json`] renders it, plus
/// `endpoints` (one object per row, see [`row_to_json`]), `leaders` and `reachable`.
pub fn survey_to_json(s: &Survey) -> Value {
    let mut v = to_json(s.server, &s.report);
    if let Value::Object(map) = &mut v {
        map.insert("endpoints".into(), Value::Array(s.rows.iter().map(row_to_json).collect()));
        map.insert("leaders".into(), json!(s.leaders()));
        map.insert("reachable".into(), json!(s.rows.iter().filter(|r| r.reach != Reach::Unreachable).count()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringchat_core::limits::MAX_STORE;
    use ringchat_core::{Instant as CoreInstant, Server, ServerConfig, ServerId};

    #[test]
    fn a_store_three_quarters_full_is_warned_of_and_a_lighter_one_is_not() {
        let cfg = ServerConfig { discovery: false, join: vec![], ..ServerConfig::default() };
        let server = Server::new(cfg, ServerId(1), "127.0.0.1:9".parse().expect("addr"), None, 7, CoreInstant(0));
        let mut r = server.status().report();
        let at: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        r.store = (MAX_STORE / 2) as u32;
        assert!(!to_human(at, &r).contains("WARNING: STORE"));
        assert!(to_json(at, &r)["store_warning"].is_null());
        r.store = (MAX_STORE / 100 * 95) as u32;
        assert!(to_human(at, &r).contains("WARNING: STORE 94% FULL"), "{}", to_human(at, &r));
        assert!(to_json(at, &r)["store_warning"].is_string());
    }
}
