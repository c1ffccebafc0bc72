//! Passwords checked by Cyrus SASL's `saslauthd`, as a sendmail site configures it.
//!
//! In: the site's Cyrus SASL application file for sendmail, `Sendmail.conf` (`key: value`
//! lines: `pwcheck_method: saslauthd`, `saslauthd_path: /var/run/saslauthd/mux`,
//! `mech_list: PLAIN LOGIN`), found where libsasl2 looks for it — the directories of
//! `SASL_CONF_PATH` (colon-separated), else `/etc/sasl2`, then Debian's `/etc/mail/sasl` and
//! `/usr/lib/sasl2`. Out: a [`SaslConf`] and, for `saslauthd`, a [`Saslauthd`]
//! [`Authenticator`] that asks the daemon over its Unix socket.
//!
//! The socket protocol (Cyrus SASL 2.1, `lib/checkpw.c` and `saslauthd/ipc_unix.c`): the
//! client sends four counted strings — each a 2-byte big-endian length and that many bytes —
//! login, password, service, realm; the daemon answers with one counted string that starts
//! with `OK` (accepted) or `NO` (refused), and closes. A login of the form `user@realm` is
//! split at its last `@` and the realm part sent as the realm, as libsasl2 does; otherwise
//! the realm is sendmail's (`AuthRealm`, default `$j`), and the service is `smtp` (sendmail's
//! `sasl_server_new("smtp", AuthRealm, …)`). One connection per check, with a time limit.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Authenticator;

/// Where libsasl2 (and so sendmail) finds `Sendmail.conf` when `SASL_CONF_PATH` is unset.
pub const DEFAULT_CONF_DIRS: &[&str] = &["/etc/sasl2", "/etc/mail/sasl", "/usr/lib/sasl2"];

/// saslauthd's socket when `saslauthd_path` is not given (Debian's `PATH_SASLAUTHD_RUNDIR`).
pub const DEFAULT_SOCKET: &str = "/var/run/saslauthd/mux";

/// How long one check may take (connect, ask, answer) before it counts as refused.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A bad `Sendmail.conf`.
#[derive(Debug, thiserror::Error)]
pub enum SaslConfError {
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

/// What `Sendmail.conf` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslConf {
    /// The file it was read from.
    pub path: PathBuf,
    /// `pwcheck_method` (default `auxprop`, as libsasl2's).
    pub pwcheck_method: String,
    /// `saslauthd_path`: the daemon's socket.
    pub saslauthd_path: PathBuf,
    /// `mech_list`, upper case; `None` = every mechanism.
    pub mech_list: Option<Vec<String>>,
}

impl SaslConf {
    /// The `Sendmail.conf` libsasl2 would read: the first that exists in `SASL_CONF_PATH`'s
    /// directories (`conf_path`), else in [`DEFAULT_CONF_DIRS`]. `None` when there is none.
    pub fn find(conf_path: Option<&str>) -> Option<PathBuf> {
        let dirs: Vec<&str> = match conf_path {
            Some(p) => p.split(':').filter(|d| !d.is_empty()).collect(),
            None => DEFAULT_CONF_DIRS.to_vec(),
        };
        dirs.iter()
            .map(|d| Path::new(d).join("Sendmail.conf"))
            .find(|p| p.is_file())
    }

    pub fn load(path: &Path) -> Result<SaslConf, SaslConfError> {
        let text = std::fs::read_to_string(path).map_err(|source| SaslConfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SaslConf::parse(&text, path)
    }

    /// Parses the text of `path`: `key: value` lines, `#` comments, blank lines.
    pub fn parse(text: &str, path: &Path) -> Result<SaslConf, SaslConfError> {
        let mut conf = SaslConf {
            path: path.to_path_buf(),
            pwcheck_method: "auxprop".to_string(),
            saslauthd_path: PathBuf::from(DEFAULT_SOCKET),
            mech_list: None,
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(SaslConfError::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                    msg: "expected `key: value`".to_string(),
                });
            };
            let value = value.trim();
            match key.trim() {
                // libsasl2 tries the methods in order; saslauthd is the one we speak.
                "pwcheck_method" => conf.pwcheck_method = value.to_string(),
                "saslauthd_path" => conf.saslauthd_path = PathBuf::from(value),
                "mech_list" => {
                    let mechs = value.split_whitespace().map(str::to_ascii_uppercase);
                    conf.mech_list = Some(mechs.collect());
                }
                _ => {}
            }
        }
        Ok(conf)
    }

    /// Whether `pwcheck_method` names saslauthd.
    pub fn uses_saslauthd(&self) -> bool {
        self.pwcheck_method
            .split_whitespace()
            .any(|m| m == "saslauthd")
    }
}

/// The saslauthd client: one connection per check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saslauthd {
    pub socket: PathBuf,
    /// `smtp`.
    pub service: String,
    /// Sent when the login has no `@realm` (sendmail's `AuthRealm`, default `$j`).
    pub realm: String,
    pub timeout: Duration,
}

