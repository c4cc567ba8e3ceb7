//! LCR (Chang-Roberts) election state for one epoch, and hop acknowledgement.
//!
//! The token phase only picks a candidate; nobody adopts the epoch until the
//! candidate's `Elected` announcement is accepted, and the candidate leads only
//! once a majority of its view accepted. A server refuses tokens while it still
//! hears a live leader, so a lone false suspicion cannot start a new epoch.

use crate::id::NodeId;
use crate::time::Instant;
use crate::view::Member;
use crate::wire::CandidateKey;
use std::collections::BTreeSet;

/// What this server does with an incoming token.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenVerdict {
    /// Pass the token on unchanged (it beats us).
    Forward,
    /// Replace it with our own token (we beat it and have not sent ours yet).
    SendOwn,
    /// Swallow it (we beat it and already sent ours).
    Drop,
    /// Our own token came back: we are the candidate.
    Won,
}

/// LCR state for the election in progress (if any).
#[derive(Debug, Clone, Default)]
pub struct Election {
    /// Highest election epoch seen in tokens (not adopted: only a pre-vote).
    pub epoch: u64,
    /// Sent our own token (or forwarded a bigger one) in `epoch`.
    pub participant: bool,
    /// When this election gives up and restarts with a higher epoch.
    pub deadline: Option<Instant>,
    /// When we will start (or restart) an election, after back-off.
    pub start_at: Option<Instant>,
}

impl Election {
    /// Handles a token of `epoch` carrying `key`, given our own key `mine`.
    /// Returns `None` for a token of an older election.
    pub fn on_token(&mut self, epoch: u64, key: CandidateKey, mine: CandidateKey) -> Option<TokenVerdict> {
        if epoch < self.epoch {
            return None;
        }
        if epoch > self.epoch {
            self.epoch = epoch;
            self.participant = false;
        }
        let verdict = if key == mine {
            TokenVerdict::Won
        } else if key > mine {
            self.participant = true;
            TokenVerdict::Forward
        } else if self.participant {
            TokenVerdict::Drop
        } else {
            self.participant = true;
            TokenVerdict::SendOwn
        };
        Some(verdict)
    }

    /// Starts a new election above `floor`; returns its epoch.
    pub fn start(&mut self, floor: u64, deadline: Instant) -> u64 {
        self.epoch = self.epoch.max(floor) + 1;
        self.participant = true;
        self.deadline = Some(deadline);
        self.start_at = None;
        self.epoch
    }

    /// Ends the election (a leader is known).
    pub fn settle(&mut self) {
        self.participant = false;
        self.deadline = None;
        self.start_at = None;
    }
}

/// A ring message awaiting its hop acknowledgement.
#[derive(Debug, Clone)]
pub struct PendingHop {
    /// Election epoch of the message.
    pub epoch: u64,
    /// Candidate it carries.
    pub key: CandidateKey,
    /// An Elected announcement (else a Token).
    pub elected: bool,
    /// Where it went.
    pub to: Member,
    /// When to retry.
    pub deadline: Instant,
    /// Retries left before the successor is suspected and skipped.
    pub retries_left: u32,
}

/// Votes gathered by a candidate.
#[derive(Debug, Clone)]
pub struct Candidacy {
    /// The epoch it stands in.
    pub epoch: u64,
    /// Members that accepted (including itself).
    pub accepts: BTreeSet<NodeId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{NodeId, ServerId};
    use crate::view::ViewStamp;

    fn key(id: u128, view_id: u64) -> CandidateKey {
        CandidateKey { view: ViewStamp { epoch: 1, id: view_id }, node: NodeId { id: ServerId(id), incarnation: 1 } }
    }

    #[test]
    fn bigger_token_is_forwarded_smaller_replaced_once() {
        let mut e = Election::default();
        let mine = key(5, 1);
        assert_eq!(e.on_token(1, key(9, 1), mine), Some(TokenVerdict::Forward));
        let mut fresh = Election::default();
        assert_eq!(fresh.on_token(1, key(2, 1), mine), Some(TokenVerdict::SendOwn));
        assert_eq!(fresh.on_token(1, key(3, 1), mine), Some(TokenVerdict::Drop));
    }

    #[test]
    fn own_token_back_wins_and_old_epochs_are_ignored() {
        let mut e = Election::default();
        let mine = key(5, 1);
        assert_eq!(e.on_token(3, mine, mine), Some(TokenVerdict::Won));
        assert_eq!(e.on_token(2, key(9, 1), mine), None);
    }

    #[test]
    fn a_more_up_to_date_view_beats_a_higher_id() {
        let mut e = Election::default();
        assert_eq!(e.on_token(1, key(1, 7), key(9, 6)), Some(TokenVerdict::Forward));
    }

    #[test]
    fn a_higher_epoch_resets_participation() {
        let mut e = Election::default();
        let mine = key(5, 1);
        assert_eq!(e.on_token(1, key(2, 1), mine), Some(TokenVerdict::SendOwn));
        assert_eq!(e.on_token(2, key(2, 1), mine), Some(TokenVerdict::SendOwn));
    }
}
