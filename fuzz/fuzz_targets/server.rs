//! A server fed a sequence of datagrams from the LAN, through the seal as the network runtime
//! feeds it (peer datagrams are sealed by the server they name, with the cluster key; client
//! datagrams stay plain), with time moving between them. The input's first 16 bytes are the
//! server's id (so recorded traffic to a simulated server reaches it as itself), then frames
//! (see `ringchat_fuzz::frames`). Property: no panic, whatever arrives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringchat_core::seal::{drive, ChaChaPoly, Seal};
use ringchat_core::wire;
use ringchat_core::{Instant, NodeId, Server, ServerConfig, ServerId};
use ringchat_fuzz::{a_life, addr, frames, ring, Cursor};
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    let id = u128::from_be_bytes(c.take::<16>()).max(1);
    let me = addr(0);
    let cfg = ServerConfig { sealed: true, ..ServerConfig::default() };
    let mut server = Server::new(cfg, ServerId(id), me, None, 1, Instant(0));
    let mut seal = Seal::<ChaChaPoly>::new(server.node(), ring(), None);
    let mut senders: BTreeMap<NodeId, Seal<ChaChaPoly>> = BTreeMap::new();
    let mut now = Instant(0);
    server.handle_timeout(now);
    for f in frames(c.0) {
        now = now.plus_ms(f.dt_ms as u64);
        for _ in 0..8 {
            if server.poll_timeout().is_none_or(|t| t > now) {
                break;
            }
            server.handle_timeout(now);
            while drive::poll_transmit(&mut server, &mut seal).is_some() {}
        }
        let bytes = match wire::peer_sender(f.bytes).filter(|s| a_life(*s) && s.id.0 != id) {
            Some(s) if senders.len() < 64 || senders.contains_key(&s) => {
                let sealer = senders.entry(s).or_insert_with(|| Seal::new(s, ring(), None));
                sealer.seal(f.bytes.to_vec(), None)
            }
            _ => f.bytes.to_vec(),
        };
        drive::feed(&mut server, &mut seal, now, addr(f.from), &bytes);
        while drive::poll_transmit(&mut server, &mut seal).is_some() {}
        while server.poll_event().is_some() {}
    }
    let _ = server.durable();
});
