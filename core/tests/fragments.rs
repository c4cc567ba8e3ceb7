//! Reassembly under any schedule the network can make: messages of any length cut into
//! fragments, from a few sources, delivered in any order, some lost, some twice. Whatever
//! happens, what comes out is exactly the messages all of whose fragments arrived (each once,
//! byte for byte), and never anything else.

use proptest::prelude::*;
use ringchat_core::limits::{FRAGMENT_BYTES, MAX_MESSAGE, MAX_PARTIALS_PER_SOURCE};
use ringchat_core::wire::fragment::{split, Reassembler};
use ringchat_core::Instant;
use std::collections::BTreeSet;

/// A message of `len` bytes that differs from every other (source, nonce).
fn message(source: u8, nonce: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64).wrapping_mul(2654435761).wrapping_add(nonce * 31 + u64::from(source)) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn out_comes_exactly_each_message_whose_fragments_all_arrived(
        lens in prop::collection::vec((0u8..3, FRAGMENT_BYTES + 1..=MAX_MESSAGE), 1..MAX_PARTIALS_PER_SOURCE),
        order in prop::collection::vec(any::<u32>(), 64),
        fate in prop::collection::vec(0u8..10, 64),
    ) {
        // Every (source, nonce) message cut into fragments; each fragment lost (fate 0),
        // duplicated (fate 1) or delivered once, in a shuffled order.
        let msgs: Vec<(u8, u64, Vec<u8>)> =
            lens.iter().enumerate().map(|(n, &(s, len))| (s, n as u64, message(s, n as u64, len))).collect();
        let mut wire = Vec::new();
        let mut lost = BTreeSet::new();
        let mut k = 0;
        for (s, nonce, m) in &msgs {
            for f in split(m, *nonce).expect("within bounds") {
                match fate[k % fate.len()] {
                    0 => { lost.insert((*s, *nonce)); }
                    1 => { wire.push((*s, f.clone())); wire.push((*s, f)); }
                    _ => wire.push((*s, f)),
                }
                k += 1;
            }
        }
        let mut keyed: Vec<(u32, (u8, ringchat_core::wire::Fragment))> =
            wire.into_iter().enumerate().map(|(i, x)| (order[i % order.len()] ^ i as u32, x)).collect();
        keyed.sort_by_key(|(key, _)| *key);
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        for (_, (s, f)) in keyed {
            if let Some(whole) = r.add(Instant(0), &s, f).expect("honest fragments are accepted") {
                got.push((s, whole));
            }
        }
        let mut want: Vec<(u8, Vec<u8>)> =
            msgs.into_iter().filter(|(s, n, _)| !lost.contains(&(*s, *n))).map(|(s, _, m)| (s, m)).collect();
        got.sort();
        want.sort();
        prop_assert_eq!(got, want);
        prop_assert_eq!(r.dropped(), 0, "fewer messages than a source's bound: nothing evicted");
    }
}
