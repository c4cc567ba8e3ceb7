//! Chat: the causal broadcast among servers, the replicated chat state it carries,
//! state transfer, and a server's chat duties (stability, sessions, inboxes).
//!
//! Depends on the base and [`crate::wire`] only; the cluster layer drives it with a
//! [`server::Ctx`] snapshot of its membership.

pub mod causal;
pub mod mailbox;
pub mod rooms;
pub mod server;
pub mod state;
pub mod transfer;
