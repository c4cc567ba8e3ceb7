//! Key files: the key ring file (`--key-file`), key ids as `ringchat keys use|remove` take
//! them, and the seal's memory file kept beside the state file. Properties: no panic; a ring
//! that parses renders back to itself and keeps its bounds through edits; a memory that
//! decodes restores a seal that remembers it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringchat_core::seal::keyring::MAX_KEYS;
use ringchat_core::seal::{ChaChaPoly, ClusterKey, KeyRing, Seal};
use ringchat_core::{NodeId, ServerId};

fuzz_target!(|data: &[u8]| {
    if let Ok(memory) = ringchat_net::keys::decode_memory(data) {
        let me = NodeId { id: ServerId(1), incarnation: 1 };
        let seal = Seal::<ChaChaPoly>::new(me, ringchat_fuzz::ring(), Some(&memory));
        let again = seal.memory();
        assert!(again.senders.len() <= memory.senders.len());
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = ringchat_net::keys::parse_id(text);
    let _ = ClusterKey::from_hex(text);
    let Ok(mut ring) = KeyRing::parse(text) else { return };
    assert_eq!(KeyRing::parse(&ring.render()), Ok(ring.clone()));
    // Edits driven by the text's bytes keep a ring of 1..=MAX_KEYS keys with its primary in it.
    for (i, b) in data.iter().enumerate().take(64) {
        let k = ClusterKey::new([*b; 32]);
        let _ = match b % 3 {
            0 => ring.install(k),
            1 => ring.use_key(ring.keys()[i % ring.keys().len()].id()),
            _ => ring.remove(ring.keys()[i % ring.keys().len()].id()),
        };
        assert!((1..=MAX_KEYS).contains(&ring.keys().len()));
        assert!(ring.get(ring.primary().id()).is_some());
    }
    assert_eq!(KeyRing::parse(&ring.render()), Ok(ring));
});
