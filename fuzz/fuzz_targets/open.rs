//! The sealed-datagram opener: any bytes from the LAN, opened by a server holding the fuzz key
//! (with the real cipher and with the simulator's stand-in). Properties: no panic; what opens
//! is a server datagram in its header's sender's name; a plain server datagram sealed by its
//! sender opens to the same bytes, exactly once, and not for another receiver. The client
//! channel too: what a server opens as a client datagram is never a server datagram and opens
//! once; what a client opens came sealed for its channel; a client datagram sealed on a
//! channel opens at a server to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringchat_core::seal::channel::ClientChannel;
use ringchat_core::seal::{ChaChaPoly, Inbound, Seal, SealError, StandIn};
use ringchat_core::wire;
use ringchat_core::{NodeId, ServerId};
use ringchat_fuzz::{a_life, addr, ring};

fuzz_target!(|data: &[u8]| {
    let me = NodeId { id: ServerId(u128::MAX - 1), incarnation: 1 };
    let _ = Seal::<StandIn>::new(me, ring(), None).open(addr(1), data);
    let mut receiver = Seal::<ChaChaPoly>::new(me, ring(), None);
    match receiver.open(addr(1), data) {
        Ok(Inbound::Opened(plain, sender)) => {
            assert!(wire::peer_sender(&plain).is_some_and(|s| s.id == sender.id && s.incarnation <= sender.incarnation));
            let _ = wire::decode(&plain);
            assert_eq!(receiver.open(addr(1), data), Err(SealError::Replay), "a datagram opened twice");
        }
        Ok(Inbound::Plain(b)) => {
            assert!(!wire::is_peer(b), "a plain server datagram got through");
            assert!(!matches!(wire::decode(b), Ok(wire::Packet::Peer(_))), "a plain server datagram got through as client traffic");
        }
        Ok(Inbound::Client(plain, path, _)) => {
            assert!(!wire::is_peer(&plain), "a server datagram got through a client channel");
            assert!(path.channel.is_some());
            let _ = wire::decode(&plain);
            assert_eq!(receiver.open(addr(1), data), Err(SealError::Replay), "a client datagram opened twice");
        }
        Err(_) => {}
    }
    // A client's side: any bytes from the LAN, opened by a channel to the fuzz cluster.
    let mut client = ClientChannel::<ChaChaPoly>::new(ring().identity_public(), [9; 32], None);
    if let Ok(plain) = client.open(data) {
        let _ = wire::decode(&plain);
        assert_eq!(client.open(data), Err(SealError::Replay), "an answer opened twice");
    }
    if !wire::is_peer(data) && !data.is_empty() && data.len() <= ringchat_core::limits::MAX_DATAGRAM {
        let sealed = client.seal(data);
        let mut b = Seal::<ChaChaPoly>::new(me, ring(), None);
        match b.open(addr(3), &sealed) {
            Ok(Inbound::Client(plain, path, false)) => {
                assert_eq!((plain.as_slice(), path.channel), (data, Some(client.id())));
            }
            other => panic!("a client datagram sealed on its channel did not open: {other:?}"),
        }
    }
    // The sender's side: seal the bytes as the server they name would, and open them.
    if let Some(sender) = wire::peer_sender(data).filter(|s| a_life(*s) && s.id != me.id) {
        let sealed = Seal::<ChaChaPoly>::new(sender, ring(), None).seal(data.to_vec(), Some(me));
        let mut b = Seal::<ChaChaPoly>::new(me, ring(), None);
        assert_eq!(b.open(addr(2), &sealed), Ok(Inbound::Opened(data.to_vec(), sender)));
        assert_eq!(b.open(addr(2), &sealed), Err(SealError::Replay));
        let other = NodeId { incarnation: 2, ..me };
        let mut c = Seal::<ChaChaPoly>::new(other, ring(), None);
        assert_eq!(c.open(addr(2), &sealed), Err(SealError::WrongReceiver));
    }
});
