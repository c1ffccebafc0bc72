//! The sans-IO SMTP session state machine.
