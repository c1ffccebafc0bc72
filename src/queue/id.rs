//! sendmail-style queue ids.
