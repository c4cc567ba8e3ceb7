//! The client state machine fed a sequence of datagrams from the LAN (answers, shows, forged
//! or mangled ones), with time moving between them. The input's first 8 bytes are the client's
//! id (so recorded traffic to a simulated client reaches it as itself), then frames (see
//! `ringchat_fuzz::frames`). Property: no panic, whatever arrives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringchat_core::client::{Client, ClientConfig};
use ringchat_core::wire::{Op, Target};
use ringchat_core::Instant;
use ringchat_fuzz::{addr, frames, Cursor};

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    let id = c.u64();
    let cfg = ClientConfig { servers: (0..5).map(addr).collect(), ..ClientConfig::default() };
    let mut client = Client::new(cfg, id, 0, Instant(0));
    let mut now = Instant(0);
    let _ = client.login(now, "fuzz", ringchat_core::user::UserSecret::from_seed([7; 32]));
    for (i, f) in frames(c.0).into_iter().enumerate() {
        now = now.plus_ms(f.dt_ms as u64);
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        client.handle_datagram(now, addr(f.from), f.bytes);
        if i % 8 == 3 {
            let _ = client.submit(now, Op::Chat { to: Target::Room("r".into()), text: "hi".into() });
        }
        while client.poll_transmit().is_some() {}
        while client.poll_event().is_some() {}
    }
});
