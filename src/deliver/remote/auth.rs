//! Client AUTH (RFC 4954) to a smart host, with the credentials of the `authinfo` map.
//!
//! In: the `authinfo` map (`FEATURE(authinfo)`: `Kauthinfo hash /etc/mail/authinfo`), the
//! server's name and address, its `AUTH` keyword, and after the (encrypted) EHLO the
//! connection. Out: the entry ([`AuthInfo`], from `AuthInfo:host "U:user" "P:secret"
//! "M:PLAIN LOGIN"`), the mechanism to use ([`choose_mechanism`]), and the exchange's end
//! ([`AuthEnd`]) with sendmail's log line `AUTH=client, relay=host., mech=PLAIN, bits=0`.
//!
//! The lookups are the `authinfo` ruleset's (cf.README "Providing SMTP AUTH Data when
//! sendmail acts as Client", proto.m4 `Sauthinfo`): `AuthInfo:<server name>`, then
//! `AuthInfo:<server address>`, then `AuthInfo:` — exact keys only. Tags: `U` user
//! (authorization) id, `I` authentication id, `P` password, `R` realm, `M` mechanisms;
//! `:` plain text, `=` base64. User or authentication id must be there, and the password; a
//! missing one of U/I takes the other's value.
//!
//! Mechanisms: PLAIN (RFC 4616) and LOGIN. Credentials never go over a connection without
//! TLS (sendmail would send them when its AuthOptions allow; we do not, see
//! [`crate::deliver::remote::client`]). An entry without `M:` allows both (sendmail would
//! use `AuthMechanisms`, whose default names neither).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::net::IpAddr;

use super::client::{ClientTimeouts, Conn, SessionError, SmtpReply};
use crate::dns::bracketed;
use crate::rules::maps::Maps;
use tokio::io::{AsyncRead, AsyncWrite};

/// The mechanisms we can do, in the order we prefer them.
pub const MECHANISMS: &[&str] = &["PLAIN", "LOGIN"];

/// The name of the map sendmail's `FEATURE(authinfo)` declares.
pub const MAP_NAME: &str = "authinfo";

/// One `AuthInfo:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    /// `U`: the authorization id.
    pub authz: String,
    /// `I`: the authentication id.
    pub authid: String,
    pub password: String,
    /// `R` (unused by PLAIN and LOGIN).
    pub realm: Option<String>,
    /// `M`: the mechanisms allowed, upper case; empty = any we have.
    pub mechanisms: Vec<String>,
}

/// An `AuthInfo:` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthInfoError {
    #[error("AuthInfo: expected \"TDvalue\" items (T one of U I P R M, D : or =), found {0:?}")]
    BadItem(String),
    #[error("AuthInfo: unterminated quote in {0:?}")]
    Unterminated(String),
    #[error("AuthInfo: bad base64 in the {0} item")]
    BadBase64(char),
    #[error("AuthInfo: no user (U:) or authentication id (I:)")]
    NoUser,
    #[error("AuthInfo: no password (P:)")]
    NoPassword,
}

impl AuthInfo {
    /// Parses the right-hand side: `"U:user" "I:user" "P:secret" "M:PLAIN LOGIN"`.
    pub fn parse(rhs: &str) -> Result<AuthInfo, AuthInfoError> {
        let (mut u, mut i, mut p, mut r, mut m) = (None, None, None, None, None);
        for item in quoted_items(rhs)? {
            let mut chars = item.chars();
            let (Some(tag), Some(delim)) = (chars.next(), chars.next()) else {
                return Err(AuthInfoError::BadItem(item));
            };
            let raw = chars.as_str();
            let value = match delim {
                ':' => raw.to_string(),
                '=' => decode(raw).ok_or(AuthInfoError::BadBase64(tag))?,
                _ => return Err(AuthInfoError::BadItem(item)),
            };
            let slot = match tag.to_ascii_uppercase() {
                'U' => &mut u,
                'I' => &mut i,
                'P' => &mut p,
                'R' => &mut r,
                'M' => &mut m,
                _ => return Err(AuthInfoError::BadItem(item)),
            };
            *slot = Some(value);
        }
        let (authz, authid) = match (u, i) {
            (None, None) => return Err(AuthInfoError::NoUser),
            (Some(u), None) => (u.clone(), u),
            (None, Some(i)) => (i.clone(), i),
            (Some(u), Some(i)) => (u, i),
        };
        Ok(AuthInfo {
            authz,
            authid,
            password: p.ok_or(AuthInfoError::NoPassword)?,
            realm: r,
            mechanisms: m
                .map(|m| m.split_whitespace().map(str::to_ascii_uppercase).collect())
                .unwrap_or_default(),
        })
    }

