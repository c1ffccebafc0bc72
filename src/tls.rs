//! TLS credentials: certificate files in, rustls configurations and sendmail's TLS macros out.
//!
//! In: the options `ServerCertFile`, `ServerKeyFile`, `CACertFile` and `CACertPath` (as m4's
//! `confSERVER_CERT`, `confSERVER_KEY`, `confCACERT`, `confCACERT_PATH` emit them), with the
//! cf line each was set on. Out: a [`ServerTls`] (the rustls server configuration shared by
//! every session of one configuration, rebuilt on SIGHUP) and, after a handshake, a
//! [`TlsInfo`]: the values sendmail puts in `${tls_version}`, `${cipher}`, `${cipher_bits}`,
//! `${alg_bits}` and `${verify}`, which the `Received:` header and the
//! `STARTTLS=server, relay=…, version=…, verify=…, cipher=…, bits=…/…` log line show.
//!
//! As sendmail does (op.txt "STARTTLS"), a client certificate is *requested* but not
//! required when a CA is configured: `verify=NO` when the client sends none, `OK` when it
//! chains to `CACertFile`/`CACertPath`, `FAIL` when it does not (the session goes on; the
//! rulesets may look at `${verify}`). The key must be proven either way: rustls checks the
//! handshake signature. Only the ring provider is used. Certificate and key files are PEM
//! (`-----BEGIN CERTIFICATE-----`, `-----BEGIN PRIVATE KEY-----` / `RSA` / `EC`).
//! Cipher names are OpenSSL's (what sendmail logs), e.g. `TLS_AES_256_GCM_SHA384`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{
    CipherSuite, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::config::Config;
use crate::config::macros::expand;

/// Why the TLS credentials could not be loaded. Each names the cf line and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{at}: {option}: cannot read {}: {source}", path.display())]
    Read {
        at: String,
        option: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file holds no certificate.
    #[error(
        "{at}: {option}: {}: no certificate (expected PEM `-----BEGIN CERTIFICATE-----` blocks)",
        path.display()
    )]
    NoCertificate {
        at: String,
        option: &'static str,
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error(
        "{at}: ServerKeyFile: {}: no private key (expected a PEM `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)",
        path.display()
    )]
    NoKey { at: String, path: PathBuf },
    /// A certificate without a key (or the other way round).
    #[error("{at}: {option} is set but {missing} is not (both are needed for STARTTLS)")]
    Incomplete {
        at: String,
        option: &'static str,
        missing: &'static str,
    },
    /// rustls refused the certificate, the key or the pair.
    #[error("{at}: {what}: {reason}")]
    Rejected {
        at: String,
        what: String,
        reason: String,
    },
}

/// The server side of one configuration: what STARTTLS and SMTPS sessions use.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// Checks a client certificate after the handshake (`None`: none is requested).
    client_check: Option<Arc<dyn ClientCertVerifier>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("requests_client_cert", &self.client_check.is_some())
            .finish()
    }
}

/// `${verify}`: what came of the client's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// No certificate was presented.
    No,
    /// It chains to a configured CA.
    Ok,
    /// It does not.
    Fail,
}

impl Verify {
    pub fn as_str(self) -> &'static str {
        match self {
            Verify::No => "NO",
            Verify::Ok => "OK",
            Verify::Fail => "FAIL",
        }
    }
}

/// What a finished handshake gives the session (sendmail's TLS macros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `${tls_version}`: `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// `${cipher}`, OpenSSL's name.
    pub cipher: String,
    /// `${cipher_bits}`: the symmetric key size.
    pub cipher_bits: u32,
    /// `${alg_bits}`: the cipher's own key size (the same for every suite rustls offers).
    pub alg_bits: u32,
    pub verify: Verify,
}

impl TlsInfo {
    /// The log line sendmail writes after a handshake (tls.c `tls_get_info`).
    pub fn log_line(&self, side: &str, relay: &str) -> String {
        format!(
            "STARTTLS={side}, relay={relay}, version={}, verify={}, cipher={}, bits={}/{}",
            self.version,
            self.verify.as_str(),
            self.cipher,
            self.cipher_bits,
            self.alg_bits
        )
    }

