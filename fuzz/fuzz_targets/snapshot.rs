//! State transfer: a snapshot's bytes arrive as chunks from the peer being fetched from, are
//! reassembled, decoded, checked, and installed over a server's chat state the way a server
//! installs one; then the state is used (acknowledgements, carry-over, rooms, trimming, a new
//! message). Property: no panic, whatever the snapshot says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringchat_core::chat::server::ChatDurable;
use ringchat_core::chat::state::Plants;
use ringchat_core::chat::transfer::{Got, Transfer};
use ringchat_core::limits::{CHUNK, MAX_CHUNKS};
use ringchat_core::wire::{CausalMsg, Item};
use ringchat_core::{Instant, NodeId, ServerId};
use ringchat_fuzz::addr;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let total = data.len().div_ceil(CHUNK).max(1);
    if total > MAX_CHUNKS as usize {
        return;
    }
    let mut t = Transfer::default();
    let peer = addr(1);
    let _ = t.start(peer, Instant(0));
    let mut got = None;
    for index in 0..total {
        let bytes = data[(index * CHUNK).min(data.len())..((index + 1) * CHUNK).min(data.len())].to_vec();
        match t.chunk(peer, 7, index as u32, total as u32, bytes, Instant(1)) {
            Got::Done(s) => got = Some(s),
            Got::Ask(..) | Got::Nothing => {}
        }
    }
    let Some(snapshot) = got else { return };
    let me = NodeId { id: ServerId(u128::MAX - 1), incarnation: 1 };
    let mut d = ChatDurable::default();
    // Something of our own beyond the cut, received again after the install.
    let mine = d.causal.broadcast(me, Item::Login { user: "zed".into(), fence: 1 });
    let Some(again) = d.causal.install(snapshot.delivered, snapshot.retired, snapshot.store) else { return };
    d.state = snapshot.state;
    for msg in again.into_iter().chain(mine) {
        for m in d.causal.receive(msg, false) {
            d.state.apply(m.key(), &m.item, Plants::default());
        }
    }
    // Use what was installed.
    let _ = d.state.carry(|k| d.causal.get(k).map(|m| (*m.item).clone()));
    let _: Vec<_> = d.state.rooms().map(|(r, m)| (r.to_string(), m.len())).collect();
    let delivered = d.causal.delivered.clone();
    let _ = d.causal.missing(&delivered);
    let _ = d.causal.awaited();
    let _ = d.causal.holdback_heads();
    let _ = d.causal.retirable(me.id, &[me]);
    let next = d.causal.value(me) + 1;
    let item = Item::Chat {
        id: ringchat_core::wire::MsgId { client: 1, seq: 1 },
        from: "zed".into(),
        room: None,
        to: vec!["zed".into()],
        cut: Default::default(),
        text: "hi".into(),
    };
    let msg = CausalMsg { origin: me, seq: next, deps: delivered, item: Arc::new(item) };
    for m in d.causal.receive(msg, false) {
        d.state.apply(m.key(), &m.item, Plants::default());
    }
    for (user, ids) in d.state.inboxes() {
        let key = (me, d.causal.value(me) + 1);
        d.state.apply(key, &Item::Ack { user, ids }, Plants::default());
    }
    let state = d.state.clone();
    d.causal.trim(me.id, &[me.id], |k| state.pinned(k));
    let _ = postcard::to_stdvec(&d.state);
});