    /// The entry for a server: `AuthInfo:<name>` (without its trailing dot), then
    /// `AuthInfo:<address>` (`127.0.0.1`, `IPv6:0:0:0:0:0:0:0:1`), then `AuthInfo:`.
    /// `None` when there is none (or the map cannot be read).
    pub fn lookup(
        maps: &Maps,
        host: &str,
        addr: IpAddr,
    ) -> Option<Result<AuthInfo, AuthInfoError>> {
        let name = host.trim_end_matches('.');
        let bracketed_addr = bracketed(addr);
        let addr_text = bracketed_addr.trim_matches(['[', ']']);
        let keys = [
            format!("AuthInfo:{name}"),
            format!("AuthInfo:{addr_text}"),
            "AuthInfo:".to_string(),
        ];
        keys.iter().find_map(|key| {
            let answer = maps.lookup(MAP_NAME, key.as_bytes(), &[key.as_bytes().to_vec()], 0);
            answer
                .value
                .map(|v| AuthInfo::parse(&String::from_utf8_lossy(&v)))
        })
    }
}

fn decode(text: &str) -> Option<String> {
    let bytes = BASE64.decode(text.trim()).ok()?;
    String::from_utf8(bytes).ok()
}

/// The `"…"` items of a value, unquoted.
fn quoted_items(rhs: &str) -> Result<Vec<String>, AuthInfoError> {
    let mut items = Vec::new();
    let mut rest = rhs.trim();
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix('"') else {
            let word = rest.split_whitespace().next().unwrap_or(rest);
            return Err(AuthInfoError::BadItem(word.to_string()));
        };
        let end = body
            .find('"')
            .ok_or_else(|| AuthInfoError::Unterminated(rest.to_string()))?;
        items.push(body[..end].to_string());
        rest = body[end + 1..].trim_start();
    }
    Ok(items)
}

/// From the server's `AUTH` list: the first of [`MECHANISMS`] that it offers and the entry
/// allows.
pub fn choose_mechanism(offered: &[String], info: &AuthInfo) -> Option<&'static str> {
    MECHANISMS.iter().copied().find(|m| {
        offered.iter().any(|o| o.eq_ignore_ascii_case(m))
            && (info.mechanisms.is_empty() || info.mechanisms.iter().any(|a| a == m))
    })
}

/// How an AUTH exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthEnd {
    /// `235`: authenticated with this mechanism.
    Done(&'static str),
    /// A 5xx (or a reply that makes no sense): go on without AUTH, as sendmail does.
    Refused(SmtpReply),
    /// A 4xx: sendmail gives up on this connection (`Temporary AUTH failure`).
    Temporary(SmtpReply),
}

/// The initial response of PLAIN: `authz NUL authid NUL password`, base64; the
/// authorization id is left empty when it is the authentication id.
pub fn plain_response(info: &AuthInfo) -> String {
    let authz = if info.authz == info.authid {
        ""
    } else {
        &info.authz
    };
    BASE64.encode(format!("{authz}\0{}\0{}", info.authid, info.password))
}

