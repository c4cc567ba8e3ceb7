//! Which peer messages a server takes from whom: the one place that says which kinds skip
//! the cluster check or the membership check, and why.
//!
//! Every other kind is taken only from a server of our own cluster whose server id is in
//! our latest or installed view (or, while founding, one we discovered); anything else is
//! counted as `non_member` and answered with a small `NotMember` so a server dropped from
//! the view learns it and rejoins.

use crate::wire::Body;

/// Who may send a message kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Taken from any server, of any cluster or none: discovery is how servers without a
    /// cluster find one, and how two clusters that meet learn of each other (to merge).
    Discovery,
    /// Taken from servers of our cluster that are not (yet) in our view.
    NonMember,
    /// Taken only from members of our view.
    Member,
}

impl Admission {
    /// The admission rule of a message kind.
    pub fn of(body: &Body) -> Admission {
        match body {
            // Discovery: a newcomer's `Hello` must be answered before it belongs anywhere,
            // and `Welcome`/`Beacon` are how a server learns of clusters it is not in.
            Body::Hello { .. } | Body::Welcome { .. } | Body::Beacon { .. } => Admission::Discovery,
            // A joining server is by definition not in the view yet.
            Body::JoinRequest { .. } => Admission::NonMember,
            // A leader's views reach the servers it is adding (not yet members) and members
            // behind it; a view is checked against epochs and stamps, not the sender's seat.
            Body::ViewPropose { .. } | Body::ViewCommit { .. } => Admission::NonMember,
            // Likewise a view a member shares: a restarted server may hold no view naming the
            // sender (it crashed before the view that admitted it came), and only the shared
            // view tells it that it votes (seed 3486).
            Body::ViewInfo { .. } => Admission::NonMember,
            // "You are not in my view" comes from a member whose view we are not in: we may
            // hold a view that no longer names it.
            Body::NotMember { .. } => Admission::NonMember,
            _ => Admission::Member,
        }
    }
}
