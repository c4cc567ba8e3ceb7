//! Every bound of the protocol in one place.
//!
//! Each collection that a peer or a client can make grow, and each field whose size a
//! datagram decides, is bounded by one of these. Decoders refuse input beyond them
//! (typed errors); the state machines refuse work beyond them (typed refusals).

// ----- datagrams ------------------------------------------------------------

/// Largest datagram the protocol sends or accepts (safe on every LAN).
pub const MAX_DATAGRAM: usize = 1200;
/// Most messages in one `ChatBatch`.
pub const MAX_BATCH: usize = 32;

// ----- fragments (see `wire::fragment`) ----------------------------------------

/// Largest protocol message, encoded: one that does not fit [`MAX_DATAGRAM`] leaves in
/// fragments. The longest honest one (a server's chat message of [`MAX_TEXT`] bytes with a
/// full vector, cut and recipient list: about 6.3 kB, seven fragments) fits.
pub const MAX_MESSAGE: usize = MAX_FRAGMENTS * FRAGMENT_BYTES;
/// Bytes of a message per fragment (every fragment but the last carries exactly this many);
/// a fragment with its envelope fits [`MAX_DATAGRAM`].
pub const FRAGMENT_BYTES: usize = 1_024;
/// Most fragments of one message.
pub const MAX_FRAGMENTS: usize = 8;
/// Most messages being reassembled from one source (a peer server life, a client path, or
/// the server a client talks to); a new one evicts that source's oldest.
pub const MAX_PARTIALS_PER_SOURCE: usize = 8;
/// Most messages being reassembled at once, all sources together (at most 512 kB); a new one
/// evicts the oldest.
pub const MAX_PARTIALS: usize = 64;
/// A message not complete this long after its first fragment arrived is dropped: the
/// fragments of one message leave back to back, so what is missing by then was lost, and the
/// protocol sends the whole message again (a retry, a re-show, an anti-entropy answer).
pub const PARTIAL_TTL_US: u64 = 2_000_000;

/// Largest value a counter (epoch, view id, incarnation, sequence number, Lamport time,
/// login fence) may carry on the wire. A cluster that bumps one a million times a second
/// reaches it after 8.9 years; a datagram carrying more is refused, so no counter a peer
/// names can wrap or saturate a server's own.
pub const MAX_COUNTER: u64 = 1 << 48;

// ----- membership -----------------------------------------------------------

/// Most servers a view may hold; keeps every view inside one datagram.
pub const MAX_MEMBERS: usize = 24;

// ----- causal broadcast -------------------------------------------------------

/// Most origins a vector clock on the wire may name (keeps every message in one datagram).
pub const MAX_ORIGINS: usize = 32;
/// Most messages held back waiting for their causal past.
pub const MAX_HOLDBACK: usize = 1024;
/// Most messages a server stores: those not yet held by every member of the view, and those
/// some user has not yet acknowledged (a week's chat for users away, each message once
/// however many members its room has). At about 400 bytes a message in memory, the bound
/// costs about 100 MB. A server whose store is within [`STORE_HEADROOM`] of it starts no new
/// message (its senders are told `failed`); `ringchat status` warns from three quarters on.
pub const MAX_STORE: usize = 262_144;
/// Store entries kept free for messages other servers started (see [`MAX_STORE`]).
pub const STORE_HEADROOM: usize = 8_192;
/// Most retired origin lives remembered (see `Causal::retire`): 32 bytes each.
pub const MAX_RETIRED: usize = 1024;
/// Most messages one anti-entropy request asks for.
pub const MAX_RANGE: u64 = 64;

// ----- state transfer ---------------------------------------------------------

/// Bytes of snapshot per chunk (one chunk fits a datagram with its framing).
pub const CHUNK: usize = 1_000;
/// Largest snapshot sent or accepted, in chunks (128 MB: a full store of short messages).
pub const MAX_CHUNKS: u32 = 131_072;

// ----- chat -------------------------------------------------------------------

/// Longest chat text, in bytes (checked at the client before anything is sent): 4 KiB, a
/// pasted log or a few paragraphs. A typical message this long leaves in five fragments, the
/// worst case in seven (see [`MAX_MESSAGE`]); the bound keeps what a server holds per stored
/// message, and the datagrams one message costs (each a chance to lose it), small.
pub const MAX_TEXT: usize = 4_096;
/// Longest user or room name, in bytes.
pub const MAX_NAME: usize = 16;
/// Most recipients one message names. A room message names none (its recipients follow from
/// the room's membership at its cut); only a message a merge carries names the users still
/// owed it, in items of at most this many.
pub const MAX_RECIPIENTS: usize = 16;
/// Most members a server lets a room reach: a join beyond it is rejected
/// (`Rejection::RoomFull`) and its client told. A room message is stored once however many
/// members it reaches; what the bound limits is the work of one message (computing its
/// recipients, and a show to each member). Joins accepted concurrently at different servers can
/// take a room past it, by at most the joins in flight; nothing ever drops a member.
pub const MAX_ROOM_MEMBERS: usize = 1024;
/// Most joins and leaves kept per user and room (the greatest stamps): a room message counts
/// the greatest one in its cut, which is among them unless this many newer ones of that user
/// in that room were concurrent with the message.
pub const ROOM_HISTORY: usize = 4;
/// Most keys that place one join or leave in a cut: its own, and the retirements that covered
/// its origin (see `Rooms::retire`).
pub const MAX_ANCHORS: usize = 4;
/// Message ids per client remembered for deduplication (a retry older than this is dropped).
pub const DEDUP_WINDOW: usize = 16;
/// Most message ids one acknowledgement carries.
pub const MAX_ACK_IDS: usize = 32;
/// Most names one `Who` answer lists (users, rooms, and members of each room).
pub const MAX_WHO: usize = 32;
/// Most user names one part of a presence report carries (one datagram).
pub const MAX_PRESENCE: usize = 48;
/// Most parts of one server's presence report: 3,072 users logged in at one server are shown
/// online everywhere (more show as offline elsewhere).
pub const MAX_PRESENCE_PARTS: usize = 64;

// ----- client sessions (at a server) -----------------------------------------

/// Most operations a session holds waiting for their causal context.
pub const MAX_PENDING: usize = 4;
/// Most expired operation ids a session remembers.
pub const MAX_EXPIRED: usize = 64;
/// Most logged-out sessions a server remembers until their acknowledgements are stable.
pub const MAX_LEAVING: usize = 1024;

// ----- client -------------------------------------------------------------------

/// Most shows a client buffers while waiting for an earlier one of the sequence.
pub const MAX_EARLY: usize = 256;
/// Most shown message ids a client process remembers to show each message once.
pub const MAX_SHOWN: usize = 4096;
