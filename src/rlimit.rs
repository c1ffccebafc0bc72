//! Process resource limits the daemon sets for itself at start.
//!
//! In: the process's limits as inherited (a login shell or service manager often gives a
//! soft open-files limit of 1024). Out: the soft `RLIMIT_NOFILE` raised to the hard limit,
//! so that thousands of concurrent SMTP sessions (each one descriptor, plus the queue's and
//! the log's) are limited by `MaxDaemonChildren` / `children=` and not by `EMFILE` in
//! accept(2). The hard limit is never changed. sendmail leaves the limit as inherited;
//! this is a deliberate difference (issue 6, "resource limits that hold").

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The open-files limits after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit found at start.
    pub was: u64,
    /// The soft limit now (the hard limit, unless that failed).
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft open-files limit to the hard limit.
pub fn raise_open_files() -> nix::Result<OpenFiles> {
    let (was, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if was < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(OpenFiles {
        was,
        soft: hard.max(was),
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let got = raise_open_files().unwrap();
        assert_eq!(got.soft, got.hard);
        assert_eq!(
            getrlimit(Resource::RLIMIT_NOFILE).unwrap(),
            (got.hard, got.hard)
        );
        // A second call changes nothing.
        assert_eq!(raise_open_files().unwrap().was, got.hard);
    }
}
