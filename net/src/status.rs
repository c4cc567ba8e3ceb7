//! `ringchat status`: ask one server for its [`StatusReport`] over UDP, and
//! render it for people or as one JSON object.

use ringchat_core::wire::{self, Packet};
use ringchat_core::wire::{ClientMsg, ServerMsg, StatusReport};
use ringchat_core::NodeId;
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Why a status query failed.
#[derive(Debug)]
pub enum QueryError {
    /// No socket to ask from.
    Socket(String),
    /// No answer within the timeout.
    Timeout,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Socket(e) => write!(f, "{e}"),
            QueryError::Timeout => write!(f, "no answer"),
        }
    }
}

/// Asks `server` for its status, re-sending the request a few times within
/// `timeout` (a datagram may be lost). Anything that is not a status report is ignored.
pub fn query(server: SocketAddr, timeout: Duration) -> Result<StatusReport, QueryError> {
    let local: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(local).map_err(|e| QueryError::Socket(format!("cannot bind {local}: {}", crate::io_msg(&e))))?;
    query_with(&sock, server, timeout)
}

/// [`query`] from a socket the caller owns (pollers reuse one socket).
pub fn query_with(sock: &UdpSocket, server: SocketAddr, timeout: Duration) -> Result<StatusReport, QueryError> {
    let request = wire::encode(&Packet::FromClient(ClientMsg::Status)).ok_or(QueryError::Timeout)?;
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
            let _ = sock.send_to(&request, server);
            next_send = now + resend;
        }
        let wait = (next_send.min(start + timeout)).saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        if sock.set_read_timeout(Some(wait)).is_err() {
            return Err(QueryError::Socket("cannot set a read timeout".into()));
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _from)) => {
                if let Ok(Packet::ToClient(ServerMsg::Status(report))) = wire::decode(&buf[..n]) {
                    return Ok(report);
                }
            }
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
    json!({
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
        "members": members,
        "clients": r.clients.iter().map(|(name, addr)| json!({"name": name, "addr": addr.to_string()})).collect::<Vec<Value>>(),
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
            "rejected": c.rejected(),
            "tokens_refused": c.tokens_refused,
            "elections_started": c.elections_started,
        },
    })
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
        "rejected {} (malformed {}, oversize {}, wrong_version {}, invalid {}, foreign_cluster {}, non_member {}, stale_epoch {})",
        c.rejected(),
        c.malformed,
        c.oversize,
        c.wrong_version,
        c.invalid,
        c.foreign_cluster,
        c.non_member,
        c.stale_epoch
    );
    let _ = writeln!(s, "clients {}{}", r.clients_total, if r.clients.len() < r.clients_total as usize { " (first listed)" } else { "" });
    for (name, addr) in &r.clients {
        let _ = writeln!(s, "  {name:<24} {addr}");
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
