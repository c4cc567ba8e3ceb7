//! The state file loader (`--state FILE`): any bytes on disk (a torn write, a disk error, a
//! file from another program), decoded, and if they decode, a server started from them and
//! run for a while. Property: no panic; a refused file is a one-line error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringchat_core::{Instant, Server, ServerConfig};
use ringchat_fuzz::addr;

fuzz_target!(|data: &[u8]| {
    let d = match ringchat_net::state::decode(data) {
        Ok(loaded) => loaded.durable,
        Err(e) => {
            assert!(!e.contains('\n'), "{e}");
            return;
        }
    };
    let mut server = Server::new(ServerConfig::default(), d.id, addr(0), Some(d), 1, Instant(0));
    let mut now = Instant(0);
    for _ in 0..50 {
        server.handle_timeout(now);
        while server.poll_transmit().is_some() {}
        while server.poll_event().is_some() {}
        now = server.poll_timeout().unwrap_or(now).max(now.plus_ms(1));
    }
    let _ = ringchat_net::state::encode(server.durable());
});
