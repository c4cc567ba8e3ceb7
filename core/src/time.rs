//! Time as a plain value the driver passes in: the core never reads a clock.

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
