//! sendmail-rs: a memory-safe, IPv6-first drop-in for sendmail.
//!
//! # One message's path, module by module
//!
//! 1. [`cli`] turns sendmail's getopt-style argv (`-bd -q30m -O Opt=val -C file`) into a
//!    [`cli::Mode`]; `main.rs` picks the mode from `argv[0]` too (`mailq`, `newaliases`,
//!    `mailstats`).
//! 2. [`config`] reads a sendmail.cf ([`config::cf`]: `O D C F K M S R H P T V E` lines),
//!    applies `-O` overrides, and yields one typed [`config::Config`]; each
//!    `DaemonPortOptions` becomes a [`config::daemon_options::DaemonPortOptions`].
//! 3. [`daemon`] starts (sockets first, then fork, pid file), handles SIGHUP/SIGTERM, and
//!    runs [`listener`]: one socket per daemon (socket2: `IPV6_V6ONLY`, backlog, buffers).
//! 4. [`inbound`] names the client and builds the session from the configuration;
//!    [`smtp::conn`] feeds the client's bytes to the sans-IO [`smtp::session::Session`],
//!    which answers with replies from [`smtp::reply`].
//! 5. MAIL and RCPT are decided by [`policy`]: the cf's `check_*` rulesets through [`rules`]
//!    (sendmail's rewriting engine, also behind `-bt`), or the built-in relay rules, then the
//!    local-user lookup ([`aliases`], passwd). Without rulesets, [`mailbox`] is the one
//!    reading of an address that the relay check, the lookup and the router share.
//! 6. The session's stages also go to the mail filters ([`milter`]: `InputMailFilters`,
//!    sendmail's milter protocol), whose changes are applied before the commit. At the end
//!    of DATA (or of the last BDAT chunk), [`receive`] adds
//!    `Received:`/`Message-Id:`/`Date:` and commits the message to the durable [`queue`]
//!    (journal, group commit) before the `250`. Command-line
//!    submissions ([`submit`]: `-t`, `-bs`) go through [`queue::maildrop`] instead.
//! 7. [`runner`] routes each recipient ([`deliver::route`]: ruleset 0), expands local ones once and
//!    durably (aliases, `.forward`), and delivers: [`deliver::local`] (mbox, files,
//!    programs, the cf's `Mlocal` program) or [`deliver::remote`] ([`dns`] MX, AAAA then A,
//!    the ESMTP client), then crosses it off, retries or marks it failed;
//!    [`deliver::dsn`] queues the bounce, delay warning or return receipt that is due.
//!    `sendmail -q` ([`runner::cmdline`]) runs it once, in this process or through the
//!    running daemon's control socket ([`runner::control`]).
//!    With `RunAsUser`, [`privsep`] runs all of this as that user after start-up, and local
//!    delivery in a root agent forked before the drop, which re-reads the queue itself.
//! 8. [`log`] writes sendmail's mail-log lines (syslog, `LogFile`, or stderr), and
//!    [`stats`] counts per mailer and per daemon for `mailstats`; [`metrics`] counts the
//!    same events live, which [`exporter`] serves to Prometheus (`MetricsAddress`).
//!
//! # The layers, top to bottom
//!
//! Every import points down this list (or stays inside its own module); `tests/layers.rs`
//! fails on an import that points up or sideways, and on any cycle.
//!
//! | rank | modules | what they are |
//! | --- | --- | --- |
//! | 10 | [`daemon`] | start-up, signals, reload, the accept loop; the only module that wires [`privsep`] in |
//! | 9 | [`privsep`] [`submit`] | the root supervisor and local-delivery agent; `-bm -bs -t -bv` |
//! | 8 | [`runner`] [`inbound`] [`exporter`] | the queue manager (runs, limits, selection, control socket, pickup, notices); serving one client; the metrics listener (`/metrics`, `/healthz`) |
//! | 7 | [`runtime`] | the context: one configuration generation ([`runtime::Current`]) and what a process shares ([`runtime::Shared`]) |
//! | 6 | [`policy`] [`receive`] [`milter`] | MAIL/RCPT decisions; the SMTP message sink into the queue; mail filters (the milter protocol, a sink in front of the queue's) |
//! | 5 | [`deliver`] | mailer choice, local and remote delivery, DSNs; the common [`deliver::Outcome`] |
//! | 4 | [`smtp`] | the sans-IO session, commands, replies, the connection driver |
//! | 3 | [`rules`] [`credentials`] [`makemap`] | the ruleset engine and `-bt`; TLS certificate and AUTH passwords; `makemap` |
//! | 2 | [`cli`] [`tls`] [`dns`] [`aliases`] [`stats`] [`listener`] [`version`] | argv; TLS contexts; the resolver; aliases; `mailstats`; sockets; `-d0.1`'s version block |
//! | 1 | [`config`] [`auth`] [`queue`] | the one sendmail.cf reader; SASL mechanisms and the saslauthd client; queue storage |
//! | 0 | [`sysexits`] [`log`] [`hosts`] [`rlimit`] [`priority`] [`shutdown`] [`mapdb`] [`headers`] [`mailbox`] [`asuser`] [`setgid`] [`conncontrol`] [`metrics`] | ground (mailbox: the one reading of an address; asuser: opening a file with another user's rights; setgid: the submission group's privilege; priority: a thread's nice value; conncontrol: open connections and arrivals per client address; metrics: the live counters and their Prometheus text) |
//!
//! RFCs followed: RFC 5321 (SMTP), RFC 1869/5321 (ESMTP), RFC 3461 (DSN parameters),
//! RFC 3464 (delivery status notifications), RFC 6152 (8BITMIME), RFC 3030 (CHUNKING),
//! RFC 6531 (SMTPUTF8), RFC 7505 (null MX), RFC 3164 (syslog lines).

/// The version this binary reports (`$v`, `starting daemon (VERSION)`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod aliases;
pub mod asuser;
pub mod auth;
pub mod cli;
pub mod config;
pub mod conncontrol;
pub mod credentials;
pub mod daemon;
pub mod deliver;
pub mod dns;
pub mod exporter;
pub mod headers;
pub mod hosts;
pub mod inbound;
pub mod listener;
pub mod log;
pub mod mailbox;
pub mod makemap;
pub mod mapdb;
pub mod metrics;
pub mod milter;
pub mod policy;
pub mod priority;
pub mod privsep;
pub mod queue;
pub mod receive;
pub mod rlimit;
pub mod rules;
pub mod runner;
pub mod runtime;
pub mod setgid;
pub mod shutdown;
pub mod smtp;
pub mod stats;
pub mod submit;
pub mod sysexits;
pub mod tls;
pub mod version;
