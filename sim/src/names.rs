//! One way of naming things in traces, violations and reports: a server life is its short id and
//! life (`d1dacd6f/3`, `NodeId`'s `Display`), a cluster its short id (`cluster 5e0c81a2`), a user
//! its name (`u3`), a client process its hex id (`client 400000001`), a message `client:seq`
//! (`400000001:2`, `MsgId`'s `Display`). Protocol events and messages are rendered here so that
//! no Rust debug text of an id reaches a user.

use crate::history::{ChatHappening, ChatOp};
use ringchat_core::wire::{Item, ServerMsg};
use ringchat_core::Event;
use std::fmt;

/// A list of displayable things, comma-separated in brackets: `[a,b,c]`.
pub fn list<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|x| x.to_string()).collect();
    format!("[{}]", v.join(","))
}

/// The non-zero numbers of a struct of counters, `name=value` in name order (`-` when all are zero).
pub fn counters<T: serde::Serialize>(x: &T) -> String {
    let v = serde_json::to_value(x).unwrap_or_default();
    let fields: Vec<String> = v
        .as_object()
        .map(|o| o.iter().filter(|(_, n)| n.as_u64() != Some(0)).map(|(k, n)| format!("{k}={n}")).collect())
        .unwrap_or_default();
    if fields.is_empty() {
        "-".to_string()
    } else {
        fields.join(" ")
    }
}

/// The name of an enum variant, from its debug text, with no field (for variants added later
/// that this module does not know yet: their fields may hold ids).
fn variant<T: fmt::Debug>(x: &T) -> String {
    let d = format!("{x:?}");
    d.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or_default().to_string()
}

/// A protocol event as a trace shows it, with its kind (the first word, as `--trace-kind`
/// filters it): `voted for d1dacd6f/1 in cluster 5e0c81a2 epoch 2`.
pub fn event(ev: &Event) -> (&'static str, String) {
    let cl = |c: &ringchat_core::ClusterId| {
        if *c == ringchat_core::ClusterId::NONE {
            "no cluster yet".to_string()
        } else {
            format!("cluster {c}")
        }
    };
    match ev {
        Event::EpochAdopted { cluster, epoch } => ("epoch_adopted", format!("epoch_adopted {} epoch {epoch}", cl(cluster))),
        Event::Voted { cluster, epoch, leader } => ("voted", format!("voted for {leader} in {} epoch {epoch}", cl(cluster))),
        Event::BecameLeader { cluster, epoch } => ("became_leader", format!("became_leader of {} epoch {epoch}", cl(cluster))),
        Event::SteppedDown { cluster, epoch } => ("stepped_down", format!("stepped_down in {} epoch {epoch}", cl(cluster))),
        Event::LeaderLearned { cluster, epoch, leader } => {
            ("leader_learned", format!("leader_learned {leader} leads {} epoch {epoch}", cl(cluster)))
        }
        Event::LeaderLost { cluster, epoch } => ("leader_lost", format!("leader_lost in {} epoch {epoch}", cl(cluster))),
        Event::ViewInstalled { cluster, view } => (
            "view_installed",
            format!(
                "view_installed {} view {} (epoch {}) members {}",
                cl(cluster),
                view.stamp.id,
                view.stamp.epoch,
                list(view.members.iter().map(|m| m.node))
            ),
        ),
        Event::LeaderActionApplied { cluster, epoch, seen } => {
            ("leader_action", format!("leader_action applied in {} epoch {epoch} (seen {seen})", cl(cluster)))
        }
        Event::Joined { cluster, node } => ("joined", format!("joined {} as {node}", cl(cluster))),
        Event::Left { cluster, node } => ("left", format!("left {} as {node}", cl(cluster))),
    }
}

/// A replicated operation as a trace shows it (no text, no credential).
pub fn item(it: &Item) -> String {
    match it {
        Item::Chat { id, from, room, to, text, .. } => {
            let room = room.as_ref().map(|r| format!(" in room {r}")).unwrap_or_default();
            format!("chat {id} from {from}{room} to {} ({} B)", list(to), text.len())
        }
        Item::Ack { user, ids } => format!("ack by {user} of {}", list(ids)),
        Item::Join { id, user, room, fence, lamport } => format!("join {id}: {user} joins room {room} (fence {fence}, lamport {lamport})"),
        Item::Leave { id, user, room, fence, lamport } => {
            format!("leave {id}: {user} leaves room {room} (fence {fence}, lamport {lamport})")
        }
        Item::Login { user, fence } => format!("login of {user} (fence {fence})"),
        Item::Bind { name, epoch, .. } => format!("bind name {name} (epoch {epoch})"),
        Item::Retire { lives } => format!("retire {}", list(lives.iter().map(|(l, upto)| format!("{l}:{upto}")))),
        #[allow(unreachable_patterns)]
        other => variant(other),
    }
}

