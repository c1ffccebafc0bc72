//! `DaemonPortOptions` / `ClientPortOptions` values → typed listener descriptions.
//! INTERFACE STUB — the parser lands here.

/// One listener, as one `DaemonPortOptions` value describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonPortOptions {
    pub name: String,
}

/// A value that cannot describe a listener (bad family, port, address, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DpoError(pub String);

impl DaemonPortOptions {
    /// Parses one `DaemonPortOptions` value; `index` is its 0-based position (for the default
    /// name `Daemon<index>`). Returns the daemon and warnings (e.g. unknown keys, which sendmail
    /// reports but still creates the daemon).
    pub fn parse(value: &str, index: usize) -> Result<(DaemonPortOptions, Vec<String>), DpoError> {
        let _ = value;
        Ok((DaemonPortOptions { name: format!("Daemon{index}") }, Vec::new()))
    }
}
