#!/usr/bin/python3
"""A test filter on real libmilter (python3-milter): uses every action and records the
macros it receives at each stage.

Usage: test_milter.py <socket spec, e.g. unix:/path or inet:port@127.0.0.1> <record file>

Behaviour, chosen by the addresses of the transaction:
  MAIL from discard@...      -> DISCARD at MAIL
  RCPT to reject@...         -> REJECT at RCPT
  RCPT to tempfail@...       -> TEMPFAIL at RCPT
  RCPT to custom@...         -> setreply 553 5.7.2 "custom refusal" at RCPT
  RCPT to quarantine@...     -> quarantine at end of message
  RCPT to spam@...           -> setreply 550 5.7.1 "spam refused" at end of message
  RCPT to slow@...           -> no answer to end of message for 60 seconds
  RCPT to plain@...          -> CONTINUE at end of message, no changes
  otherwise, at end of message: progress, add/insert/change/delete headers, replace the
  body, add a recipient (plain and with ESMTP args), delete remove-me@..., change the
  sender to <changed@filter.test>.
A `negotiate` line is written for each new MTA connection (option negotiation happens once
per connection; a session on a connection kept with SMFIC_QUIT_NC starts at connect).
Each callback appends one line to the record file: the stage, then tab-separated
`m:<macro>=<value>` for each macro defined and `<field>=<value>` for its arguments.
"""
import sys
import time

import Milter

SPEC, RECORD = sys.argv[1], sys.argv[2]
NAMES = ["j", "_", "{daemon_name}", "{if_name}", "{if_addr}", "{tls_version}", "{cipher}",
         "{cipher_bits}", "{cert_subject}", "{cert_issuer}", "i", "{auth_type}",
         "{auth_authen}", "{auth_ssf}", "{auth_author}", "{mail_mailer}", "{mail_host}",
         "{mail_addr}", "{rcpt_mailer}", "{rcpt_host}", "{rcpt_addr}", "{msg_id}",
         "{client_addr}", "{client_name}", "s", "{daemon_addr}"]


def clean(v):
    return str(v).replace("\t", " ").replace("\r", "\\r").replace("\n", "\\n")


def record(stage, milter, **extra):
    fields = [stage]
    for n in NAMES:
        v = milter.getsymval(n)
        if v is not None:
            fields.append("m:%s=%s" % (n, clean(v)))
    for k in sorted(extra):
        fields.append("%s=%s" % (k, clean(extra[k])))
    with open(RECORD, "a") as f:
        f.write("\t".join(fields) + "\n")


class TestMilter(Milter.Base):
    def __init__(self):
        self.rcpts = []
        self.mode = None

    def negotiate(self, opts):
        with open(RECORD, "a") as f:
            f.write("negotiate\n")
        return Milter.Base.negotiate(self, opts)

    def connect(self, hostname, family, hostaddr):
        record("connect", self, hostname=hostname, hostaddr=str(hostaddr))
        return Milter.CONTINUE

    def hello(self, name):
        record("helo", self, helo=name)
        return Milter.CONTINUE

    def envfrom(self, sender, *params):
        self.rcpts = []
        self.mode = None
        record("envfrom", self, sender=sender, params=list(params))
        if sender.lower().startswith("<discard@"):
            return Milter.DISCARD
        return Milter.CONTINUE

    def envrcpt(self, rcpt, *params):
        record("envrcpt", self, rcpt=rcpt, params=list(params))
        low = rcpt.lower()
        if low.startswith("<reject@"):
            return Milter.REJECT
        if low.startswith("<tempfail@"):
            return Milter.TEMPFAIL
        if low.startswith("<custom@"):
            self.setreply("553", "5.7.2", "custom refusal")
            return Milter.REJECT
        if low.startswith("<quarantine@"):
            self.mode = "quarantine"
        if low.startswith("<spam@"):
            self.mode = "spam"
        if low.startswith("<slow@"):
            self.mode = "slow"
        if low.startswith("<plain@"):
            self.mode = "plain"
        self.rcpts.append(rcpt)
        return Milter.CONTINUE

    def data(self):
        record("data", self)
        return Milter.CONTINUE

    def header(self, name, value):
        record("header", self, name=name, value=value)
        return Milter.CONTINUE

    def eoh(self):
        record("eoh", self)
        return Milter.CONTINUE

    def body(self, chunk):
        record("body", self, size=len(chunk))
        return Milter.CONTINUE

    def eom(self):
        record("eom", self)
        if self.mode == "quarantine":
            self.quarantine("held by test filter")
            return Milter.ACCEPT
        if self.mode == "slow":
            time.sleep(60)
        if self.mode == "plain":
            return Milter.CONTINUE
        if self.mode == "spam":
            self.setreply("550", "5.7.1", "spam refused")
            return Milter.REJECT
        self.progress()
        self.addheader("X-Test-Added", "yes")
        self.addheader("X-Test-Inserted", "first", 0)
        self.chgheader("Subject", 1, "changed by filter")
        self.chgheader("X-Delete-Me", 1, None)
        self.replacebody(b"Body replaced by the filter.\r\n")
        self.addrcpt("<added@dest.example>")
        self.addrcpt("<added-par@dest.example>", "NOTIFY=NEVER")
        self.delrcpt("<remove-me@dest.example>")
        self.chgfrom("<changed@filter.test>")
        return Milter.ACCEPT

    def abort(self):
        record("abort", self)
        return Milter.CONTINUE

    def close(self):
        record("close", self)
        return Milter.CONTINUE


def main():
    Milter.factory = TestMilter
    Milter.set_flags(Milter.ADDHDRS + Milter.CHGBODY + Milter.ADDRCPT + Milter.ADDRCPT_PAR
                     + Milter.DELRCPT + Milter.CHGHDRS + Milter.QUARANTINE + Milter.CHGFROM)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    Milter.runmilter("testmilter", SPEC, 60)


if __name__ == "__main__":
    main()
