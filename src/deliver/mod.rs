//! Delivery agents: what happens to a queued message's recipients.

pub mod remote;
