//! The recorded history of a run: every protocol event and every node fault,
//! in the order the simulator processed them.

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
}

impl History {
    /// Appends a record.
    pub fn push(&mut self, at: u64, node: usize, what: Happening) {
        self.records.push(Record { at, node, what });
    }
}
