//! The wire decoder: every datagram kind (server to server, client to server, server to
//! client). Properties: no panic; a decoded datagram encodes within the size limit and
//! decodes back to itself; the cheap prefix reads agree with the full decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringchat_core::wire::{self, Packet};

fuzz_target!(|data: &[u8]| {
    let sender = wire::peer_sender(data);
    let Ok(packet) = wire::decode(data) else { return };
    let again = wire::encode(&packet).expect("a decoded datagram fits again");
    assert_eq!(wire::decode(&again), Ok(packet.clone()));
    match &packet {
        Packet::Peer(env) => {
            assert!(wire::is_peer(data));
            assert_eq!(sender, Some(env.from));
            let _ = env.body.kind();
        }
        Packet::FromClient(m) => {
            assert!(!wire::is_peer(data));
            let _ = m.kind();
        }
        Packet::ToClient(m) => {
            assert!(!wire::is_peer(data));
            let _ = m.kind();
        }
    }
});
