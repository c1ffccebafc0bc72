//! One listening socket per DaemonPortOptions.
