//! One logical sendmail.cf line → one [`CfLine`]. (Interface; the parser lands here.)

use std::path::PathBuf;
use std::sync::Arc;

/// Where a line came from: used in every error and warning (`file:line: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<PathBuf>,
    /// 1-based number of the first physical line of the logical line.
    pub line: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A parsed line with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub loc: Location,
    pub kind: CfLine,
}

/// The line kinds of op §5.1, each keeping the text sendmail keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum CfLine {
    /// `O LongName=value` or old-style `Oxvalue` (name is then the one-letter name, resolved to
    /// the long name by the option table).
    Option { name: String, value: String },
    /// `Dxvalue` or `D{long}value`.
    Macro { name: String, value: String },
    /// `Cxword1 word2` or `C{long}words`.
    Class { name: String, words: Vec<String> },
    /// `Fx/path [scanf]`, `Fx|program`, `F{name}-o /path %[^\#]`: kept as its parts.
    ClassFile { name: String, optional: bool, path: String, format: Option<String> },
    /// `Kname class args`.
    Map { name: String, class: String, args: String },
    /// `Mname, P=/path, F=flags, S=..., R=..., A=argv ...`: fields by their (first) letter.
    Mailer { name: String, fields: Vec<(char, String)> },
    /// `Sname=N`, `SN`, `Sname`.
    Ruleset { name: Option<String>, number: Option<u32> },
    /// `R<lhs>\t<rhs>\t<comment>`: fields separated by one or more tabs.
    Rule { lhs: String, rhs: String, comment: Option<String> },
    /// `H?flags?Name: value` or `H?${macro}?Name: value`.
    Header { condition: Option<String>, name: String, value: String },
    /// `Pname=value`.
    Priority { name: String, value: i32 },
    /// `Tuser1 user2`.
    Trusted { users: Vec<String> },
    /// `Vlevel[/vendor]`.
    Version { level: u32, vendor: Option<String> },
    /// `Ename[=value]`.
    Env { name: String, value: Option<String> },
    /// `Qname, P=..., ...` queue group.
    QueueGroup { name: String, fields: Vec<(char, String)> },
}