/// A server's message to a client as a trace shows it.
pub fn server_msg(m: &ServerMsg) -> String {
    match m {
        ServerMsg::LoginOk { attempt, .. } => format!("login_ok (attempt {attempt})"),
        ServerMsg::LoginRefused { reason, .. } => format!("login_refused: {reason}"),
        ServerMsg::Show { id, from, room, no, attempt, .. } => {
            let room = room.as_ref().map(|r| format!(" in room {r}")).unwrap_or_default();
            format!("show {id} from {from}{room} (no {no}, attempt {attempt})")
        }
        ServerMsg::Stored { id, .. } => format!("stored {id}"),
        ServerMsg::Skip { no, attempt, .. } => format!("skip no {no} (attempt {attempt})"),
        ServerMsg::Assign { servers, .. } => format!("assign {}", list(servers)),
        ServerMsg::Refused { reason, .. } => format!("refused: {reason}"),
        ServerMsg::Rejected { id, reason } => format!("rejected {id}: {reason}"),
        other => other.kind().to_string(),
    }
}

impl fmt::Display for ChatOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatOp::Chat { to, reply_to: Some(r) } => write!(f, "chat to {to} (reply to {r})"),
            ChatOp::Chat { to, reply_to: None } => write!(f, "chat to {to}"),
            ChatOp::Join(room) => write!(f, "join room {room}"),
            ChatOp::Leave(room) => write!(f, "leave room {room}"),
        }
    }
}

impl fmt::Display for ChatHappening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatHappening::Login { name, .. } => write!(f, "login as {name}"),
            ChatHappening::LoggedIn { name, .. } => write!(f, "logged_in as {name}"),
            ChatHappening::Refused => write!(f, "login_refused"),
            ChatHappening::Logout => write!(f, "logout"),
            ChatHappening::Crash => write!(f, "crash"),
            ChatHappening::LogoutUnconfirmed => write!(f, "logout unconfirmed"),
            ChatHappening::Sent { id, op } => write!(f, "sent {id}: {op}"),
            ChatHappening::Stored { id } => write!(f, "stored {id}"),
            ChatHappening::Failed { id } => write!(f, "failed {id}"),
            ChatHappening::Rejected { id } => write!(f, "rejected {id}"),
            ChatHappening::Shown { id } => write!(f, "shown {id}"),
        }
    }
}

/// A client process (one life of a simulated client) by its hex id: `client 400000001`.
pub fn client(process: u64) -> String {
    format!("client {process:x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringchat_core::wire::MsgId;
    use ringchat_core::{ClusterId, NodeId, ServerId};

    fn life() -> NodeId {
        NodeId { id: ServerId(0xd1da_cd6f_0000_0000_0000_0000_0000_0001), incarnation: 3 }
    }

    #[test]
    fn ids_print_in_their_short_forms() {
        assert_eq!(life().to_string(), "d1dacd6f/3");
        assert_eq!(MsgId { client: 17_179_869_185, seq: 2 }.to_string(), "400000001:2");
        assert_eq!(ClusterId(0x5e0c_81a2_0000_0000_0000_0000_0000_0001).to_string(), "5e0c81a2");
    }

    #[test]
    fn events_carry_no_debug_text() {
        let cluster = ClusterId(0x5e0c_81a2_0000_0000_0000_0000_0000_0001);
        let evs = [
            Event::Voted { cluster, epoch: 2, leader: life() },
            Event::LeaderLearned { cluster, epoch: 2, leader: life() },
            Event::Joined { cluster, node: life() },
            Event::BecameLeader { cluster, epoch: 1 },
        ];
        for ev in &evs {
            let (kind, text) = event(ev);
            assert!(text.starts_with(kind), "{text}");
            assert!(!text.contains("NodeId") && !text.contains("ClusterId") && !text.contains('{'), "{text}");
            assert!(text.contains("5e0c81a2"), "{text}");
        }
        assert_eq!(event(&evs[0]).1, "voted for d1dacd6f/3 in cluster 5e0c81a2 epoch 2");
    }

    #[test]
    fn counters_show_their_non_zero_fields_by_name() {
        #[derive(serde::Serialize)]
        struct C {
            oversize: u64,
            malformed: u64,
            replays: u64,
        }
        assert_eq!(counters(&C { oversize: 2, malformed: 0, replays: 7 }), "oversize=2 replays=7");
        assert_eq!(counters(&C { oversize: 0, malformed: 0, replays: 0 }), "-");
    }

    #[test]
    fn chat_happenings_name_messages_client_colon_seq() {
        let id = MsgId { client: 0x4_0000_0001, seq: 9 };
        let sent = ChatHappening::Sent { id, op: ChatOp::Chat { to: ringchat_core::wire::Target::User("u2".into()), reply_to: None } };
        assert_eq!(sent.to_string(), "sent 400000001:9: chat to user u2");
        assert_eq!(ChatHappening::Shown { id }.to_string(), "shown 400000001:9");
        let ack = Item::Ack { user: "u6".into(), ids: vec![id] };
        assert_eq!(item(&ack), "ack by u6 of [400000001:9]");
    }
}
