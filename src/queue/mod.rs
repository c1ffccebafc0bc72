//! The mail queue.

pub mod id;
