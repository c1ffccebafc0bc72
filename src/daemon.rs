//! Daemon mode: startup, pid file, signals, reload.
