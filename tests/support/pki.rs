//! A test PKI made at test time with rcgen: a CA and leaf certificates it signs, written as
//! PEM files into a temp directory, for the daemons' `CACertFile`, `ServerCertFile` and
//! `ServerKeyFile` and for the TLS peers the tests run.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A CA with its certificate in `DIR/ca.pem`.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA named `common_name`, written to `ca.pem` in a fresh temp dir.
    pub fn new(common_name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca = TestCa {
            dir: tempfile::tempdir().unwrap(),
            issuer,
        };
        std::fs::write(ca.path("ca.pem"), ca.issuer.pem()).unwrap();
        ca
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A path in the CA's directory as text.
    pub fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A certificate for the DNS `names` signed by the CA, and its key.
    pub fn leaf(&self, names: &[&str]) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert, key)
    }

    /// Writes a leaf for `names` as `DIR/CERT_FILE` and `DIR/KEY_FILE` (PEM).
    pub fn write_leaf(&self, names: &[&str], cert_file: &str, key_file: &str) {
        let (cert, key) = self.leaf(names);
        std::fs::write(self.path(cert_file), cert.pem()).unwrap();
        std::fs::write(self.path(key_file), key.serialize_pem()).unwrap();
    }
}
