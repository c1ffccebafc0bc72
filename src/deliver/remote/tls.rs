//! The client side of STARTTLS (RFC 3207): the TLS settings, the handshake over an SMTP
//! connection, and the certificate check as sendmail does it.
//!
//! In: `CACertFile`, `CACertPath`, `ClientCertFile`/`ClientKeyFile`, `TLSFallbacktoClear`
//! ([`TlsFiles::from_options`], [`TlsSettings::load`]), and at each connection the stream after the server's
//! `220` to our `STARTTLS`. Out: the encrypted stream ([`Stream`]) and what the handshake
//! gave ([`TlsInfo`]: version, cipher, bits, `verify=`), from which the log line
//! `STARTTLS=client, relay=mx.example.test., version=TLSv1.3, verify=OK,
//! cipher=TLS_AES_256_GCM_SHA384, bits=256/256` is written ([`TlsInfo::log_line`]); or the
//! failure and its log line ([`handshake_failure_line`]).
//!
//! Opportunistic TLS never fails on the certificate (sendmail deliver.c, tls.c): the
//! handshake accepts any certificate whose handshake signatures are right, and afterwards
//! the chain is checked against the CAs of `CACertFile`/`CACertPath` only to record
//! `verify=OK` or `verify=FAIL` (no CA configured: always `FAIL`, as with sendmail, which
//! does not read the system store). Like OpenSSL's chain check in sendmail, the host name
//! is not compared with the certificate. Cipher names are OpenSSL's, as sendmail logs them.
//!
//! Sources: op §6.6 (STARTTLS), op §5.6 (`TLSFallbacktoClear`, `CACertFile`, `CACertPath`,
//! `ClientCertFile`, `ClientKeyFile`), cf.README "STARTTLS"; sendmail deliver.c (verify
//! values `OK FAIL NONE SOFTWARE TEMP PROTOCOL`), tls.c `tls_get_info` (the log line).

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tls::{openssl_name, provider, version_name};

use crate::config::macros::MacroLookup;
use crate::config::options::Options;

/// A certificate file that cannot be used. The client then goes on with what it has (no
/// CA: `verify=FAIL`; no client certificate: none shown), and the text is logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsSetupError {
    #[error("STARTTLS=client: CACertFile {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("STARTTLS=client: CACertPath {path}: {reason}")]
    CaPath { path: String, reason: String },
    #[error("STARTTLS=client: ClientCertFile {path}: {reason}")]
    ClientCert { path: String, reason: String },
    #[error("STARTTLS=client: ClientKeyFile {path}: {reason}")]
    ClientKey { path: String, reason: String },
    #[error("STARTTLS=client: ClientCertFile and ClientKeyFile must be given together")]
    HalfPair,
    #[error("STARTTLS=client: TLS setup failed: {0}")]
    Rustls(String),
}

/// The client's TLS settings: one rustls configuration for every connection, and the CAs
/// the server's certificate is checked against afterwards.
#[derive(Clone)]
pub struct TlsSettings {
    config: Arc<ClientConfig>,
    /// The chain check for `verify=`; `None` when no CA was loaded.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// `TLSFallbacktoClear`.
    pub fallback_to_clear: bool,
    /// What could not be loaded (logged at each delivery that uses TLS).
    pub problems: Vec<TlsSetupError>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("has_ca", &self.chain.is_some())
            .field("fallback_to_clear", &self.fallback_to_clear)
            .field("problems", &self.problems)
            .finish()
    }
}

/// The paths the client TLS settings are made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub fallback_to_clear: bool,
}

impl TlsFiles {
    /// From the options (macros in the file names expanded).
    pub fn from_options(o: &Options, macros: &dyn MacroLookup) -> TlsFiles {
        let path = |t: &Option<crate::config::options::Text>| {
            t.as_ref()
                .map(|t| PathBuf::from(t.expand(macros)))
                .filter(|p| !p.as_os_str().is_empty())
        };
        TlsFiles {
            ca_file: path(&o.ca_cert_file),
            ca_path: path(&o.ca_cert_path),
            client_cert: path(&o.client_cert_file),
            client_key: path(&o.client_key_file),
            fallback_to_clear: o.tls_fallback_to_clear,
        }
    }
}

