//! `DaemonPortOptions` / `ClientPortOptions` values → typed listener descriptions.
