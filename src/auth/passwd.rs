//! The AUTH password file (a sendmail-rs addition, option `AuthPasswordFile`).
//!
//! In: a text file, one `user:hash` line per user; `#` starts a comment line, blank lines are
//! skipped. `hash` is a salted modern hash in its standard text form:
//! * SHA-512-crypt (`$6$…`, also SHA-256-crypt `$5$…`), as `openssl passwd -6` and
//!   `mkpasswd -m sha-512` print it;
//! * Argon2 PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), as the `argon2` tool
//!   prints them (`echo -n secret | argon2 somesalt -id -e`).
//!
//! Out: a [`PasswordFile`] that checks passwords ([`Authenticator`]), or every bad line as
//! `file:line: what was expected`. Verification is the RustCrypto crates' (`sha-crypt`,
//! `argon2`), constant-time in the hash comparison; an unknown user costs a SHA-512-crypt
//! round too, so a reply's timing does not tell which users exist.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use argon2::Argon2;
use sha_crypt::{PasswordVerifier, ShaCrypt};

use super::Authenticator;

/// A bad password file.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {msg}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
}

/// How one user's password is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    ShaCrypt(String),
    Argon2(String),
}

impl Hash {
    fn parse(text: &str) -> Result<Hash, String> {
        if text.starts_with("$6$") || text.starts_with("$5$") {
            sha_crypt::PasswordHashRef::new(text)
                .map_err(|e| format!("bad SHA-crypt hash ({e})"))?;
            Ok(Hash::ShaCrypt(text.to_string()))
        } else if text.starts_with("$argon2") {
            argon2::password_hash::phc::PasswordHash::new(text)
                .map_err(|e| format!("bad argon2 PHC string ({e})"))?;
            Ok(Hash::Argon2(text.to_string()))
        } else {
            Err(
                "expected a `$6$` SHA-512-crypt hash or an `$argon2id$` PHC string after the colon"
                    .to_string(),
            )
        }
    }

    fn verify(&self, password: &str) -> bool {
        match self {
            Hash::ShaCrypt(h) => ShaCrypt::default()
                .verify_password(password.as_bytes(), h.as_str())
                .is_ok(),
            Hash::Argon2(h) => Argon2::default()
                .verify_password(password.as_bytes(), h.as_str())
                .is_ok(),
        }
    }
}

/// A SHA-512-crypt hash of a random password nobody knows: checked for unknown users.
const DECOY: &str = "$6$6sGDpdTjcRWSkGTa$Rr2FPYFrHcjqYV7NXehhKCSrR8kl1c61elZuxlhS4x9Bm.l2vUU8vqMeQxCYmaGl7eU5/ks5ObL8SJDOPVb8v/";

/// The users and their hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
}

impl PasswordFile {
    /// Reads and checks the whole file.
    pub fn load(path: &Path) -> Result<PasswordFile, Vec<PasswordFileError>> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            vec![PasswordFileError::Read {
                path: path.to_path_buf(),
                source,
            }]
        })?;
        PasswordFile::parse(&text, path)
    }

    /// Parses file text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<PasswordFile, Vec<PasswordFileError>> {
        let mut users = HashMap::new();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let result = match line.split_once(':') {
                None => Err("expected `user:hash`".to_string()),
                Some((user, _)) if user.is_empty() || user.contains(char::is_whitespace) => {
                    Err("expected a user name (no blanks) before the colon".to_string())
                }
                Some((user, _)) if users.contains_key(user) => {
                    Err(format!("user {user} is listed twice"))
                }
                Some((user, hash)) => Hash::parse(hash.trim()).map(|h| (user.to_string(), h)),
            };
            match result {
                Ok((user, hash)) => {
                    users.insert(user, hash);
                }
                Err(msg) => errors.push(PasswordFileError::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                    msg,
                }),
            }
        }
        if errors.is_empty() {
            Ok(PasswordFile { users })
        } else {
            Err(errors)
        }
    }

    /// How many users it lists.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl Authenticator for PasswordFile {
    fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(h) => h.verify(password),
            None => {
                let _ = Hash::ShaCrypt(DECOY.to_string()).verify(password);
                false
            }
        }
    }
}
