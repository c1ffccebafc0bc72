//! mailstats: per-mailer and per-daemon counters kept in StatusFile.