    /// The `(name, value)` pairs of sendmail's TLS macros.
    pub fn macros(&self) -> [(&'static str, String); 5] {
        [
            ("tls_version", self.version.clone()),
            ("cipher", self.cipher.clone()),
            ("cipher_bits", self.cipher_bits.to_string()),
            ("alg_bits", self.alg_bits.to_string()),
            ("verify", self.verify.as_str().to_string()),
        ]
    }
}

/// The ring provider every TLS configuration of this program uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where an option was set (`file:line`), or `option` when it came from nowhere known.
fn origin(cfg: &Config, option: &'static str) -> String {
    cfg.options
        .set_at
        .get(option)
        .cloned()
        .unwrap_or_else(|| option.to_string())
}

/// An option's value as a path (`$`-macros expanded as for any cf value).
pub(crate) fn option_path(cfg: &Config, option: &'static str) -> Option<PathBuf> {
    let o = &cfg.options;
    let text = match option {
        "ServerCertFile" => o.server_cert_file.as_ref(),
        "ServerKeyFile" => o.server_key_file.as_ref(),
        "CACertFile" => o.ca_cert_file.as_ref(),
        "CACertPath" => o.ca_cert_path.as_ref(),
        _ => None,
    }?;
    let value = if text.literal {
        text.raw.clone()
    } else {
        expand(&text.raw, cfg)
    };
    let value = value.trim();
    (!value.is_empty()).then(|| PathBuf::from(value))
}

fn read(at: &str, option: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        at: at.to_string(),
        option,
        path: path.to_path_buf(),
        source,
    })
}

/// Every PEM certificate in `bytes` (other blocks are skipped).
fn certificates(bytes: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .collect()
}

