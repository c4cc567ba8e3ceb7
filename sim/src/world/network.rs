//! The network model: per-link latency with jitter, loss, duplication and partitions; delivery of
//! datagrams to servers (a paused server queues them) and to clients.

use super::{Item, World};
use rand::Rng;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The address of server `i` in the simulated LAN.
pub fn server_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8)), 7000)
}

impl World {
    pub(super) fn route(&mut self, from: usize, to: usize, bytes: &[u8], kind: &'static str) {
        // A client sits on the side of its home server.
        let n = self.nodes.len();
        let side = |e: usize| if e < n { e } else { (e - n) % n };
        if self.blocked[side(from)][side(to)] {
            self.count_fault("drop_partition");
            if self.cfg.trace {
                let peer = self.name_of(to);
                self.trace_line(Some(from), Some(to), kind, || format!("cut {kind} to {peer}"));
            }
            return;
        }
        if self.rates.loss > 0.0 && self.rng.random_bool(self.rates.loss) {
            self.count_fault("drop_loss");
            if self.cfg.trace {
                let peer = self.name_of(to);
                self.trace_line(Some(from), Some(to), kind, || format!("lose {kind} to {peer}"));
            }
            return;
        }
        let copies = if self.rates.duplicate > 0.0 && self.rng.random_bool(self.rates.duplicate) {
            self.count_fault("duplicate");
            2
        } else {
            1
        };
        for _ in 0..copies {
            let latency = self.rates.latency_us + self.rng.random_range(0..=self.rates.jitter_us);
            let item = Item::Deliver { to, from, bytes: bytes.to_vec(), kind, sent_at: self.now };
            self.queue.push(self.now + latency, item);
        }
    }

    pub(super) fn deliver(&mut self, to: usize, from: usize, bytes: Vec<u8>, kind: &'static str, sent_at: u64) {
        self.hash.u64(((to as u64) << 32) | from as u64);
        self.hash.bytes(&bytes);
        if let Some(tap) = &mut self.tap {
            tap(self.now, from, to, &bytes);
        }
        let n = self.nodes.len();
        if to >= n {
            return self.client_deliver(to - n, from, &bytes);
        }
        if from >= n {
            let node = &mut self.nodes[to];
            if node.server.is_none() || node.paused {
                return;
            }
            let from_addr = self.chat.procs[from - n].addr;
            self.feed(to, from_addr, &bytes);
            return self.drain(to);
        }
        let node = &mut self.nodes[to];
        if node.server.is_none() {
            return;
        }
        let link = from * self.nodes.len() + to;
        if from < n && sent_at < self.last_delivery[link] {
            self.count_fault("reordered");
        }
        self.last_delivery[link] = self.last_delivery[link].max(sent_at);
        let node = &mut self.nodes[to];
        if node.paused {
            if node.inbox.len() < 512 {
                node.inbox.push((from, bytes));
            }
            return;
        }
        if self.cfg.trace {
            let peer = self.name_of(from);
            // A chat_need shows what it asks for when the datagram is plain (an unsealed run).
            let need = match ringchat_core::wire::decode(&bytes) {
                Ok(ringchat_core::wire::Packet::Peer(env)) if kind == "chat_need" => match env.body {
                    ringchat_core::wire::Body::ChatNeed { origin, from, to } => Some(format!(": {origin} #{from}..#{to}")),
                    _ => None,
                },
                _ => None,
            };
            let text = format!("recv {kind} from {peer} ({}B){}", bytes.len(), need.unwrap_or_default());
            self.trace_line(Some(to), Some(from), kind, || text);
        }
        let from_addr = self.nodes[from].addr;
        if let Some(ringchat_core::seal::drive::Fed::Opened(_)) = self.feed(to, from_addr, &bytes) {
            self.outsider_overhear_accepted(to, &bytes);
        }
        self.drain(to);
    }
}
