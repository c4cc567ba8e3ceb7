//! Reassembly of fragmented messages: a sequence of fragments from a few sources, with time
//! moving, each either made up from the input or cut from a real long message, then whatever
//! completes decoded as the server and the client do. Properties: no panic; the reassembler
//! never holds more than its bounds; a completed message is exactly as long as its fragments
//! said, and one cut from a real message comes back as that message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringchat_core::limits::{FRAGMENT_BYTES, MAX_FRAGMENTS, MAX_PARTIALS};
use ringchat_core::wire::{self, ClientMsg, Fragment, MsgId, Op, Packet, Reassembler, Target};
use ringchat_core::Instant;
use ringchat_fuzz::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    let real = Packet::FromClient(ClientMsg::Send {
        id: MsgId { client: 1, seq: 1 },
        op: Op::Chat { to: Target::User("u".into()), text: "x".repeat(3_000) },
        ctx: Default::default(),
        retry: false,
        left_ms: 1,
    });
    let real_parts = wire::encode_datagrams(&real, 9).expect("fits");
    let mut r = Reassembler::<u8>::default();
    let mut now = Instant(0);
    while !c.0.is_empty() {
        let op = c.u8();
        now = now.plus_us(u64::from(c.u8()) * 20_000);
        let source = op & 3;
        let f = if op & 4 == 0 {
            // A fragment of the real message (index from the input).
            let i = usize::from(c.u8()) % real_parts.len();
            wire::decode(&real_parts[i]).ok().and_then(|p| p.fragment().cloned()).expect("a fragment")
        } else {
            let (nonce, index, count) = (u64::from(c.u8() & 7), c.u8() % 10, c.u8() % 10);
            let len = (usize::from(c.u8()) * 8).min(FRAGMENT_BYTES + 1);
            let fill = c.u8();
            Fragment { nonce, index, count, bytes: vec![fill; len] }
        };
        let carrier = Packet::FromClient(ClientMsg::Fragment(f.clone()));
        if let Ok(Some(whole)) = r.add(now, &source, f) {
            assert!(whole.len() <= MAX_FRAGMENTS * FRAGMENT_BYTES);
            if let Ok(p) = wire::decode_reassembled(&whole, &carrier) {
                assert!(p.fragment().is_none());
                if op & 4 == 0 {
                    assert_eq!(p, real, "a real message came back other than it left");
                }
            }
        }
        assert!(r.len() <= MAX_PARTIALS);
    }
});