/// The certificates of a PEM file: at least one, else an error naming the file.
pub fn load_certificates(
    at: &str,
    option: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = certificates(&read(at, option, path)?);
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            at: at.to_string(),
            option,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The trust anchors of `CACertFile` (every certificate in it) and `CACertPath` (every
/// certificate in every file of the directory; files without one are skipped, as OpenSSL's
/// hashed directories hold other files too). `None` when neither option is set.
pub fn load_roots(cfg: &Config) -> Result<Option<RootCertStore>, TlsError> {
    let file = option_path(cfg, "CACertFile");
    let dir = option_path(cfg, "CACertPath");
    if file.is_none() && dir.is_none() {
        return Ok(None);
    }
    let mut certs = Vec::new();
    if let Some(f) = &file {
        certs.extend(load_certificates(
            &origin(cfg, "CACertFile"),
            "CACertFile",
            f,
        )?);
    }
    if let Some(d) = &dir {
        certs.extend(directory_certificates(&origin(cfg, "CACertPath"), d)?);
    }
    let mut roots = RootCertStore::empty();
    for (i, c) in certs.into_iter().enumerate() {
        if let Err(e) = roots.add(c) {
            let (option, path) = match &file {
                Some(f) => ("CACertFile", f.clone()),
                None => ("CACertPath", dir.clone().unwrap_or_default()),
            };
            return Err(TlsError::Rejected {
                at: origin(cfg, option),
                what: format!("{option} {}: certificate {}", path.display(), i + 1),
                reason: e.to_string(),
            });
        }
    }
    Ok(Some(roots))
}

fn directory_certificates(at: &str, dir: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let entries = std::fs::read_dir(dir).map_err(|source| TlsError::Read {
        at: at.to_string(),
        option: "CACertPath",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut certs = Vec::new();
    for p in paths {
        certs.extend(certificates(&read(at, "CACertPath", &p)?));
    }
    Ok(certs)
}

fn load_key(at: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(at, "ServerKeyFile", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::NoKey {
        at: at.to_string(),
        path: path.to_path_buf(),
    })
}

impl ServerTls {
    /// The server configuration of `cfg`: `Ok(None)` when `ServerCertFile` is not set (no
    /// STARTTLS, as sendmail), an error naming the cf line and the file when a file is
    /// unreadable, holds no certificate or key, or the key does not match the certificate.
    pub fn load(cfg: &Config) -> Result<Option<ServerTls>, TlsError> {
        let cert_path = option_path(cfg, "ServerCertFile");
        let key_path = option_path(cfg, "ServerKeyFile");
        let (cert_path, key_path) = match (cert_path, key_path) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => {
                return Err(TlsError::Incomplete {
                    at: origin(cfg, "ServerCertFile"),
                    option: "ServerCertFile",
                    missing: "ServerKeyFile",
                });
            }
            (None, Some(_)) => {
                return Err(TlsError::Incomplete {
                    at: origin(cfg, "ServerKeyFile"),
                    option: "ServerKeyFile",
                    missing: "ServerCertFile",
                });
            }
        };
        let cert_at = origin(cfg, "ServerCertFile");
        let certs = load_certificates(&cert_at, "ServerCertFile", &cert_path)?;
        let key = load_key(&origin(cfg, "ServerKeyFile"), &key_path)?;
        let client_check = match load_roots(cfg)? {
            Some(roots) => Some(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::Rejected {
                        at: origin(cfg, "CACertFile"),
                        what: "CACertFile/CACertPath".into(),
                        reason: e.to_string(),
                    })?,
            ),
            None => None,
        };
        let rejected = |e: rustls::Error| TlsError::Rejected {
            at: cert_at.clone(),
            what: format!(
                "ServerCertFile {} with ServerKeyFile {}",
                cert_path.display(),
                key_path.display()
            ),
            reason: e.to_string(),
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rejected)?;
        let builder = match &client_check {
            Some(inner) => builder.with_client_cert_verifier(Arc::new(RequestCertificate {
                inner: inner.clone(),
            })),
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(certs, key).map_err(rejected)?;
        Ok(Some(ServerTls {
            config: Arc::new(config),
            client_check,
        }))
    }

    /// What a finished handshake negotiated, and what came of the client's certificate.
    pub fn info(&self, conn: &ServerConnection) -> TlsInfo {
        let verify = match (conn.peer_certificates(), &self.client_check) {
            (Some([leaf, chain @ ..]), Some(check)) => {
                match check.verify_client_cert(leaf, chain, UnixTime::now()) {
                    Ok(_) => Verify::Ok,
                    Err(_) => Verify::Fail,
                }
            }
            _ => Verify::No,
        };
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => "NONE".to_string(),
        };
        let (cipher, bits) = conn
            .negotiated_cipher_suite()
            .map_or(("NONE".to_string(), 0), |s| openssl_name(s.suite()));
        TlsInfo {
            version,
            cipher,
            cipher_bits: bits,
            alg_bits: bits,
            verify,
        }
    }
}

/// OpenSSL's name for a suite (what sendmail logs) and its key size in bits.
pub fn openssl_name(suite: CipherSuite) -> (String, u32) {
    let (name, bits) = match suite {
        CipherSuite::TLS13_AES_256_GCM_SHA384 => ("TLS_AES_256_GCM_SHA384", 256),
        CipherSuite::TLS13_AES_128_GCM_SHA256 => ("TLS_AES_128_GCM_SHA256", 128),
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => ("TLS_CHACHA20_POLY1305_SHA256", 256),
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => {
            ("ECDHE-ECDSA-AES256-GCM-SHA384", 256)
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => {
            ("ECDHE-ECDSA-AES128-GCM-SHA256", 128)
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            ("ECDHE-ECDSA-CHACHA20-POLY1305", 256)
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => ("ECDHE-RSA-AES256-GCM-SHA384", 256),
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => ("ECDHE-RSA-AES128-GCM-SHA256", 128),
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => {
            ("ECDHE-RSA-CHACHA20-POLY1305", 256)
        }
        other => return (format!("{other:?}"), 0),
    };
    (name.to_string(), bits)
}

/// Asks for a client certificate without requiring one, and accepts whatever chain comes
/// (the handshake signature is still checked, so the client must hold the key); whether it
/// chains to the CA is decided after the handshake ([`ServerTls::info`]), as sendmail
/// records `verify=FAIL` instead of dropping the connection.
#[derive(Debug)]
struct RequestCertificate {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for RequestCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
