//! The sendmail.cf reader: text in, typed [`lines::CfLine`]s out.
//!
//! [`lexer`] joins continuation lines (a line starting with a space or tab continues the one
//! before, op §5.1) and drops comments and blank lines; [`lines`] turns each logical line into
//! one [`lines::CfLine`] by its first character (`O D C F K M S R H P T V E Q X`; `L` is
//! ignored with a warning), collecting every error with its file and line instead of stopping
//! at the first.
//!
//! Source: Sendmail Installation and Operation Guide, §5 "The Configuration File".

pub mod lexer;
pub mod lines;