impl TlsSettings {
    /// Loads the files; what cannot be loaded is left out and named in
    /// [`TlsSettings::problems`].
    pub fn load(files: &TlsFiles) -> TlsSettings {
        let provider = provider();
        let mut problems = Vec::new();
        let roots = load_roots(files, &mut problems);
        let chain = if roots.is_empty() {
            None
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| problems.push(TlsSetupError::Rustls(e.to_string())))
                .ok()
        };
        let identity = load_identity(files, &mut problems);
        let config = build_config(provider, identity, &mut problems);
        TlsSettings {
            config,
            chain,
            fallback_to_clear: files.fallback_to_clear,
            problems,
        }
    }

    /// The TLS handshake over `io` (after the server's `220` to `STARTTLS`). `host` is the
    /// server's name as connected (`mx.example.test.`, `[192.0.2.1]`), `addr` its address.
    pub async fn handshake<S>(
        &self,
        io: S,
        host: &str,
        addr: IpAddr,
    ) -> io::Result<(tokio_rustls::client::TlsStream<S>, TlsInfo)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = server_name(host, addr);
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let stream = connector.connect(name.clone(), io).await?;
        let info = self.info(stream.get_ref().1, &name);
        Ok((stream, info))
    }

    fn info(&self, conn: &rustls::ClientConnection, name: &ServerName<'_>) -> TlsInfo {
        let verify = match conn.peer_certificates() {
            None | Some([]) => Verify::No,
            Some([leaf, rest @ ..]) => self.check_chain(leaf, rest, name),
        };
        let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
        let (cipher, bits) = suite.map(openssl_name).unwrap_or(("unknown".into(), 0));
        TlsInfo {
            version: version_name(conn.protocol_version()),
            cipher,
            bits,
            verify,
        }
    }

    /// `OK` when the chain leads to one of our CAs. The name is not checked (sendmail
    /// does not either), so a certificate for another name still verifies.
    fn check_chain(
        &self,
        leaf: &CertificateDer<'_>,
        rest: &[CertificateDer<'_>],
        name: &ServerName<'_>,
    ) -> Verify {
        let Some(chain) = &self.chain else {
            return Verify::Fail;
        };
        match chain.verify_server_cert(leaf, rest, name, &[], UnixTime::now()) {
            Ok(_) => Verify::Ok,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Verify::Ok,
            Err(_) => Verify::Fail,
        }
    }
}

/// The name sent in SNI and used for the check: the host without its trailing dot, or the
/// address for literals.
fn server_name(host: &str, addr: IpAddr) -> ServerName<'static> {
    let bare = host.trim_end_matches('.');
    if bare.starts_with('[') {
        return ServerName::IpAddress(addr.into());
    }
    ServerName::try_from(bare.to_string()).unwrap_or(ServerName::IpAddress(addr.into()))
}

fn load_roots(files: &TlsFiles, problems: &mut Vec<TlsSetupError>) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    if let Some(path) = &files.ca_file {
        match read_certs(path) {
            Ok(certs) => {
                roots.add_parsable_certificates(certs);
            }
            Err(reason) => problems.push(TlsSetupError::CaFile {
                path: path.display().to_string(),
                reason,
            }),
        }
    }
    if let Some(dir) = &files.ca_path {
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                // Every file that holds PEM certificates (the hash links and the files
                // they point to alike; duplicates do no harm).
                for entry in entries.flatten() {
                    if let Ok(certs) = read_certs(&entry.path()) {
                        roots.add_parsable_certificates(certs);
                    }
                }
            }
            Err(e) => problems.push(TlsSetupError::CaPath {
                path: dir.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }
    roots
}

/// The PEM certificates in `path`; an error when there is none.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".to_string());
    }
    Ok(certs)
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn load_identity(files: &TlsFiles, problems: &mut Vec<TlsSetupError>) -> Option<Identity> {
    let (cert, key) = match (&files.client_cert, &files.client_key) {
        (None, None) => return None,
        (Some(c), Some(k)) => (c, k),
        _ => {
            problems.push(TlsSetupError::HalfPair);
            return None;
        }
    };
    let certs = read_certs(cert)
        .map_err(|reason| {
            problems.push(TlsSetupError::ClientCert {
                path: cert.display().to_string(),
                reason,
            })
        })
        .ok()?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| {
            problems.push(TlsSetupError::ClientKey {
                path: key.display().to_string(),
                reason: e.to_string(),
            })
        })
        .ok()?;
    Some((certs, key))
}

fn build_config(
    provider: Arc<CryptoProvider>,
    identity: Option<Identity>,
    problems: &mut Vec<TlsSetupError>,
) -> Arc<ClientConfig> {
    let verifier = Arc::new(AnyCertificate {
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = || {
        ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
    };
    let config = match identity {
        None => builder().with_no_client_auth(),
        Some((certs, key)) => match builder().with_client_auth_cert(certs, key) {
            Ok(c) => c,
            Err(e) => {
                problems.push(TlsSetupError::Rustls(e.to_string()));
                builder().with_no_client_auth()
            }
        },
    };
    Arc::new(config)
}

/// Accepts any certificate during the handshake (opportunistic TLS must not fail on it),
/// but still checks that the server's handshake signatures are made with that
/// certificate's key. The chain is judged afterwards, for `verify=`.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// sendmail's `${verify}` on the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The chain leads to a CA of `CACertFile`/`CACertPath`.
    Ok,
    /// It does not (or no CA is configured).
    Fail,
    /// The server showed no certificate.
    No,
}

impl Verify {
    pub fn as_str(self) -> &'static str {
        match self {
            Verify::Ok => "OK",
            Verify::Fail => "FAIL",
            Verify::No => "NO",
        }
    }
}

/// What one handshake gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// OpenSSL's name: `TLS_AES_256_GCM_SHA384`, `ECDHE-RSA-AES128-GCM-SHA256`.
    pub cipher: String,
    /// The cipher's key bits (sendmail writes them twice: used/algorithm).
    pub bits: u32,
    pub verify: Verify,
}