/// Why a check did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum SaslauthdError {
    #[error("cannot connect to saslauthd server: {0}")]
    Connect(std::io::Error),
    #[error("saslauthd request too large")]
    TooLarge,
    #[error("saslauthd: {0}")]
    Io(std::io::Error),
    #[error("bad response from saslauthd")]
    BadResponse,
}

impl Saslauthd {
    pub fn new(socket: PathBuf, realm: &str) -> Saslauthd {
        Saslauthd {
            socket,
            service: "smtp".to_string(),
            realm: realm.to_string(),
            timeout: TIMEOUT,
        }
    }

    /// The request bytes for `login`/`password` (see the module doc).
    pub fn request(&self, login: &str, password: &str) -> Result<Vec<u8>, SaslauthdError> {
        let (user, realm) = match login.rsplit_once('@') {
            Some((u, r)) => (u, r),
            None => (login, self.realm.as_str()),
        };
        let mut out = Vec::new();
        for field in [user, password, self.service.as_str(), realm] {
            let len = u16::try_from(field.len()).map_err(|_| SaslauthdError::TooLarge)?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        Ok(out)
    }

    /// Asks the daemon; `Ok(text)` is its answer (`OK …` or `NO …`).
    pub fn ask(&self, login: &str, password: &str) -> Result<String, SaslauthdError> {
        let request = self.request(login, password)?;
        let mut s = UnixStream::connect(&self.socket).map_err(SaslauthdError::Connect)?;
        s.set_read_timeout(Some(self.timeout))
            .and_then(|()| s.set_write_timeout(Some(self.timeout)))
            .map_err(SaslauthdError::Io)?;
        s.write_all(&request).map_err(SaslauthdError::Io)?;
        read_answer(&mut s)
    }
}

/// One counted string: the answer.
fn read_answer(r: &mut impl Read) -> Result<String, SaslauthdError> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).map_err(SaslauthdError::Io)?;
    let len = usize::from(u16::from_be_bytes(len));
    if len < 2 {
        return Err(SaslauthdError::BadResponse);
    }
    let mut text = vec![0u8; len.min(1024)];
    r.read_exact(&mut text).map_err(SaslauthdError::Io)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

impl Authenticator for Saslauthd {
    fn verify(&self, user: &str, password: &str) -> bool {
        // An unreachable daemon refuses, as libsasl2's SASL_FAIL does.
        self.ask(user, password).is_ok_and(|a| a.starts_with("OK"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendmail_conf_as_debian_sites_write_it() {
        let text = "# comment\npwcheck_method: saslauthd\nsaslauthd_path: /run/x/mux\n\
                    mech_list: plain login\nauxprop_plugin: sasldb\n";
        let c = SaslConf::parse(text, Path::new("/etc/sasl2/Sendmail.conf")).unwrap();
        assert!(c.uses_saslauthd());
        assert_eq!(c.saslauthd_path, Path::new("/run/x/mux"));
        assert_eq!(c.mech_list, Some(vec!["PLAIN".into(), "LOGIN".into()]));
        let d = SaslConf::parse("", Path::new("S")).unwrap();
        assert!(!d.uses_saslauthd());
        assert_eq!(d.saslauthd_path, Path::new(DEFAULT_SOCKET));
        let e = SaslConf::parse("pwcheck_method saslauthd\n", Path::new("S")).unwrap_err();
        assert_eq!(e.to_string(), "S:1: expected `key: value`");
    }

    #[test]
    fn the_request_is_four_counted_strings_and_a_realm_in_the_login_wins() {
        let s = Saslauthd::new(PathBuf::from("/nonexistent"), "mx.example");
        assert_eq!(
            s.request("alice", "pw").unwrap(),
            b"\0\x05alice\0\x02pw\0\x04smtp\0\x0amx.example".to_vec()
        );
        assert_eq!(
            s.request("bob@other.example", "").unwrap(),
            b"\0\x03bob\0\0\0\x04smtp\0\x0dother.example".to_vec()
        );
        assert!(matches!(
            s.request("x", &"p".repeat(70_000)),
            Err(SaslauthdError::TooLarge)
        ));
    }

    #[test]
    fn answers_ok_no_and_garbage() {
        assert_eq!(
            read_answer(&mut &b"\0\x0bOK \"Success.\""[..]).unwrap(),
            "OK \"Success"
        );
        assert!(read_answer(&mut &b"\0\x01O"[..]).is_err());
        assert!(read_answer(&mut &b"\0\x05NO"[..]).is_err());
    }

    #[test]
    fn an_absent_daemon_refuses() {
        let s = Saslauthd::new(PathBuf::from("/nonexistent/mux"), "mx.example");
        assert!(matches!(
            s.ask("alice", "pw"),
            Err(SaslauthdError::Connect(_))
        ));
        assert!(!s.verify("alice", "pw"));
    }
}
