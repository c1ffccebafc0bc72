//! sendmail command line → Mode.
