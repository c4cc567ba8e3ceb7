//! The run's fingerprint and readable trace: a stable hash of every processed event, trace lines, fault counts.

use super::World;
use crate::report::TraceLine;

/// A stable 64-bit hash of the run in the FNV family (no std hasher, whose output may change between releases).
#[derive(Clone, Copy)]
pub(super) struct TraceHash(pub(super) u64);

impl TraceHash {
    pub(super) fn new() -> Self {
        TraceHash(0xcbf2_9ce4_8422_2325)
    }
    pub(super) fn bytes(&mut self, b: &[u8]) {
        // FNV-style over 8-byte words (then the tail), with a final length mix.
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0 ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(23);
        }
        for &x in chunks.remainder() {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 ^= b.len() as u64;
    }
    pub(super) fn u64(&mut self, x: u64) {
        self.bytes(&x.to_le_bytes());
    }
}

impl World {
    /// Records a trace line (when tracing): `actor` and `peer` are endpoints (a server slot, or
    /// the number of servers plus a client slot), `kind` what `--trace-kind` filters on.
    pub(super) fn trace_line(&mut self, actor: Option<usize>, peer: Option<usize>, kind: &'static str, text: impl FnOnce() -> String) {
        if self.cfg.trace {
            let n = self.nodes.len();
            let slots = [actor, peer].into_iter().flatten().filter(|&e| e < n).collect();
            let line = TraceLine {
                at_us: self.now,
                who: actor.map(|e| self.name_of(e)),
                slots,
                peer: peer.map(|e| self.name_of(e)),
                kind,
                text: text(),
            };
            self.trace.push(line);
        }
    }

    /// The name of endpoint `e`: a server's current (or last) life, `d1dacd6f/3`; a client
    /// process, `u3 (client 400000001)`.
    pub(super) fn name_of(&self, e: usize) -> String {
        let n = self.nodes.len();
        if e < n {
            let node = &self.nodes[e];
            match node.server.as_ref().map(|s| s.node()).or(node.life) {
                Some(life) => life.to_string(),
                None => node.id.to_string(),
            }
        } else if let Some(p) = self.chat.procs.get(e - n) {
            let id = p.client.as_ref().map_or(((e - n) as u64 + 1) << 32 | p.life, |c| c.id());
            format!("{} ({})", p.name, crate::names::client(id))
        } else {
            format!("endpoint {e}")
        }
    }

    pub(super) fn count_fault(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_insert(0) += 1;
    }
}
