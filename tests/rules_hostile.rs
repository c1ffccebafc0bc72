//! Hostile input for the rules engine and `-bt`: random bytes as commands and addresses,
//! random cf text, and rules built to loop or explode. Nothing may panic, and every run
//! must finish quickly (loop limit, recursion limit, matcher step budget).

use sendmail_rs::rules::bt::Session;
use sendmail_rs::rules::cf::{HostInfo, load};
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a [u8]]) -> &'a [u8] {
        v[(self.next() % v.len() as u64) as usize]
    }
}

const CF: &str = "V10/Berkeley
O OperatorChars=.:%@!^/[]+
Cwlocalhost
Kdequote dequote
Karith arith
Scanonify=3
R$@\t$@ <@>
R$* < $* > $*\t$2
R$* @ $*\t$: $1 < @ $[ $2 $] >
R$* < @ $* . > \t$@ $1 < @ $2 >
Sparse=0
R$* < @ $=w > $*\t$# local $: $1
R$* < @ $+ > $*\t$# relay $@ $2 $: $1 < @ $2 > $3
R$+\t$# local $: $( dequote $1 $)
Sloop=10
R$*\t$1 x
Srec=11
R$*\t$: $>rec $1
Sgrow=12
R$*\t$: $1 $1 $1 $1
R$*\t$@ $>grow $1
Sclass=13
R$* $=w $* $=w $* $=w $*\t$@ $1
Sarith=14
R$-\t$: $(arith + $@ $1 $@ 1 $)
Sexp=15
R$* $* $* $* $* $* x\t$@ y
Mlocal, P=/bin/true, F=lsDFM, A=true $u
Mrelay, P=[IPC], F=mDFMuX, A=TCP $h
";

fn host() -> HostInfo {
    HostInfo {
        hostname: "oracle.example.test".into(),
        addresses: vec!["127.0.0.1".parse().unwrap()],
    }
}

fn session() -> Session {
    let (e, x) = load(CF.as_bytes(), "hostile.cf", &host()).expect("test cf loads");
    Session::new(e, x)
}

fn run(input: &[u8]) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    session().run(input, &mut out);
    (out, start.elapsed())
}

#[test]
fn looping_and_exploding_rules_stop() {
    let (out, took) = run(b"loop a\nrec a\ngrow a b c\narith 5\n");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("Infinite loop in ruleset loop, rule 1"),
        "{text}"
    );
    assert!(text.contains("excessive recursion"), "{text}");
    assert!(text.contains("expansion too long"), "{text}");
    assert!(text.contains("arith            returns: 6"), "{text}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn class_pattern_with_many_tokens_is_bounded() {
    // 120 tokens, none in $=w: every split is tried until the step budget runs out
    let addr = "a ".repeat(120);
    let (out, took) = run(format!("class {addr}\n").as_bytes());
    assert!(String::from_utf8_lossy(&out).contains("class            returns:"));
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn exponential_backtracking_is_cut_by_the_step_budget() {
    let addr = "a ".repeat(120);
    let (out, took) = run(format!("exp {addr}\n").as_bytes());
    assert!(String::from_utf8_lossy(&out).contains("exp              returns: a a"));
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn random_commands_do_not_panic() {
    let pieces: &[&[u8]] = &[
        b"3,0 ",
        b"0 ",
        b"loop ",
        b"/parse ",
        b"/try local ",
        b"/try relay ",
        b"/sender ",
        b"/map dequote ",
        b"/map arith ",
        b"/map host ",
        b".D",
        b".C",
        b"$",
        b"$=",
        b"=S",
        b"=M",
        b"/tryflags ",
        b"/expand ",
        b"/header ",
        b"?",
        b"#",
        b"/canon ",
        b"/mx ",
        b"<",
        b">",
        b"(",
        b")",
        b"\"",
        b"\\",
        b"@",
        b"%",
        b"!",
        b":",
        b";",
        b",",
        b"[",
        b"]",
        b"$*",
        b"$#",
        b"$|",
        b"${",
        b"}",
        b"a",
        b"bob",
        b"oracle",
        b" ",
        b"\t",
        b"\x01",
        b"\x7f",
        b"\x80",
        b"\x82",
        b"\xff",
        b"\xf6",
        b"localhost",
        b"x.y.z",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut input = Vec::new();
    for _ in 0..400 {
        let n = rng.next() % 12;
        for _ in 0..n {
            input.extend_from_slice(rng.pick(pieces));
        }
        input.push(b'\n');
    }
    let (out, took) = run(&input);
    assert!(out.starts_with(b"ADDRESS TEST MODE"));
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn random_bytes_do_not_panic() {
    let mut rng = Rng(0x0bad_f00d_dead_beef);
    for _ in 0..50 {
        let mut input = Vec::new();
        for _ in 0..20 {
            input.extend_from_slice(b"3,0 ");
            let n = rng.next() % 300;
            for _ in 0..n {
                input.push((rng.next() % 256) as u8);
            }
            input.push(b'\n');
        }
        let _ = run(&input);
    }
}

#[test]
fn random_cf_text_loads_or_reports_errors() {
    let pieces: &[&[u8]] = &[
        b"R", b"S", b"D", b"C", b"F", b"K", b"M", b"O", b"V", b"\t", b"$*", b"$+", b"$=w", b"$>",
        b"$@", b"$:", b"$#", b"$(", b"$)", b"$[", b"$]", b"$1", b"$9", b"$&x", b"{", b"}", b"=",
        b",", b"x", b"100", b"999", b" ", b"\n", b"\n\t",
    ];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..300 {
        let mut text = Vec::new();
        for _ in 0..(rng.next() % 60) {
            text.extend_from_slice(rng.pick(pieces));
        }
        if let Ok((e, x)) = load(&text, "random.cf", &host()) {
            let mut out = Vec::new();
            Session::new(e, x).run(b"3,0 a@b\n0 x\n=S0\n=M\n".as_slice(), &mut out);
        }
    }
}
