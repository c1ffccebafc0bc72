//! The mail log: sendmail-format lines to syslog, LogFile, or stderr.
