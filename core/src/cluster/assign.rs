//! Which server a client should use: rendezvous (highest-random-weight)
//! hashing of `(client id, server id)` over the live members of a view.
//!
//! Every server that holds the same view computes the same order for a client,
//! so the cluster assigns each client consistently whichever member it asks,
//! and clients spread evenly over the members. When a member leaves the view
//! (or is suspected), only its own clients move, each to its next choice.
//! Views are installed by the leader, so the assignment follows the leader's
//! one voice without a round trip to it per client.
//!
//! The weight is a fixed mixing function (splitmix64's finaliser, [`mix64`])
//! over the id bits: no `RandomState`, no hash-map order, the same on every
//! machine and in every simulator run.

use crate::id::{mix64, NodeId, ServerId};
use crate::limits::MAX_MEMBERS;
use crate::view::{Member, View};
use std::net::SocketAddr;

/// The rendezvous weight of server `server` for client `client` (higher is preferred).
pub fn weight(client: u64, server: ServerId) -> u64 {
    let s = mix64((server.0 as u64) ^ mix64((server.0 >> 64) as u64));
    mix64(s ^ mix64(client ^ 0x5851_F42D_4C95_7F2D))
}

/// `members` in the order client `client` should try them: descending weight,
/// ties (practically impossible) broken by server id. At most [`MAX_MEMBERS`].
pub fn order(client: u64, members: &[Member]) -> Vec<Member> {
    let mut ranked: Vec<(u64, Member)> = members.iter().map(|m| (weight(client, m.node.id), *m)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.node.id.cmp(&b.1.node.id)));
    ranked.into_iter().take(MAX_MEMBERS).map(|(_, m)| m).collect()
}

/// The answer server `me` gives to a client's `Find`: the members of its
/// installed `view` that `suspected` does not exclude, in [`order`], as
/// addresses. `me` itself is always included, so a member never answers with
/// an empty list. `None` when `me` is not a member of `view` (it must not answer).
pub fn assign(client: u64, view: &View, me: NodeId, suspected: impl Fn(NodeId) -> bool) -> Option<Vec<SocketAddr>> {
    if !view.contains(me) {
        return None;
    }
    let live: Vec<Member> = view.members.iter().filter(|m| m.node == me || !suspected(m.node)).copied().collect();
    Some(order(client, &live).into_iter().map(|m| m.addr).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::ViewStamp;

    fn view(n: u8) -> View {
        let members = (0..n)
            .map(|i| Member {
                node: NodeId { id: ServerId(((i as u128 + 1) * 0x1234_5678_9abc_def1) << 40 | i as u128), incarnation: 1 },
                addr: SocketAddr::from(([10, 0, 0, i + 1], 7000)),
            })
            .collect();
        View::new(ViewStamp { epoch: 1, id: 3 }, members)
    }

    #[test]
    fn assignment_is_the_same_at_every_member() {
        let v = view(5);
        for client in 0..200u64 {
            let client = client.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let answers: Vec<Vec<SocketAddr>> =
                v.members.iter().map(|m| assign(client, &v, m.node, |_| false).expect("a member answers")).collect();
            assert!(answers.windows(2).all(|w| w[0] == w[1]), "client {client}: {answers:?}");
            assert_eq!(answers[0].len(), 5);
            // A view given in another order (or rebuilt) gives the same answer.
            let mut shuffled = v.members.clone();
            shuffled.reverse();
            assert_eq!(order(client, &shuffled), order(client, &v.members));
        }
        // A non-member does not answer.
        let outsider = NodeId { id: ServerId(42), incarnation: 1 };
        assert_eq!(assign(1, &v, outsider, |_| false), None);
    }

    #[test]
    fn assignment_spreads_clients() {
        let v = view(5);
        let mut first = std::collections::BTreeMap::<SocketAddr, usize>::new();
        let clients = 5000u64;
        for c in 0..clients {
            // Sequential ids (as the simulator makes them) and large random-looking ones.
            let id = if c % 2 == 0 { ((c / 2 + 1) << 32) | 1 } else { mix64(c) | 1 };
            let a = assign(id, &v, v.members[0].node, |_| false).expect("member");
            *first.entry(a[0]).or_default() += 1;
        }
        assert_eq!(first.len(), 5, "{first:?}");
        for (addr, n) in &first {
            // 1000 expected per server; allow ±15%.
            assert!((850..=1150).contains(n), "{addr} got {n} of {clients}: {first:?}");
        }
        // Removing one member moves only its clients.
        let fewer = View::new(v.stamp, v.members[1..].to_vec());
        for c in 0..500u64 {
            let before = order(c, &v.members);
            let after = order(c, &fewer.members);
            if before[0] != v.members[0] {
                assert_eq!(before[0], after[0], "client {c} moved although its server stayed");
            }
        }
    }

    #[test]
    fn suspected_member_is_not_assigned() {
        let v = view(4);
        let me = v.members[0].node;
        let gone = v.members[2].node;
        for client in 0..100u64 {
            let a = assign(client, &v, me, |n| n == gone).expect("member");
            assert_eq!(a.len(), 3);
            assert!(!a.contains(&v.members[2].addr));
            // Everything suspected: the answering member still names itself.
            let alone = assign(client, &v, me, |_| true).expect("member");
            assert_eq!(alone, vec![v.members[0].addr]);
        }
    }
}
