//! Time: physical time as a plain value the driver passes in (the core never reads a
//! clock), and logical time as vector clocks.

use serde::{Deserialize, Serialize};

/// A point in time, in microseconds since an origin chosen by the driver.
///
/// The simulator starts at zero; the tokio driver maps its monotonic clock onto it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Instant(pub u64);

impl Instant {
    /// The instant `ms` milliseconds later (saturating).
    pub fn plus_ms(self, ms: u64) -> Instant {
        Instant(self.0.saturating_add(ms.saturating_mul(1000)))
    }
    /// The instant `us` microseconds later (saturating).
    pub fn plus_us(self, us: u64) -> Instant {
        Instant(self.0.saturating_add(us))
    }
    /// Microseconds elapsed since `earlier` (zero if `earlier` is later).
    pub fn since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
    /// Whole milliseconds since the origin.
    pub fn as_ms(self) -> u64 {
        self.0 / 1000
    }
}

/// A vector clock: origin (a server life) → number of its messages delivered. Absent = 0.
/// A `BTreeMap`, so iterating it is deterministic.
pub type Vc = std::collections::BTreeMap<crate::id::NodeId, u64>;

/// Whether `a` ≥ `b` componentwise.
pub fn dominates(a: &Vc, b: &Vc) -> bool {
    b.iter().all(|(k, v)| a.get(k).copied().unwrap_or(0) >= *v)
}

/// Raises `a` to the componentwise maximum of `a` and `b`.
pub fn merge(a: &mut Vc, b: &Vc) {
    for (k, v) in b {
        let e = a.entry(*k).or_insert(0);
        *e = (*e).max(*v);
    }
}
