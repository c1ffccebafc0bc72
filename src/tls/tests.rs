use super::*;

/// A self-signed certificate and its key, PEM, for `names` (the first is the subject):
/// as `openssl req -x509` makes them.
fn self_signed(names: &[String]) -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(names.to_vec())?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[test]
fn cipher_names_are_openssls() {
    assert_eq!(
        openssl_name(CipherSuite::TLS13_AES_256_GCM_SHA384),
        ("TLS_AES_256_GCM_SHA384".to_string(), 256)
    );
    assert_eq!(
        openssl_name(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
        ("ECDHE-RSA-AES128-GCM-SHA256".to_string(), 128)
    );
}

#[test]
fn the_log_line_is_sendmails() {
    let info = TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        cipher_bits: 256,
        alg_bits: 256,
        verify: Verify::No,
    };
    assert_eq!(
        info.log_line("server", "localhost [127.0.0.1]"),
        "STARTTLS=server, relay=localhost [127.0.0.1], version=TLSv1.3, verify=NO, \
         cipher=TLS_AES_256_GCM_SHA384, bits=256/256"
    );
}

fn config_with(lines: &str) -> Config {
    Config::from_str("test.cf", lines, &[]).expect("cf loads")
}

#[test]
fn no_certificate_means_no_tls_and_bad_files_name_the_cf_line() {
    assert!(
        ServerTls::load(&config_with("O LogLevel=9\n"))
            .unwrap()
            .is_none()
    );
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let key = dir.path().join("key.pem");
    let cf = format!(
        "O LogLevel=9\nO ServerCertFile={}\nO ServerKeyFile={}\n",
        cert.display(),
        key.display()
    );
    let err = ServerTls::load(&config_with(&cf)).unwrap_err().to_string();
    assert!(err.contains(":2: ServerCertFile: "), "{err}");
    assert!(err.contains("no certificate"), "{err}");
    let (c, _) = self_signed(&["mx.example.test".into()]).unwrap();
    std::fs::write(&cert, c).unwrap();
    std::fs::create_dir(&key).unwrap();
    let err = ServerTls::load(&config_with(&cf)).unwrap_err().to_string();
    assert!(err.contains(":3: ServerKeyFile: cannot read"), "{err}");
}

#[test]
fn a_matching_pair_loads_and_a_mismatched_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, k1) = self_signed(&["a.example.test".into()]).unwrap();
    let (_, k2) = self_signed(&["b.example.test".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &c1).unwrap();
    std::fs::write(&key, &k1).unwrap();
    let cf = format!(
        "O ServerCertFile={}\nO ServerKeyFile={}\nO CACertFile={}\n",
        cert.display(),
        key.display(),
        cert.display()
    );
    let tls = ServerTls::load(&config_with(&cf)).unwrap().expect("tls");
    assert!(tls.client_check.is_some());
    std::fs::write(&key, &k2).unwrap();
    let err = ServerTls::load(&config_with(&cf)).unwrap_err().to_string();
    assert!(
        err.contains("ServerCertFile") && err.contains("ServerKeyFile"),
        "{err}"
    );
}
