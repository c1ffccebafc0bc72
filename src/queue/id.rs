//! sendmail-style queue ids (`6AO6rKe2007088`). INTERFACE STUB — the generator lands here.

/// Hands out queue ids; shared by every session of one process.
#[derive(Debug, Default)]
pub struct QueueIdGen {}

impl QueueIdGen {
    pub fn new() -> QueueIdGen {
        QueueIdGen {}
    }

    /// The next id (unique within this process).
    pub fn next_id(&self) -> String {
        String::from("NOQUEUE")
    }
}