impl TlsInfo {
    /// `STARTTLS=client, relay=mx.example.test., version=TLSv1.3, verify=FAIL,
    /// cipher=TLS_AES_256_GCM_SHA384, bits=256/256` (tls.c `tls_get_info`, LogLevel > 8).
    pub fn log_line(&self, relay: &str) -> String {
        format!(
            "STARTTLS=client, relay={relay}, version={}, verify={}, cipher={}, bits={}/{}",
            self.version,
            self.verify.as_str(),
            self.cipher,
            self.bits,
            self.bits
        )
    }
}

/// `STARTTLS=client, error: connect failed=-1, reason=…, SSL_error=1, errno=0, retry=0`:
/// sendmail's line after a failed handshake. The reason is the TLS library's text (ours is
/// rustls, so it reads differently from OpenSSL's); `SSL_error` is 1 (`SSL_ERROR_SSL`) for
/// a TLS protocol error and 5 (`SSL_ERROR_SYSCALL`) when the connection itself failed.
pub fn handshake_failure_line(error: &io::Error) -> String {
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let (reason, ssl_error, errno) = match tls {
        Some(e) => (e.to_string(), 1, 0),
        None => (
            error_text(error),
            5,
            error.raw_os_error().unwrap_or_default(),
        ),
    };
    format!(
        "STARTTLS=client, error: connect failed=-1, reason={reason}, SSL_error={ssl_error}, errno={errno}, retry=0"
    )
}

/// The `tls_server` ruleset's answer (proto.m4 `TLS_connection`, `TLS_ERRCODE` 454) to a
/// failed handshake (`verify=SOFTWARE`) ...
pub const HANDSHAKE_FAILED: &str = "454 4.7.0 TLS handshake failed.";
/// ... and to a reply to `STARTTLS` that is neither 220 nor an error (`verify=PROTOCOL`).
pub const STARTTLS_FAILED: &str = "454 4.7.0 STARTTLS failed.";

/// `ruleset=tls_server, arg1=SOFTWARE, relay=mx.example.test, reject=454 4.7.0 TLS
/// handshake failed.` (the relay is `{server_name}`: the host without its trailing dot).
pub fn rejection_line(verify: &str, host: &str, reject: &str) -> String {
    let relay = host.trim_end_matches('.');
    format!("ruleset=tls_server, arg1={verify}, relay={relay}, reject={reject}")
}

/// What the recipients get from a `tls_server` rejection: deferred, `Deferred: 454 4.7.0 …`.
pub fn rejection_outcome(reject: &str) -> crate::deliver::Outcome {
    crate::deliver::Outcome::Temporary {
        dsn: "4.7.0".to_string(),
        text: format!("Deferred: {reject}"),
    }
}

fn error_text(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The connection as the client uses it: plain until STARTTLS succeeds, then encrypted.
pub enum Stream<S> {
    Plain(S),
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
    /// Only while the handshake has the stream.
    Gone,
}

impl<S> Stream<S> {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection lost in TLS handshake",
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_line_reads_as_sendmail_writes_it() {
        let info = TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            bits: 256,
            verify: Verify::Fail,
        };
        assert_eq!(
            info.log_line("mx.example.test."),
            "STARTTLS=client, relay=mx.example.test., version=TLSv1.3, verify=FAIL, cipher=TLS_AES_256_GCM_SHA384, bits=256/256"
        );
    }

    #[test]
    fn unusable_files_are_named_and_leave_tls_usable() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let files = TlsFiles {
            ca_file: Some(dir.path().join("missing.pem")),
            ca_path: Some(dir.path().join("nodir")),
            client_cert: Some(empty.clone()),
            client_key: None,
            fallback_to_clear: false,
        };
        let s = TlsSettings::load(&files);
        assert!(s.chain.is_none());
        assert_eq!(s.problems.len(), 3, "{:?}", s.problems);
        assert!(matches!(&s.problems[0], TlsSetupError::CaFile { .. }));
        assert!(matches!(&s.problems[1], TlsSetupError::CaPath { .. }));
        assert_eq!(s.problems[2], TlsSetupError::HalfPair);
        let files = TlsFiles {
            client_cert: Some(empty.clone()),
            client_key: Some(empty),
            ..TlsFiles::default()
        };
        let s = TlsSettings::load(&files);
        assert!(
            s.problems[0]
                .to_string()
                .starts_with("STARTTLS=client: ClientCertFile "),
            "{:?}",
            s.problems
        );
    }

    #[test]
    fn a_handshake_error_reads_as_sendmail_logs_it() {
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        let line = handshake_failure_line(&tls);
        assert!(
            line.starts_with(
                "STARTTLS=client, error: connect failed=-1, reason=received corrupt message"
            ),
            "{line}"
        );
        assert!(line.ends_with(", SSL_error=1, errno=0, retry=0"), "{line}");
        let reset = io::Error::from_raw_os_error(104);
        assert_eq!(
            handshake_failure_line(&reset),
            "STARTTLS=client, error: connect failed=-1, reason=Connection reset by peer, SSL_error=5, errno=104, retry=0"
        );
    }
}
