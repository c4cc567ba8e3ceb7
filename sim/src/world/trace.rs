//! The run's fingerprint and readable trace: a stable hash of every processed event, trace lines, fault counts.

use super::World;

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
    pub(super) fn trace_line(&mut self, node: Option<usize>, text: impl FnOnce() -> String) {
        if self.cfg.trace {
            let who = node.map_or("  ".to_string(), |i| format!("n{i}"));
            self.trace.push(format!("{:>11.3}ms {who} {}", self.now as f64 / 1000.0, text()));
        }
    }

    pub(super) fn count_fault(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_insert(0) += 1;
    }
}
