//! Measuring the servers' state sizes (every simulated second or so, and at each crash) for the
//! bounded-state check and the report's `resources`. Reads state only: a run is the same with or
//! without it.

use super::World;
use crate::resources;

impl World {
    /// Measures server `i` if it runs.
    pub(super) fn sample(&mut self, i: usize) {
        if let Some(s) = self.nodes[i].server.as_ref() {
            let r = resources::sample(s);
            self.meter.note(s.node(), self.now, &r);
        }
    }

    /// Measures every running server.
    pub(super) fn sample_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.sample(i);
        }
    }
}
