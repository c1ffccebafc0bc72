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
    /// Lines for the log: what is not offered because its file does not exist.
    pub notes: Vec<String>,
}

impl Credentials {
    /// Loads both; every error, each naming its file and line. A file named in the cf that
    /// does not exist is not an error (the embedded default names the usual places before
    /// anything is there): that feature is off and a note says why, as sendmail logs
    /// `STARTTLS=server: file … unsafe: No such file or directory`.
    pub fn load(cfg: &Config) -> Result<Credentials, Vec<String>> {
        let mut errors = Vec::new();
        let mut notes = Vec::new();
        let absent = |option| crate::tls::option_path(cfg, option).filter(|p| !p.exists());
        let missing = absent("ServerCertFile").or_else(|| absent("ServerKeyFile"));
        let tls = match &missing {
            Some(p) => {
                notes.push(format!(
                    "STARTTLS=server: file {} unsafe: No such file or directory",
                    p.display()
                ));
                None
            }
            None => ServerTls::load(cfg).unwrap_or_else(|e| {
                errors.push(e.to_string());
                None
            }),
        };
        if tls.is_none() && missing.is_none() {
            notes.push("STARTTLS: ServerCertFile missing".to_string());
        }
        let passwords = match password_file(cfg) {
            None => None,
            Some(path) if !path.exists() => {
                notes.push(format!(
                    "AUTH: AuthPasswordFile {}: No such file or directory; AUTH not offered",
                    path.display()
                ));
                None
            }
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
            Ok(Credentials {
                tls,
                passwords,
                notes,
            })
        } else {
            Err(errors)
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
