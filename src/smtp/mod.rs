//! The SMTP server side.

pub mod session;
