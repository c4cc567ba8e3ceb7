//! Protocol bugs that can be planted on purpose, so that a test (or `ringchat sim`) can
//! show that a checker catches them. `None` in every real configuration.

/// Bugs that can be planted on purpose so the simulator's checkers can be shown to catch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Deliver (and show) messages on receipt, without waiting for their causal past.
    NoHoldback,
    /// Do not deduplicate retried messages.
    SkipDedup,
    /// Lose every inbox when the server restarts.
    ForgetInboxOnRestart,
    /// Bind a name again to whoever claims it last.
    RebindNames,
    /// Show messages before they are stable.
    ShowUnstable,
    /// Show a login its inbox at once, without first catching up with a majority.
    ReplayAtOnce,
    /// Apply joins and leaves in delivery order, ignoring their Lamport times.
    RoomsInDeliveryOrder,
    /// Order joins and leaves by their Lamport times alone, ignoring login fences.
    Unfenced,
    /// Let plain (unsealed) view messages through a sealed server's opener, as a careless
    /// compatibility path would: an outsider's forged view then reaches the core.
    AcceptUnsealedViews,
    /// Answer requests that proved nothing in full (whatever their size) and a hello at the
    /// address its body names, as the cluster did before issue 14.
    AnswerAnyone,
    /// Take a login's key without checking its signature: anyone may log in as anyone whose
    /// public key they know.
    TrustAnyLogin,
    /// Send a room message to the room's members when a server delivers it, ignoring the cut
    /// it carries: servers that delivered a concurrent join or leave first reach other users.
    RecipientsAtDelivery,
    /// Take a chat copy as its origin's claim that it holds the message, as the cluster did
    /// before copies left ahead of the chat log's fsync: a message is then shown while on
    /// fewer disks than a majority.
    CopyClaimsHolds,
}

impl PlantedBug {
    /// Every planted bug, in declaration order.
    pub const ALL: [PlantedBug; 13] = [
        PlantedBug::NoHoldback,
        PlantedBug::SkipDedup,
        PlantedBug::ForgetInboxOnRestart,
        PlantedBug::RebindNames,
        PlantedBug::ShowUnstable,
        PlantedBug::ReplayAtOnce,
        PlantedBug::RoomsInDeliveryOrder,
        PlantedBug::Unfenced,
        PlantedBug::AcceptUnsealedViews,
        PlantedBug::AnswerAnyone,
        PlantedBug::TrustAnyLogin,
        PlantedBug::RecipientsAtDelivery,
        PlantedBug::CopyClaimsHolds,
    ];

    /// Its name on the command line (`ringchat sim --plant NAME`).
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::NoHoldback => "no-holdback",
            PlantedBug::SkipDedup => "skip-dedup",
            PlantedBug::ForgetInboxOnRestart => "forget-inbox-on-restart",
            PlantedBug::RebindNames => "rebind-names",
            PlantedBug::ShowUnstable => "show-unstable",
            PlantedBug::ReplayAtOnce => "replay-at-once",
            PlantedBug::RoomsInDeliveryOrder => "rooms-in-delivery-order",
            PlantedBug::Unfenced => "unfenced",
            PlantedBug::AcceptUnsealedViews => "accept-unsealed-views",
            PlantedBug::AnswerAnyone => "answer-anyone",
            PlantedBug::TrustAnyLogin => "trust-any-login",
            PlantedBug::RecipientsAtDelivery => "recipients-at-delivery",
            PlantedBug::CopyClaimsHolds => "copy-claims-holds",
        }
    }

    /// The bug named `name` (see [`PlantedBug::name`]).
    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|b| b.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_planted_bug_is_listed_once_and_named_back() {
        for (i, b) in PlantedBug::ALL.into_iter().enumerate() {
            assert_eq!(PlantedBug::from_name(b.name()), Some(b));
            assert!(!PlantedBug::ALL[..i].contains(&b), "{b:?} listed twice");
        }
        assert_eq!(PlantedBug::from_name("no-such-bug"), None);
    }
}
