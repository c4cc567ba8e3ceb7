//! The recorded history of a run: every protocol event and every node fault,
//! in the order the simulator processed them.

use ringchat_core::wire::{MsgId, Target};
use ringchat_core::{Event, NodeId, ServerId};

/// Something that happened at one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happening {
    /// The node started (first life or restart) as `node`.
    Start { node: NodeId },
    /// The node crashed.
    Crash,
    /// The node froze.
    Pause,
    /// The node thawed.
    Resume,
    /// The core reported an event.
    Core(Event),
}

/// One entry of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Virtual time, microseconds.
    pub at: u64,
    /// Index of the server.
    pub node: usize,
    /// What happened.
    pub what: Happening,
}

/// The whole history of a run.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Permanent ids of the servers, by index.
    pub servers: Vec<ServerId>,
    /// Records in processing order.
    pub records: Vec<Record>,
    /// End of chaos (microseconds): faults stop, crashed servers restart.
    pub heal_at: u64,
    /// End of the run (microseconds).
    pub end: u64,
    /// What simulated clients did and were shown, in processing order.
    pub chat: Vec<ChatRecord>,
    /// Instants (microseconds) at which every server lost power at once.
    pub power_cuts: Vec<u64>,
    /// Instants (microseconds) at which a majority of the servers crashed together, to come
    /// back with their disks lost: what only they held (stored messages, name bindings, room
    /// memberships) may be gone, so the checkers promise nothing about it across the loss.
    pub majority_losses: Vec<u64>,
}

impl History {
    /// How many majority disk losses happened before `at` (the era of `at`).
    pub fn era(&self, at: u64) -> usize {
        self.majority_losses.iter().filter(|&&l| l < at).count()
    }

    /// Whether a majority disk loss happened at or after `at`.
    pub fn lost_after(&self, at: u64) -> bool {
        self.majority_losses.iter().any(|&l| l >= at)
    }

    /// Users whose name another user's process held after a majority disk loss (the binding
    /// was lost with the disks, and a name is first come, first served).
    pub fn stolen_names(&self) -> std::collections::BTreeSet<usize> {
        self.chat
            .iter()
            .filter_map(|r| match &r.what {
                ChatHappening::LoggedIn { name, .. } if self.era(r.at) > 0 => crate::chat_check::user_of(name).filter(|&u| u != r.user),
                _ => None,
            })
            .collect()
    }
}

/// An operation a simulated user submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatOp {
    /// A chat message; `reply_to` is the shown message it answers.
    Chat {
        /// Recipient.
        to: Target,
        /// The message it replies to.
        reply_to: Option<MsgId>,
    },
    /// Join a room.
    Join(String),
    /// Leave a room.
    Leave(String),
}

/// Something a simulated client process did or was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatHappening {
    /// Started logging in as `name` with credential `token`.
    Login {
        /// Name.
        name: String,
        /// Credential (which real user it is).
        token: u64,
    },
    /// Logged in as `name` (holder of `token`).
    LoggedIn {
        /// Name.
        name: String,
        /// Credential.
        token: u64,
    },
    /// Login refused.
    Refused,
    /// Logged out.
    Logout,
    /// The client process crashed.
    Crash,
    /// A logout no server confirmed: like a crash, the process's last acknowledgements may
    /// not have arrived.
    LogoutUnconfirmed,
    /// The user submitted an operation.
    Sent {
        /// Its id.
        id: MsgId,
        /// What.
        op: ChatOp,
    },
    /// The operation was acknowledged `stored`.
    Stored {
        /// Its id.
        id: MsgId,
    },
    /// The operation was reported failed.
    Failed {
        /// Its id.
        id: MsgId,
    },
    /// The operation was rejected for good as a message to a user who does not exist.
    Rejected {
        /// Its id.
        id: MsgId,
    },
    /// The user was shown a message.
    Shown {
        /// Its id.
        id: MsgId,
    },
}

/// One entry of the chat history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatRecord {
    /// Virtual time, microseconds.
    pub at: u64,
    /// The client process (one life of a client; its client id).
    pub process: u64,
    /// The user behind it (index; the impostor is the last).
    pub user: usize,
    /// What happened.
    pub what: ChatHappening,
}

impl History {
    /// Appends a record.
    pub fn push(&mut self, at: u64, node: usize, what: Happening) {
        self.records.push(Record { at, node, what });
    }

    /// Appends a chat record.
    pub fn push_chat(&mut self, at: u64, process: u64, user: usize, what: ChatHappening) {
        self.chat.push(ChatRecord { at, process, user, what });
    }
}
