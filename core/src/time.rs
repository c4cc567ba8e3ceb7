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

/// Bounds `vc` to `max` origins: when it names more, earlier lives of a server it names again
/// are dropped (they left the cluster, and servers retire their messages once every member
/// holds them), then the lowest incarnations.
pub fn keep_newest_lives(vc: &mut Vc, max: usize) {
    if vc.len() <= max {
        return;
    }
    let mut newest: std::collections::BTreeMap<crate::id::ServerId, u64> = std::collections::BTreeMap::new();
    for o in vc.keys() {
        let e = newest.entry(o.id).or_insert(0);
        *e = (*e).max(o.incarnation);
    }
    vc.retain(|o, _| newest.get(&o.id) == Some(&o.incarnation));
    while vc.len() > max {
        let Some(oldest) = vc.keys().min_by_key(|o| (o.incarnation, o.id)).copied() else { break };
        vc.remove(&oldest);
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;
    use crate::id::{NodeId, ServerId};

    #[test]
    fn a_context_over_its_bound_keeps_the_newest_life_of_each_server() {
        let life = |s: u128, i: u64| NodeId { id: ServerId(s), incarnation: i };
        let mut vc: Vc = [(life(1, 1), 4), (life(1, 2), 1), (life(2, 5), 3), (life(3, 1), 2)].into_iter().collect();
        keep_newest_lives(&mut vc, 4);
        assert_eq!(vc.len(), 4, "within the bound nothing is dropped");
        keep_newest_lives(&mut vc, 3);
        assert_eq!(vc.keys().copied().collect::<Vec<_>>(), vec![life(1, 2), life(2, 5), life(3, 1)]);
        keep_newest_lives(&mut vc, 2);
        assert_eq!(vc.keys().copied().collect::<Vec<_>>(), vec![life(1, 2), life(2, 5)], "then the lowest incarnation");
    }
}
