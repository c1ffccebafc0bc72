//! AUTH against a site's existing passwords through Cyrus SASL's `saslauthd` (issue 18
//! item 7): the real `saslauthd` from Debian (`sasl2-bin`), started here with a private
//! socket directory (`-m DIR`) and `-a sasldb` over a sasldb2 made with `saslpasswd2`. The
//! daemon reads `/etc/sasldb2` (its compiled-in path), so it runs in a private mount
//! namespace (`unshare -m`, as root) with the test's file bound over that path: nothing on
//! the machine changes. sendmail-rs finds the site's `Sendmail.conf` through
//! `SASL_CONF_PATH`, as libsasl2 does; swaks speaks AUTH PLAIN and LOGIN to it.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use support::{Daemon, Smtp, WAIT};

const REALM: &str = "mta.example.test";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

const CF: &str = "\
Djmta.example.test
Cwmta.example.test
O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1
O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1
";

/// A running saslauthd over a private sasldb2; killed (by its pid) when dropped.
struct Saslauthd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Saslauthd {
    fn start() -> Saslauthd {
        assert!(
            Path::new("/etc/sasldb2").exists(),
            "/etc/sasldb2 (made by sasl2-bin's postinst) is the mount point for the test's own database"
        );
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sasldb2");
        let mut p = Command::new("saslpasswd2")
            .args(["-p", "-c", "-f", db.to_str().unwrap(), "-u", REALM, USER])
            .stdin(Stdio::piped())
            .spawn()
            .expect("saslpasswd2 (sasl2-bin) is installed");
        p.stdin
            .take()
            .unwrap()
            .write_all(PASSWORD.as_bytes())
            .unwrap();
        assert!(p.wait().unwrap().success());
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        // -d: foreground; -n 0: one process per request, so the pid we hold is the only one
        // that lives on between checks.
        let script = format!(
            "mount --bind {} /etc/sasldb2 && exec saslauthd -a sasldb -d -n 0 -m {}",
            db.display(),
            run.display()
        );
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare (util-linux) is installed");
        let s = Saslauthd { child, dir };
        let start = Instant::now();
        while !s.mux().exists() {
            assert!(start.elapsed() < WAIT, "saslauthd made no socket");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        s
    }

    fn mux(&self) -> PathBuf {
        self.dir.path().join("run/mux")
    }

    /// A `Sendmail.conf` as a site writes it, in a directory for `SASL_CONF_PATH`.
    fn conf_dir(&self, extra: &str) -> PathBuf {
        let conf = self.dir.path().join("sasl2");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("Sendmail.conf"),
            format!(
                "# as /etc/sasl2/Sendmail.conf\npwcheck_method: saslauthd\nsaslauthd_path: {}\n{extra}",
                self.mux().display()
            ),
        )
        .unwrap();
        conf
    }
}

impl Drop for Saslauthd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(conf_dir: &Path) -> Daemon {
    let env = format!("SASL_CONF_PATH={}", conf_dir.display());
    Daemon::start_wrapped(CF, &["-O", "DeliveryMode=queueonly"], &["env", &env])
}

/// swaks with AUTH `mech` as `user`/`password`; its transcript.
fn swaks(d: &mut Daemon, daemon: &str, mech: &str, user: &str, password: &str) -> String {
    let addr = d.addr_of(daemon);
    let out = Command::new("swaks")
        .args(["--server", &addr.ip().to_string()])
        .args(["--port", &addr.port().to_string()])
        .args(["--ehlo", "client.example.test"])
        .args([
            "--auth",
            mech,
            "--auth-user",
            user,
            "--auth-password",
            password,
        ])
        .args([
            "--from",
            "alice@client.example.test",
            "--to",
            "root@mta.example.test",
        ])
        .output()
        .expect("swaks is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_sites_saslauthd_users_authenticate_with_plain_and_login() {
    let sasl = Saslauthd::start();
    let mut d = start_daemon(&sasl.conf_dir(""));
    let t = swaks(&mut d, "MTA-v4", "PLAIN", USER, PASSWORD);
    assert!(t.contains("235 2.0.0 OK Authenticated"), "{t}");
    assert!(t.contains("Message accepted for delivery"), "{t}");
    let t = swaks(&mut d, "MTA-v6", "LOGIN", USER, PASSWORD);
    assert!(t.contains("235 2.0.0 OK Authenticated"), "{t}");
    // The realm written into the login is the one asked about.
    let t = swaks(
        &mut d,
        "MTA-v4",
        "PLAIN",
        &format!("{USER}@{REALM}"),
        PASSWORD,
    );
    assert!(t.contains("235 2.0.0 OK Authenticated"), "{t}");
    let log = d.wait_log_count("AUTH=server, relay=", 3);
    assert!(
        log.contains("AUTH=server, relay=localhost [127.0.0.1], authid=alice, mech=PLAIN, bits=0")
            || log.contains("AUTH=server, relay=[127.0.0.1], authid=alice, mech=PLAIN, bits=0"),
        "{log}"
    );
    assert!(log.contains("authid=alice, mech=LOGIN, bits=0"), "{log}");
    assert!(!log.contains("AUTH failure"), "{log}");
}

#[test]
fn a_wrong_password_an_unknown_user_and_another_realm_are_refused_and_logged() {
    let sasl = Saslauthd::start();
    let mut d = start_daemon(&sasl.conf_dir(""));
    let t = swaks(&mut d, "MTA-v4", "PLAIN", USER, "wrong");
    assert!(t.contains("535 5.7.0 authentication failed"), "{t}");
    let t = swaks(&mut d, "MTA-v4", "LOGIN", "mallory", PASSWORD);
    assert!(t.contains("535 5.7.0 authentication failed"), "{t}");
    let t = swaks(
        &mut d,
        "MTA-v4",
        "PLAIN",
        &format!("{USER}@other.example"),
        PASSWORD,
    );
    assert!(t.contains("535 5.7.0 authentication failed"), "{t}");
    let log = d.wait_log_count("AUTH failure (", 3);
    assert!(
        log.contains("AUTH failure (PLAIN): authentication failure (-13) SASL(-13): authentication failure: Password verification failed, user=alice, relay="),
        "{log}"
    );
    assert!(log.contains("AUTH failure (LOGIN): "), "{log}");
    assert!(log.contains(", user=mallory, relay="), "{log}");
    assert!(!log.contains("AUTH=server"), "{log}");
}

#[test]
fn mech_list_limits_what_ehlo_offers_and_without_the_daemon_nobody_gets_in() {
    let sasl = Saslauthd::start();
    let mut d = start_daemon(&sasl.conf_dir("mech_list: plain\n"));
    let mut c = Smtp::connect(d.addr_of("MTA-v4"));
    c.reply();
    let ehlo = c.cmd("EHLO client.example.test");
    assert!(ehlo.iter().any(|l| l == "250-AUTH PLAIN"), "{ehlo:?}");
    drop(c);
    let t = swaks(&mut d, "MTA-v4", "PLAIN", USER, PASSWORD);
    assert!(t.contains("235 2.0.0 OK Authenticated"), "{t}");
    drop(sasl);
    let t = swaks(&mut d, "MTA-v4", "PLAIN", USER, PASSWORD);
    assert!(t.contains("535 5.7.0 authentication failed"), "{t}");
}
