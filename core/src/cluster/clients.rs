//! What a server answers clients and `ringchat status`: status reports, assignment of a
//! client to servers, and the hand-off of chat requests to the chat layer.

use super::*;

impl Server {
    pub(super) fn handle_client(&mut self, from: ClientPath, operator: bool, msg: ClientMsg) {
        match msg {
            // A sealed cluster reports to operators only; an unsealed one to anyone, without
            // its clients' addresses.
            ClientMsg::Status if self.cfg.sealed && !operator => {
                self.send_client(from, ServerMsg::Refused { client: 0, reason: RefusalReason::OperatorOnly });
            }
            // The user proves the key on this channel: the signature binds the channel, so it
            // is worth nothing on another one (see `crate::user`).
            ClientMsg::Login { client, ref name, key, sig, .. }
                if self.cfg.plant != Some(PlantedBug::TrustAnyLogin) && !key.verifies_login(&from.binding(), client, name, &sig) =>
            {
                self.counters.bad_signature += 1;
                let reason = "the login's signature does not verify".to_string();
                self.send_client(from, ServerMsg::LoginRefused { client, reason });
            }
            // A text over the bound is rejected whole, naming the bound (the client checks it
            // before sending: only one that skipped the check gets here).
            ClientMsg::Send { id, op: crate::wire::Op::Chat { ref text, .. }, .. } if text.len() > crate::limits::MAX_TEXT => {
                self.counters.invalid += 1;
                let reason = crate::wire::Rejection::TextTooLong { max: crate::limits::MAX_TEXT as u32 };
                self.send_client(from, ServerMsg::Rejected { id, reason });
            }
            ClientMsg::Identity => {
                if let Some(public) = self.cfg.identity {
                    self.send_client(from, ServerMsg::Identity { public });
                }
            }
            ClientMsg::Status => {
                let mut report = self.status().report();
                // The answer fits the request (see `unproven`): what is left of it after the
                // fixed part is shared among the lists.
                let planted = self.cfg.plant == Some(PlantedBug::AnswerAnyone);
                let room = self
                    .answering
                    .filter(|_| !planted)
                    .map_or(crate::limits::MAX_DATAGRAM, |(_, size)| size)
                    .min(crate::limits::MAX_DATAGRAM);
                let base =
                    wire::encode(&Packet::ToClient(ServerMsg::Status(report.clone()))).map_or(crate::limits::MAX_DATAGRAM, |b| b.len());
                self.chat.fill_status(&self.durable.chat, &mut report, room.saturating_sub(base + 16), operator);
                self.send_client(from, ServerMsg::Status(report));
            }
            ClientMsg::Find { client } => {
                // Only a member of an installed view answers (see `assign`).
                let view = if self.phase == Phase::Member { self.committed.as_ref() } else { None };
                let (me, now, timeout) = (self.me.node, self.now, self.suspect_us());
                if let Some(servers) = view.and_then(|v| assign::assign(client, v, me, |n| self.fd.is_suspected(n, now, timeout))) {
                    self.send_client(from, ServerMsg::Assign { client, servers });
                }
            }
            msg => self.with_chat(|c, d, cx, out| c.on_client(d, cx, from, msg, out)),
        }
    }

    /// A snapshot of the server's state.
    pub fn status(&self) -> Status {
        let timeout = self.cfg.suspect_ms * 1000;
        let members = self
            .latest
            .iter()
            .flat_map(|v| v.members.iter())
            .map(|m| {
                let me = m.node.id == self.me.node.id;
                MemberReport {
                    member: *m,
                    alive: me || !self.fd.is_suspected(m.node, self.now, timeout),
                    heard_ms_ago: if me { None } else { self.fd.last_heard(m.node).map(|t| self.now.since(t) / 1000) },
                }
            })
            .collect();
        Status {
            node: self.me.node,
            addr: self.me.addr,
            cluster: self.durable.cluster,
            phase: format!("{:?}", self.phase).split([' ', '{']).next().unwrap_or("").to_string(),
            role: self.role,
            epoch: self.epoch(),
            leader: self.leader,
            committed: self.committed.clone(),
            members,
            sealed: self.cfg.sealed,
            counters: self.counters.clone(),
            uptime_ms: self.now.since(self.started) / 1000,
            build: self.cfg.build.clone(),
        }
    }
}

impl Status {
    /// The report `ringchat status` is sent of this snapshot.
    pub fn report(&self) -> StatusReport {
        let s = self;
        StatusReport {
            node: s.node,
            cluster: s.cluster,
            phase: s.phase.clone(),
            is_leader: s.role == Role::Leader,
            epoch: s.epoch,
            leader: s.leader,
            view_id: s.committed.as_ref().map(|v| v.stamp.id),
            members: s.members.clone(),
            sealed: s.sealed,
            counters: s.counters.clone(),
            uptime_ms: s.uptime_ms,
            build: {
                let mut end = s.build.len().min(crate::wire::status::MAX_BUILD);
                while !s.build.is_char_boundary(end) {
                    end -= 1;
                }
                s.build[..end].to_string()
            },
            clients: Vec::new(),
            clients_total: 0,
            inboxes: Vec::new(),
            inbox_total: 0,
            snapshots: 0,
            store: 0,
            holdback: 0,
            store_full: 0,
            holdback_full: 0,
        }
    }
}
