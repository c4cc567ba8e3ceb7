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
}
