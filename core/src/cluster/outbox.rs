//! Everything a server sends leaves through here: encoding into envelopes, packing broadcast
//! chat into batches, discovery datagrams, and routing the chat layer's output.

use super::*;

impl Server {
    pub(super) fn send(&mut self, to: SocketAddr, body: Body, retransmit: bool) {
        let epoch = self.epoch();
        self.send_epoch(Dest::Addr(to), epoch, body, retransmit);
    }

    pub(super) fn send_epoch(&mut self, dest: Dest, epoch: u64, body: Body, retransmit: bool) {
        let kind = body.kind();
        let env = Envelope { cluster: self.durable.cluster, from: self.me.node, epoch, body };
        // Every message kind is bounded by construction (views hold at most MAX_MEMBERS); one
        // longer than a datagram (a long chat message, or a batch holding one) leaves in
        // fragments, and one over MAX_MESSAGE is counted, not sent.
        match self.datagrams(&Packet::Peer(env)) {
            Some(all) => self.out.extend(all.into_iter().map(|(bytes, part)| {
                let kind = if part { "fragment" } else { kind };
                Transmit { dest, bytes, kind, retransmit, channel: None }
            })),
            None => self.counters.invalid += 1,
        }
    }

    /// The datagrams that carry `packet` (see [`wire::encode_datagrams`]), each with whether
    /// it is a fragment.
    fn datagrams(&mut self, packet: &Packet) -> Option<Vec<(Vec<u8>, bool)>> {
        let all = wire::encode_datagrams(packet, self.next_nonce)?;
        let part = all.len() > 1;
        if part {
            self.next_nonce = self.next_nonce.wrapping_add(1);
        }
        Some(all.into_iter().map(|b| (b, part)).collect())
    }

    /// Sends one body to many peers, encoded once.
    pub(super) fn send_all(&mut self, to: &[SocketAddr], body: Body) {
        let Some((&last, rest)) = to.split_last() else { return };
        let first = self.out.len();
        self.send(last, body, false);
        let sent: Vec<Transmit> = self.out.range(first..).cloned().collect();
        for &addr in rest {
            self.out.extend(sent.iter().map(|t| Transmit { dest: Dest::Addr(addr), ..t.clone() }));
        }
    }

    /// Sends a discovery datagram to the group (if enabled) and every join address.
    pub(super) fn send_discovery(&mut self, body: Body) {
        let epoch = self.epoch();
        if self.cfg.discovery {
            self.send_epoch(Dest::Group, epoch, body.clone(), false);
        }
        for addr in self.cfg.join.clone() {
            if addr != self.me.addr {
                self.send_epoch(Dest::Addr(addr), epoch, body.clone(), false);
            }
        }
    }

    /// Sends a reply to a client (or to `ringchat status`).
    pub(super) fn send_client(&mut self, to: ClientPath, msg: ServerMsg) {
        let kind = msg.kind();
        let budget = match self.answering {
            Some(_) if self.cfg.plant == Some(PlantedBug::AnswerAnyone) => usize::MAX, // the planted bug
            Some((from, size)) if from == to && super::unproven::is_direct_answer(&msg) => size,
            _ => usize::MAX,
        };
        match self.datagrams(&Packet::ToClient(msg)) {
            Some(all) if all.iter().map(|(b, _)| b.len()).sum::<usize>() > budget => self.counters.reply_too_large += 1,
            Some(all) => self.out.extend(all.into_iter().map(|(bytes, part)| {
                let kind = if part { "fragment" } else { kind };
                Transmit { dest: Dest::Addr(to.addr), bytes, kind, retransmit: false, channel: to.channel }
            })),
            None => self.counters.invalid += 1,
        }
    }

    /// Moves the queued broadcast chat messages into datagrams, as many per datagram as fit.
    pub(super) fn pack_chat(&mut self) {
        // Room for the envelope and the batch framing around the messages.
        const BUDGET: usize = crate::limits::MAX_DATAGRAM - 96;
        for (addr, msgs) in std::mem::take(&mut self.chat_queue) {
            let mut batch: Vec<CausalMsg> = Vec::new();
            let mut size = 0;
            for msg in msgs {
                let len = postcard::serialize_with_flavor(&msg, postcard::ser_flavors::Size::default()).unwrap_or(usize::MAX);
                if !batch.is_empty() && (size + len > BUDGET || batch.len() == crate::limits::MAX_BATCH) {
                    self.send_batch(addr, std::mem::take(&mut batch));
                    size = 0;
                }
                size += len;
                batch.push(msg);
            }
            if !batch.is_empty() {
                self.send_batch(addr, batch);
            }
        }
    }

    pub(super) fn send_batch(&mut self, addr: SocketAddr, mut msgs: Vec<CausalMsg>) {
        let body = match msgs.len() {
            1 => Body::Chat { msg: msgs.pop().expect("one message") }, // invariant: len is 1
            _ => Body::ChatBatch { msgs },
        };
        self.send(addr, body, false);
    }

    /// Runs a chat-layer step with a snapshot of this server's membership, then sends its output.
    pub(super) fn with_chat(&mut self, f: impl FnOnce(&mut ChatServer, &mut ChatDurable, &ChatCtx, &mut Vec<ChatOut>)) {
        let leader = self.leader.and_then(|l| self.addr_of(l));
        let epoch = self.epoch();
        let view = if self.phase == Phase::Member { self.committed.as_ref().filter(|v| v.contains(self.me.node)) } else { None };
        let cx = ChatCtx { me: self.me.node, now: self.now, view, leader, is_leader: self.role == Role::Leader, epoch };
        // Room for a typical input's output (copies, a show, a report) without regrowing.
        let mut out = Vec::with_capacity(16);
        f(&mut self.chat, &mut self.durable.chat, &cx, &mut out);
        self.chat.flush(&mut self.durable.chat, &cx, &mut out);
        for o in out {
            match o {
                ChatOut::Peer(addr, Body::Chat { msg }, false) => match self.chat_queue.iter_mut().find(|(a, _)| *a == addr) {
                    Some((_, msgs)) => msgs.push(msg),
                    None => self.chat_queue.push((addr, vec![msg])),
                },
                ChatOut::Peer(addr, body, retransmit) => self.send(addr, body, retransmit),
                ChatOut::Client(addr, msg) => self.send_client(addr, msg),
            }
        }
    }
}
