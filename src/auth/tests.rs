use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::passwd::PasswordFile;
use super::*;

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

#[test]
fn plain_with_an_initial_response_gives_the_credentials_at_once() {
    let (_, step) = Exchange::start(Mechanism::Plain, Some(&b64("\0alice\0s3cret")));
    assert_eq!(
        step,
        Step::Done(Credentials {
            authzid: None,
            authcid: "alice".into(),
            password: "s3cret".into()
        })
    );
}

#[test]
fn plain_without_one_sends_an_empty_challenge_first() {
    let (mut ex, step) = Exchange::start(Mechanism::Plain, None);
    assert_eq!(step, Step::Challenge(String::new()));
    let Step::Done(c) = ex.respond(&b64("bob\0alice\0pw")) else {
        panic!("expected credentials")
    };
    assert_eq!(
        (c.authzid.as_deref(), c.authcid.as_str()),
        (Some("bob"), "alice")
    );
}

#[test]
fn plain_without_a_user_name_is_bad_protocol() {
    let (_, step) = Exchange::start(Mechanism::Plain, Some(&b64("\0\0pw")));
    assert_eq!(
        step,
        Step::Abort(Abort::Malformed("need authentication name"))
    );
    let (_, step) = Exchange::start(Mechanism::Plain, Some("="));
    assert!(matches!(step, Step::Abort(Abort::Malformed(_))));
}

#[test]
fn login_asks_for_the_user_name_then_the_password() {
    let (mut ex, step) = Exchange::start(Mechanism::Login, None);
    assert_eq!(step, Step::Challenge("VXNlcm5hbWU6".into()));
    assert_eq!(
        ex.respond(&b64("alice")),
        Step::Challenge("UGFzc3dvcmQ6".into())
    );
    let Step::Done(c) = ex.respond(&b64("pw")) else {
        panic!("expected credentials")
    };
    assert_eq!((c.authcid.as_str(), c.password.as_str()), ("alice", "pw"));
}

#[test]
fn a_star_cancels_and_garbage_is_not_base64() {
    let (mut ex, _) = Exchange::start(Mechanism::Login, None);
    assert_eq!(ex.respond("*"), Step::Abort(Abort::Cancelled));
    let (mut ex, _) = Exchange::start(Mechanism::Login, None);
    assert_eq!(
        ex.respond("!!not base64!!"),
        Step::Abort(Abort::NotBase64("!!not base64!!".into()))
    );
}

#[test]
fn mechanisms_are_ours_limited_by_auth_mechanisms() {
    assert_eq!(
        Mechanism::allowed(None),
        vec![Mechanism::Login, Mechanism::Plain]
    );
    let cf = vec!["CRAM-MD5".to_string(), "PLAIN".to_string()];
    assert_eq!(Mechanism::allowed(Some(&cf)), vec![Mechanism::Plain]);
    // In the option's order, as sendmail's intersect() (Debian's sasl.m4 ends PLAIN LOGIN).
    let debian: Vec<String> = "EXTERNAL DIGEST-MD5 CRAM-MD5 PLAIN LOGIN"
        .split(' ')
        .map(String::from)
        .collect();
    assert_eq!(
        Mechanism::allowed(Some(&debian)),
        vec![Mechanism::Plain, Mechanism::Login]
    );
    assert_eq!(Mechanism::parse("plain"), Some(Mechanism::Plain));
    assert_eq!(Mechanism::parse("CRAM-MD5"), None);
}

/// `openssl passwd -6 -salt saltsalt secret`.
const SHA512: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
/// `echo -n secret | argon2 saltsalt -id -e` (t=3, m=4096, p=1).
const ARGON2: &str =
    "$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHQ$OLeWCvLwvsLRPgRDUFsaPr4TPYfqZKBxQuyYI2VLP2w";

#[test]
fn the_password_file_checks_sha512_crypt_and_argon2() {
    let text = format!("# users\nalice:{SHA512}\n\nbob:{ARGON2}\n");
    let f = PasswordFile::parse(&text, Path::new("pw")).expect("parses");
    assert_eq!(f.len(), 2);
    assert!(f.verify("alice", "secret"));
    assert!(!f.verify("alice", "Secret"));
    assert!(f.verify("bob", "secret"));
    assert!(!f.verify("bob", "wrong"));
    assert!(!f.verify("carol", "secret"));
}

#[test]
fn bad_password_file_lines_are_named_with_what_was_expected() {
    let text = format!("alice\nbob:plaintext\nalice:{SHA512}\nalice:{SHA512}\n");
    let errors = PasswordFile::parse(&text, Path::new("/etc/mail/passwd")).unwrap_err();
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 3, "{shown:?}");
    assert_eq!(shown[0], "/etc/mail/passwd:1: expected `user:hash`");
    assert!(
        shown[1].starts_with("/etc/mail/passwd:2: expected a `$6$`"),
        "{}",
        shown[1]
    );
    assert_eq!(shown[2], "/etc/mail/passwd:4: user alice is listed twice");
}

/// Waits (bounded) for a signal that only another task on the runtime can send.
struct NeedsAnotherTask(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl Authenticator for NeedsAnotherTask {
    fn verify(&self, _: &str, _: &str) -> bool {
        let rx = self.0.lock().unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok()
    }
}

/// Without [`Offloaded`] this waits out its 10 s and fails: the check holds the only worker.
#[test]
fn a_password_check_does_not_hold_up_the_other_sessions() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let auth = std::sync::Arc::new(Offloaded(NeedsAnotherTask(std::sync::Mutex::new(rx))));
    let ok = rt.block_on(async move {
        let checking = tokio::spawn(async move { auth.verify("alice", "pw") });
        tokio::task::yield_now().await;
        let other = tokio::spawn(async move { tx.send(()).unwrap() });
        other.await.unwrap();
        checking.await.unwrap()
    });
    assert!(
        ok,
        "the other task ran while the password was being checked"
    );
}