/// Runs `AUTH mech` over `conn`.
pub(super) async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    info: &AuthInfo,
    mechanism: &'static str,
    t: &ClientTimeouts,
) -> Result<AuthEnd, SessionError> {
    let stage = "client AUTH";
    let first = match mechanism {
        "PLAIN" => format!("AUTH PLAIN {}\r\n", plain_response(info)),
        _ => "AUTH LOGIN\r\n".to_string(),
    };
    conn.send(first.as_bytes(), t.auth, stage).await?;
    let mut answers = match mechanism {
        "PLAIN" => vec![],
        _ => vec![BASE64.encode(&info.authid), BASE64.encode(&info.password)],
    }
    .into_iter();
    loop {
        let reply = conn.reply(t.auth, stage).await?;
        match reply.code {
            235 => return Ok(AuthEnd::Done(mechanism)),
            334 => {
                // A challenge we have no answer for ends the exchange (RFC 4954 `*`).
                let answer = answers.next().unwrap_or_else(|| "*".to_string());
                conn.send(format!("{answer}\r\n").as_bytes(), t.auth, stage)
                    .await?;
            }
            code if code / 100 == 4 => return Ok(AuthEnd::Temporary(reply)),
            _ => return Ok(AuthEnd::Refused(reply)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::maps::Map;

    #[test]
    fn entries_parse_as_cf_readme_describes_them() {
        let a = AuthInfo::parse(r#""U:user" "I:auth" "P:secret" "R:other.dom" "M:plain LOGIN""#)
            .unwrap();
        assert_eq!(a.authz, "user");
        assert_eq!(a.authid, "auth");
        assert_eq!(a.password, "secret");
        assert_eq!(a.realm.as_deref(), Some("other.dom"));
        assert_eq!(a.mechanisms, ["PLAIN", "LOGIN"]);
        // base64 values; the missing I takes U's value.
        let b = AuthInfo::parse(r#""U:user" "P=c2VjcmV0""#).unwrap();
        assert_eq!((b.authid.as_str(), b.password.as_str()), ("user", "secret"));
        assert!(b.mechanisms.is_empty());
        let only_i = AuthInfo::parse(r#""I:id" "P:pw""#).unwrap();
        assert_eq!(only_i.authz, "id");
        assert_eq!(AuthInfo::parse(r#""P:pw""#), Err(AuthInfoError::NoUser));
        assert_eq!(AuthInfo::parse(r#""U:u""#), Err(AuthInfoError::NoPassword));
        assert_eq!(
            AuthInfo::parse(r#""U:u" P:pw"#),
            Err(AuthInfoError::BadItem("P:pw".into()))
        );
        assert_eq!(
            AuthInfo::parse(r#""U:u" "X:y""#),
            Err(AuthInfoError::BadItem("X:y".into()))
        );
        assert!(matches!(
            AuthInfo::parse(r#""U:u" "P:pw"#),
            Err(AuthInfoError::Unterminated(_))
        ));
        assert_eq!(
            AuthInfo::parse(r#""U:u" "P=!!""#),
            Err(AuthInfoError::BadBase64('P'))
        );
    }

    #[test]
    fn lookups_try_the_name_then_the_address_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("authinfo");
        std::fs::write(
            &file,
            "AuthInfo:smart.example.test \"U:byname\" \"P:1\"\n\
             AuthInfo:127.0.0.7 \"U:byaddr\" \"P:2\"\n\
             AuthInfo:IPv6:0:0:0:0:0:0:0:1 \"U:bysix\" \"P:3\"\n\
             AuthInfo: \"U:default\" \"P:4\"\n",
        )
        .unwrap();
        crate::makemap::build_from_text(&file).unwrap();
        let mut maps = Maps::default();
        maps.maps.insert(
            MAP_NAME.into(),
            Map::new(MAP_NAME, "hash", &file.display().to_string()),
        );
        let user = |host: &str, addr: &str| {
            AuthInfo::lookup(&maps, host, addr.parse().unwrap())
                .unwrap()
                .unwrap()
                .authid
        };
        assert_eq!(user("smart.example.test.", "127.0.0.7"), "byname");
        assert_eq!(user("other.example.test.", "127.0.0.7"), "byaddr");
        assert_eq!(user("[IPv6:::1]", "::1"), "bysix");
        assert_eq!(user("other.example.test.", "127.0.0.9"), "default");
        assert!(
            AuthInfo::lookup(&Maps::default(), "x.test.", "127.0.0.1".parse().unwrap()).is_none()
        );
    }

    #[test]
    fn the_mechanism_is_one_both_sides_allow() {
        let mut info = AuthInfo::parse(r#""U:u" "P:p""#).unwrap();
        let offered = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            choose_mechanism(&offered("LOGIN PLAIN"), &info),
            Some("PLAIN")
        );
        assert_eq!(choose_mechanism(&offered("login"), &info), Some("LOGIN"));
        assert_eq!(choose_mechanism(&offered("CRAM-MD5"), &info), None);
        info.mechanisms = vec!["LOGIN".into()];
        assert_eq!(
            choose_mechanism(&offered("PLAIN LOGIN"), &info),
            Some("LOGIN")
        );
        info.mechanisms = vec!["DIGEST-MD5".into()];
        assert_eq!(choose_mechanism(&offered("PLAIN LOGIN"), &info), None);
    }

    #[test]
    fn plain_sends_the_authorization_id_only_when_it_differs() {
        let same = AuthInfo::parse(r#""U:user" "P:pw""#).unwrap();
        assert_eq!(decode(&plain_response(&same)).unwrap(), "\0user\0pw");
        let other = AuthInfo::parse(r#""U:boss" "I:user" "P:pw""#).unwrap();
        assert_eq!(decode(&plain_response(&other)).unwrap(), "boss\0user\0pw");
    }
}
