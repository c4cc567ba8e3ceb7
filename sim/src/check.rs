//! Checkers of the election and view guarantees (design §4), over a whole
//! history. Each returns the violations it found; none samples.

use crate::history::{Happening, History};
use ringchat_core::{ClusterId, Event, NodeId, ServerId};
use serde::Serialize;
use std::collections::BTreeMap;

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Property name (S1..S5, L1, L2, V1, ...).
    pub property: String,
    /// What broke, where and when.
    pub detail: String,
}

impl Violation {
    /// A violation of `property`.
    pub fn new(property: &str, detail: String) -> Violation {
        Violation { property: property.to_string(), detail }
    }
}

fn ms(us: u64) -> String {
    format!("{:.3}ms", us as f64 / 1000.0)
}

/// S1–S5 and V1: the safety properties of elections and views.
pub fn check_safety(h: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut leaders: BTreeMap<(ClusterId, u64), NodeId> = BTreeMap::new();
    let mut learned: BTreeMap<(ClusterId, u64), NodeId> = BTreeMap::new();
    let mut epochs: BTreeMap<(ServerId, ClusterId), u64> = BTreeMap::new();
    let mut votes: BTreeMap<(ServerId, ClusterId, u64), NodeId> = BTreeMap::new();
    let mut views: BTreeMap<(ClusterId, u64), Vec<NodeId>> = BTreeMap::new();
    let mut installed: BTreeMap<(NodeId, ClusterId), u64> = BTreeMap::new();
    let mut life: Vec<Option<NodeId>> = vec![None; h.servers.len()];
    for r in &h.records {
        // The server's id in its current life (a restart with the disk lost has a new one).
        let server = life[r.node].map_or(h.servers[r.node], |l| l.id);
        let ev = match &r.what {
            Happening::Start { node } => {
                life[r.node] = Some(*node);
                continue;
            }
            Happening::Core(ev) => ev,
            _ => continue,
        };
        let at = ms(r.at);
        match ev {
            Event::Joined { node, .. } | Event::Left { node, .. } => life[r.node] = Some(*node),
            Event::BecameLeader { cluster, epoch } => {
                let me = life[r.node].unwrap_or(NodeId { id: server, incarnation: 0 });
                if let Some(other) = leaders.insert((*cluster, *epoch), me) {
                    if other.id != me.id {
                        out.push(Violation::new(
                            "S1",
                            format!("cluster {cluster} epoch {epoch}: {other} and {me} both became leader (at {at})"),
                        ));
                    }
                }
                note_learned(&mut learned, &mut out, *cluster, *epoch, me, &at);
            }
            Event::LeaderLearned { cluster, epoch, leader } => note_learned(&mut learned, &mut out, *cluster, *epoch, *leader, &at),
            Event::EpochAdopted { cluster, epoch } => {
                let last = epochs.entry((server, *cluster)).or_insert(0);
                if *epoch <= *last {
                    out.push(Violation::new(
                        "S3",
                        format!("server {server} in cluster {cluster} went from epoch {last} to {epoch} (at {at})"),
                    ));
                }
                *last = (*last).max(*epoch);
            }
            Event::Voted { cluster, epoch, leader } => {
                if let Some(prev) = votes.insert((server, *cluster, *epoch), *leader) {
                    if prev != *leader {
                        out.push(Violation::new(
                            "S4",
                            format!("server {server} accepted {prev} and {leader} in cluster {cluster} epoch {epoch} (at {at})"),
                        ));
                    }
                }
            }
            Event::LeaderActionApplied { cluster, epoch, .. } => {
                let seen = epochs.get(&(server, *cluster)).copied().unwrap_or(0);
                if seen > *epoch {
                    out.push(Violation::new("S5", format!("server {server} applied a leader action of epoch {epoch} after seeing epoch {seen} in cluster {cluster} (at {at})")));
                }
            }
            Event::ViewInstalled { cluster, view } => {
                let members: Vec<NodeId> = view.members.iter().map(|m| m.node).collect();
                let id = view.stamp.id;
                match views.get(&(*cluster, id)) {
                    Some(prev) if *prev != members => out.push(Violation::new(
                        "V1",
                        format!(
                            "cluster {cluster} view {id} installed with two member lists: {} vs {} (at {at})",
                            fmt_nodes(prev),
                            fmt_nodes(&members)
                        ),
                    )),
                    Some(_) => {}
                    None => {
                        views.insert((*cluster, id), members);
                    }
                }
                let me = life[r.node].unwrap_or(NodeId { id: server, incarnation: 0 });
                if let Some(last) = installed.insert((me, *cluster), id) {
                    if id <= last {
                        out.push(Violation::new(
                            "V1",
                            format!("{me} installed view {id} after view {last} in cluster {cluster} (at {at})"),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn note_learned(
    learned: &mut BTreeMap<(ClusterId, u64), NodeId>,
    out: &mut Vec<Violation>,
    cluster: ClusterId,
    epoch: u64,
    leader: NodeId,
    at: &str,
) {
    if let Some(prev) = learned.insert((cluster, epoch), leader) {
        if prev != leader {
            out.push(Violation::new(
                "S2",
                format!("cluster {cluster} epoch {epoch}: servers learned leader {prev} and {leader} (at {at})"),
            ));
        }
    }
}

fn fmt_nodes(nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    format!("[{}]", names.join(","))
}

/// Outcome of the liveness check.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    /// Broken liveness properties.
    pub violations: Vec<Violation>,
    /// Microseconds from heal to the first moment all live servers agreed on one live leader.
    pub settle_us: Option<u64>,
    /// The leader all agree on at the end.
    pub final_leader: Option<NodeId>,
}

#[derive(Clone, Copy, Default)]
struct NodeView {
    up: bool,
    me: Option<NodeId>,
    cluster: ClusterId,
    leader: Option<NodeId>,
    leading: bool,
    epoch: u64,
}

/// The leader and epoch all live servers agree on, if they do.
fn agreement(nodes: &[NodeView]) -> Option<(ClusterId, NodeId, u64)> {
    let mut live = nodes.iter().filter(|n| n.up);
    let first = live.next()?;
    let leader = first.leader?;
    let cluster = first.cluster;
    if cluster == ClusterId::NONE || !nodes.iter().filter(|n| n.up).all(|n| n.leader == Some(leader) && n.cluster == cluster) {
        return None;
    }
    let lead = nodes.iter().find(|n| n.up && n.me == Some(leader) && n.leading)?;
    Some((cluster, leader, lead.epoch))
}

/// L1 (agreement on one live leader within `bound_us` of heal, holding at the
/// end) and L2 (no new epoch after that agreement).
pub fn check_liveness(h: &History, bound_us: u64) -> Liveness {
    let mut nodes = vec![NodeView::default(); h.servers.len()];
    let mut first: Option<(u64, ClusterId, NodeId, u64)> = None;
    let mut out = Liveness::default();
    let mut healed = false;
    for r in &h.records {
        if !healed && r.at >= h.heal_at {
            // The state as of the heal instant, before anything after it happens.
            healed = true;
            first = agreement(&nodes).map(|(c, l, e)| (h.heal_at, c, l, e));
        }
        let n = &mut nodes[r.node];
        match &r.what {
            Happening::Start { node } => *n = NodeView { up: true, me: Some(*node), ..NodeView::default() },
            Happening::Crash => *n = NodeView::default(),
            Happening::Pause | Happening::Resume => {}
            Happening::Core(ev) => match ev {
                Event::Joined { cluster, node } => {
                    n.cluster = *cluster;
                    n.me = Some(*node);
                }
                Event::Left { node, .. } => {
                    n.cluster = ClusterId::NONE;
                    n.me = Some(*node);
                    n.leader = None;
                    n.leading = false;
                }
                Event::EpochAdopted { cluster, epoch } => {
                    n.epoch = *epoch;
                    n.leader = None;
                    if let Some((_, c, _, e)) = first {
                        if *cluster == c && *epoch > e && r.at >= h.heal_at {
                            out.violations.push(Violation::new(
                                "L2",
                                format!(
                                    "server {} started epoch {epoch} after agreement on epoch {e} (at {})",
                                    h.servers[r.node],
                                    ms(r.at)
                                ),
                            ));
                        }
                    }
                }
                Event::BecameLeader { epoch, .. } => {
                    n.leader = n.me;
                    n.leading = true;
                    n.epoch = *epoch;
                }
                Event::LeaderLearned { leader, epoch, .. } => {
                    n.leader = Some(*leader);
                    n.epoch = *epoch;
                }
                Event::SteppedDown { .. } => {
                    n.leading = false;
                    n.leader = None;
                }
                Event::LeaderLost { .. } => n.leader = None,
                _ => {}
            },
        }
        if first.is_none() && r.at >= h.heal_at {
            if let Some((c, l, e)) = agreement(&nodes) {
                first = Some((r.at, c, l, e));
            }
        }
    }
    if !healed {
        first = agreement(&nodes).map(|(c, l, e)| (h.heal_at, c, l, e));
    }
    match first {
        None => out
            .violations
            .push(Violation::new("L1", format!("live servers never agreed on one live leader after heal at {}", ms(h.heal_at)))),
        Some((at, ..)) => {
            let settle = at - h.heal_at;
            out.settle_us = Some(settle);
            if settle > bound_us {
                out.violations.push(Violation::new("L1", format!("agreement took {} after heal (bound {})", ms(settle), ms(bound_us))));
            }
        }
    }
    match agreement(&nodes) {
        Some((_, leader, _)) => out.final_leader = Some(leader),
        None if first.is_some() => {
            out.violations.push(Violation::new("L1", "live servers disagree about the leader at the end of the run".into()))
        }
        None => {}
    }
    out
}
