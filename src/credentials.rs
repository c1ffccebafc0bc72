//! The server's credentials of one configuration: its TLS certificate and the AUTH
//! password file, loaded together at start and on every SIGHUP.
//!
//! In: a loaded [`Config`] (`ServerCertFile`, `ServerKeyFile`, `CACertFile`, `CACertPath`,
//! `AuthPasswordFile`). Out: [`Credentials`] for the sessions, or every problem as one
//! `file:line: …` text. At start a problem stops the daemon before any socket is opened; on
//! SIGHUP it is logged and the running credentials are kept (see [`crate::daemon`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::passwd::PasswordFile;
use crate::config::Config;
use crate::config::macros::expand;
use crate::tls::ServerTls;

/// What the server proves (its certificate) and checks (users' passwords).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub tls: Option<ServerTls>,
    pub passwords: Option<Arc<PasswordFile>>,
}

impl Credentials {
    /// Loads both; every error, each naming its file and line.
    pub fn load(cfg: &Config) -> Result<Credentials, Vec<String>> {
        let mut errors = Vec::new();
        let tls = ServerTls::load(cfg).unwrap_or_else(|e| {
            errors.push(e.to_string());
            None
        });
        let passwords = match password_file(cfg) {
            None => None,
            Some(path) => match PasswordFile::load(&path) {
                Ok(p) => Some(Arc::new(p)),
                Err(es) => {
                    let at = cfg
                        .options
                        .set_at
                        .get("AuthPasswordFile")
                        .cloned()
                        .unwrap_or_else(|| "AuthPasswordFile".into());
                    errors.extend(es.iter().map(|e| format!("{at}: AuthPasswordFile: {e}")));
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok(Credentials { tls, passwords })
        } else {
            Err(errors)
        }
    }

    /// sendmail's start-up note when there is no certificate (Debian's binary writes it).
    pub fn notes(&self) -> Vec<&'static str> {
        if self.tls.is_none() {
            vec!["STARTTLS: ServerCertFile missing"]
        } else {
            Vec::new()
        }
    }
}

fn password_file(cfg: &Config) -> Option<PathBuf> {
    let t = cfg.options.auth_password_file.as_ref()?;
    let v = if t.literal {
        t.raw.clone()
    } else {
        expand(&t.raw, cfg)
    };
    let v = v.trim();
    (!v.is_empty()).then(|| PathBuf::from(v))
}
