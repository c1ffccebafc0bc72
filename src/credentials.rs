//! The server's credentials of one configuration: its TLS certificate and the AUTH
//! password file, loaded together at start and on every SIGHUP.
//!
//! In: a loaded [`Config`] (`ServerCertFile`, `ServerKeyFile`, `CACertFile`, `CACertPath`,
//! `AuthPasswordFile`, `AuthRealm`) and, without `AuthPasswordFile`, the site's Cyrus SASL
//! `Sendmail.conf` (`pwcheck_method: saslauthd`, see [`crate::auth::saslauthd`]). Out: [`Credentials`] for the sessions, or every problem as one
//! `file:line: …` text. At start a problem stops the daemon before any socket is opened; on
//! SIGHUP it is logged and the running credentials are kept (see [`crate::daemon`]).

use std::sync::Arc;

use crate::auth::passwd::PasswordFile;
use crate::auth::saslauthd::{SaslConf, Saslauthd};
use crate::config::Config;
use crate::config::macros::expand;
use crate::tls::ServerTls;

/// What the server proves (its certificate) and checks (users' passwords).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub tls: Option<ServerTls>,
    pub passwords: Option<Arc<PasswordFile>>,
    /// Without a password file: the site's saslauthd (`Sendmail.conf`'s
    /// `pwcheck_method: saslauthd`).
    pub saslauthd: Option<Arc<Saslauthd>>,
    /// `Sendmail.conf`'s `mech_list`, upper case (`None`: not limited there).
    pub sasl_mech_list: Option<Vec<String>>,
    /// Lines for the log: what is not offered because its file does not exist.
    pub notes: Vec<String>,
    /// Neither ServerCertFile nor its key is set: no STARTTLS. sendmail says so
    /// (`STARTTLS: ServerCertFile missing`, a warning) only at LogLevel 13 and above, right
    /// after its `starting daemon` line ([`Credentials::SERVER_CERT_MISSING`]).
    pub server_cert_unset: bool,
}

impl Credentials {
    /// sendmail's start-up warning when no server certificate is configured.
    pub const SERVER_CERT_MISSING: &str = "STARTTLS: ServerCertFile missing";
    /// The LogLevel above which sendmail logs it (8.17.1.9 on Debian's cf: at 13, not 12).
    pub const SERVER_CERT_MISSING_LEVEL: u32 = 12;

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
        let server_cert_unset = tls.is_none() && missing.is_none();
        let passwords = match crate::tls::option_path(cfg, "AuthPasswordFile") {
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
        let mut saslauthd = None;
        let mut sasl_mech_list = None;
        if passwords.is_none() && crate::tls::option_path(cfg, "AuthPasswordFile").is_none() {
            let conf_path = std::env::var("SASL_CONF_PATH").ok();
            if let Some(path) = SaslConf::find(conf_path.as_deref()) {
                match SaslConf::load(&path) {
                    Err(e) => errors.push(e.to_string()),
                    Ok(conf) if conf.uses_saslauthd() => {
                        let realm = match &cfg.options.auth_realm {
                            Some(r) => r.expand(cfg),
                            None => expand("$j", cfg),
                        };
                        sasl_mech_list = conf.mech_list.clone();
                        saslauthd = Some(Arc::new(Saslauthd::new(conf.saslauthd_path, &realm)));
                    }
                    Ok(conf) => notes.push(format!(
                        "AUTH: {}: pwcheck_method {} is not supported (only saslauthd, or our AuthPasswordFile); AUTH not offered",
                        conf.path.display(),
                        conf.pwcheck_method
                    )),
                }
            }
        }
        if errors.is_empty() {
            Ok(Credentials {
                tls,
                passwords,
                saslauthd,
                sasl_mech_list,
                notes,
                server_cert_unset,
            })
        } else {
            Err(errors)
        }
    }
}
