//! Graceful shutdown: one broadcast tells every session to finish; a drop guard per session
//! tells the daemon when the last one has ended (the mini-redis pattern).
//!
//! In: [`Shutdown::trigger`] (SIGTERM). Out: each session's [`SessionGuard::recv`] completes, and
//! [`Shutdown::wait_idle`] returns once every [`SessionGuard`] is dropped or the grace period
//! has passed.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

/// Owned by the daemon.
#[derive(Debug)]
pub struct Shutdown {
    notify: broadcast::Sender<()>,
    guard_tx: mpsc::Sender<()>,
    guard_rx: mpsc::Receiver<()>,
}

/// Held by each session: its receiver of the shutdown broadcast and its drop guard.
#[derive(Debug)]
pub struct SessionGuard {
    notify: broadcast::Receiver<()>,
    shut: bool,
    _alive: mpsc::Sender<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (notify, _) = broadcast::channel(1);
        let (guard_tx, guard_rx) = mpsc::channel(1);
        Shutdown {
            notify,
            guard_tx,
            guard_rx,
        }
    }

    /// A guard for a new session.
    pub fn guard(&self) -> SessionGuard {
        SessionGuard {
            notify: self.notify.subscribe(),
            shut: false,
            _alive: self.guard_tx.clone(),
        }
    }

    /// Tells every session to end at its next command boundary.
    pub fn trigger(&self) {
        let _ = self.notify.send(());
    }

    /// Waits until every session has ended, at most `grace`. Returns whether all ended.
    pub async fn wait_idle(self, grace: Duration) -> bool {
        let Shutdown {
            guard_tx,
            mut guard_rx,
            ..
        } = self;
        drop(guard_tx);
        tokio::time::timeout(grace, guard_rx.recv()).await.is_ok()
    }
}

impl SessionGuard {
    /// Completes when shutdown is triggered (at once if it already was).
    pub async fn recv(&mut self) {
        if self.shut {
            return;
        }
        let _ = self.notify.recv().await;
        self.shut = true;
    }

    /// Another guard for another session (from an accept loop that holds one).
    pub fn resubscribe(&self) -> SessionGuard {
        SessionGuard {
            notify: self.notify.resubscribe(),
            shut: self.shut,
            _alive: self._alive.clone(),
        }
    }

    /// Whether shutdown was triggered.
    pub fn is_shutdown(&mut self) -> bool {
        if !self.shut {
            self.shut = !matches!(
                self.notify.try_recv(),
                Err(broadcast::error::TryRecvError::Empty)
            );
        }
        self.shut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_hear_the_broadcast_and_the_daemon_waits_for_them() {
        let s = Shutdown::new();
        let mut g = s.guard();
        let task = tokio::spawn(async move {
            g.recv().await;
            assert!(g.is_shutdown());
        });
        s.trigger();
        task.await.unwrap();
        assert!(s.wait_idle(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn wait_idle_gives_up_after_the_grace_period() {
        let s = Shutdown::new();
        let g = s.guard();
        assert!(!s.wait_idle(Duration::from_millis(10)).await);
        drop(g);
    }
}
