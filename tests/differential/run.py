#!/usr/bin/env python3
"""The differential harness: the same scenarios against the real sendmail and sendmail-rs.

    run.py [--oracle-bin DIR] [--ours-bin DIR] [--work DIR] [-v] [SCENARIO...]

Each target runs in its own private namespaces (ns.sh): Debian's stock sendmail.mc and
submit.mc compiled by m4, Debian's /etc/mail files, the daemon listening on 127.0.0.1:25 and
:587 and a busybox syslogd writing the mail log. Both targets run at the same time; inside
each, this script (``--inside``) plays every scenario in order and records what the client
saw and the log lines the scenario caused. Outside, the two records are normalised (queue
ids, pids, dates, times) and compared; each scenario prints PASS, FAIL (with a diff),
XFAIL (differs, as its data says it still does) or XPASS (the gap it names is closed: the
scenario's `expect:` line must be changed to `pass`). The last line is
``N passed, N failed`` (XFAIL counts as passed, XPASS as failed); the exit status is 0 when
nothing failed.

A scenario is a text file in scenarios/ (see README.md for the step language):

    # what it shows (comment lines)
    expect: pass                  (or: xfail <why it still differs>)
    ---
    connect 127.0.0.1             open an SMTP connection from that address, read the greeting
    > EHLO client.example.test    send a line, record the reply
    $ sendmail -bv root           run a command inside the namespace, record output and status
"""

import argparse
import difflib
import json
import os
import re
import select
import shlex
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCENARIOS = os.path.join(HERE, "scenarios")
READ_TIMEOUT = 15.0  # the longest any reply may take (greet_pause waits 5 s)


# ---------------------------------------------------------------- scenario files

class Scenario:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)[:-4]
        self.expect = "pass"
        self.reason = ""
        self.steps = []
        self.fail2ban = None
        # several connections at once: their processes log in no fixed order
        self.log_any_order = False
        # log lines (normalised) that only one design writes, dropped on both sides; the
        # scenario says why in its comment
        self.ignore_log = []
        head, sep, body = open(path, encoding="utf-8").read().partition("\n---\n")
        if not sep:
            raise ValueError(f"{path}: no '---' line between the header and the steps")
        for line in head.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            key, _, value = line.partition(":")
            value = value.strip()
            if key == "expect":
                word, _, reason = value.partition(" ")
                if word not in ("pass", "xfail") or (word == "xfail" and not reason):
                    raise ValueError(f"{path}: expect: pass | xfail <reason>")
                self.expect, self.reason = word, reason.strip()
            elif key == "fail2ban":
                self.fail2ban = value
            elif key == "ignore-log":
                try:
                    self.ignore_log.append(re.compile(value))
                except re.error as e:
                    raise ValueError(f"{path}: ignore-log: {e}")
            elif key == "log-order":
                if value not in ("any", "as-written"):
                    raise ValueError(f"{path}: log-order: any | as-written")
                self.log_any_order = value == "any"
            else:
                raise ValueError(f"{path}: unknown header {key!r}")
        self.steps = parse_steps(path, body)


def parse_steps(path, body):
    steps = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith(">1 "):
            steps.append(("send1", line[3:]))
        elif line.startswith("> "):
            steps.append(("send", line[2:]))
        elif line == ">":
            steps.append(("send", ""))
        elif line.startswith("$ "):
            stdin = []
            while i < len(lines) and (lines[i].startswith("| ") or lines[i] == "|"):
                stdin.append(lines[i][2:])
                i += 1
            steps.append(("cmd", line[2:], "\n".join(stdin) + ("\n" if stdin else "")))
        elif line == "data":
            body_lines = []
            while i < len(lines) and lines[i] != ".":
                body_lines.append(lines[i])
                i += 1
            i += 1
            steps.append(("data", body_lines))
        else:
            words = line.split()
            verb = words[0]
            if verb in ("connect", "early", "flood", "burst"):
                steps.append((verb, words[1:]))
            elif verb in ("close", "eof", "use"):
                steps.append((verb, words[1:]))
            else:
                raise ValueError(f"{path}: unknown step {line!r}")
    return steps


# ---------------------------------------------------------------- inside the namespace

class Conn:
    def __init__(self, src, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((src, 0))
        self.sock.settimeout(READ_TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def reply(self):
        """One SMTP reply (all its lines), or a marker for EOF/timeout."""
        out = []
        while True:
            line = self.line()
            if line is None:
                out.append("<eof>" if not out else "<eof after partial reply>")
                return out
            out.append(line)
            if len(line) < 4 or line[3] != "-":
                return out

    def line(self):
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                return "<timeout>"
            except OSError as e:
                return f"<{e.strerror}>"
            if not chunk:
                if self.buf:
                    rest, self.buf = self.buf, b""
                    return rest.decode("latin-1") + "<no newline>"
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode("latin-1").rstrip("\r")

    def rest(self):
        out = []
        while True:
            line = self.line()
            if line is None or line.startswith("<"):
                if line:
                    out.append(line)
                return out
            out.append(line)

    def send(self, text):
        try:
            self.sock.sendall(text.encode("latin-1"))
        except OSError as e:
            return f"<send: {e.strerror}>"
        return None


def play(sc, record):
    conns = {}
    cur = None
    for step in sc.steps:
        verb = step[0]
        if verb in ("connect", "early"):
            args = step[1]
            src = args[0]
            port = 25
            name = "c"
            extra = []
            for a in args[1:]:
                if a.startswith("port="):
                    port = int(a[5:])
                elif a.startswith("as="):
                    name = a[3:]
                else:
                    extra.append(a)
            try:
                c = Conn(src, port)
            except OSError as e:
                record.append(f"connect {src}:{port}: {e.strerror}")
                continue
            conns[name] = cur = c
            record.append(f"[{name}] connect from {src} to port {port}")
            if verb == "early":
                text = " ".join(extra)
                record.append(f"[{name}] C (before the greeting): {text}")
                err = c.send(text + "\r\n")
                if err:
                    record.append(err)
                for line in c.reply() + c.reply():
                    record.append(f"[{name}] S: {line}")
            else:
                for line in c.reply():
                    record.append(f"[{name}] S: {line}")
        elif verb == "flood":
            # flood SRC N: N connections from SRC, all held open; each greeting recorded
            src, n = step[1][0], int(step[1][1])
            held = []
            for k in range(n):
                try:
                    c = Conn(src, 25)
                except OSError as e:
                    record.append(f"flood {k}: connect: {e.strerror}")
                    continue
                held.append(c)
                greeting = c.reply()
                record.append(f"[flood {k}] S: {greeting[0]}")
            conns["flood"] = held
        elif verb == "burst":
            # burst SRC N: N connections from SRC one after the other, each greeting recorded
            # and each ended with QUIT
            src, n = step[1][0], int(step[1][1])
            for k in range(n):
                try:
                    c = Conn(src, 25)
                except OSError as e:
                    record.append(f"burst {k}: connect: {e.strerror}")
                    continue
                record.append(f"[burst {k}] S: {c.reply()[0]}")
                c.send("QUIT\r\n")
                c.rest()
                c.sock.close()
        elif verb == "use":
            cur = conns[step[1][0]]
        elif verb in ("send", "send1", "data") and cur is None:
            record.append("<no connection>")
        elif verb == "send1":
            # only the first line of the reply (an EHLO whose keyword list is not the point)
            record.append(f"C: {step[1]}")
            err = cur.send(step[1] + "\r\n")
            if err:
                record.append(err)
            reply = cur.reply()
            record.append(f"S: {reply[0]}" + (" <...>" if len(reply) > 1 else ""))
        elif verb == "send":
            text = step[1]
            record.append(f"C: {text}")
            err = cur.send(text + "\r\n")
            if err:
                record.append(err)
            for line in cur.reply():
                record.append(f"S: {line}")
        elif verb == "data":
            text = "".join(line + "\r\n" for line in step[1]) + ".\r\n"
            record.append(f"C: <message of {len(step[1])} lines>")
            err = cur.send(text)
            if err:
                record.append(err)
            for line in cur.reply():
                record.append(f"S: {line}")
        elif verb == "eof":
            for line in cur.rest():
                record.append(f"S: {line}")
            record.append("S: <eof>")
        elif verb == "close":
            name = step[1][0] if step[1] else None
            c = conns.pop(name, None) if name else cur
            if isinstance(c, list):
                for x in c:
                    x.sock.close()
            elif c is not None:
                c.sock.close()
        elif verb == "cmd":
            cmd, stdin = step[1], step[2]
            record.append(f"$ {cmd}")
            try:
                p = subprocess.run(["bash", "-c", cmd], input=stdin.encode(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   timeout=30)
                for line in p.stdout.decode("latin-1").splitlines():
                    record.append(f"| {line}")
                record.append(f"exit {p.returncode}")
            except subprocess.TimeoutExpired:
                record.append("<timeout>")
    for c in conns.values():
        for x in (c if isinstance(c, list) else [c]):
            x.sock.close()


def daemon_busy():
    """Whether the oracle's daemon still has children (sessions, deliveries) running."""
    pid = os.environ.get("DIFF_DAEMON_PID")
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return bool(f.read().split())
    except OSError:
        return False


def settle(logfile):
    """Waits until the log stops growing and the daemon has no child left (at most 8 s)."""
    deadline = time.monotonic() + 8
    last = -1
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        size = os.path.getsize(logfile)
        if size != last:
            last, stable_since = size, time.monotonic()
        elif time.monotonic() - stable_since >= 0.3 and not daemon_busy():
            return
        time.sleep(0.05)


def inside(args):
    work = os.environ["DIFF_WORK"]
    os.environ["DIFF_HARNESS"] = HERE  # for `$ python3 "$DIFF_HARNESS/bs.py" …`
    logfile = os.path.join(work, "maillog")
    results = {}
    settle(logfile)
    # the start-up lines belong to a first scenario without steps (00-daemon-start) only
    first = Scenario(args.scenarios[0]) if args.scenarios else None
    offset = 0 if first is None or not first.steps else os.path.getsize(logfile)
    for path in args.scenarios:
        sc = Scenario(path)
        record = []
        if sc.steps:
            play(sc, record)
            settle(logfile)
        with open(logfile, encoding="latin-1") as f:
            f.seek(offset)
            log = f.read()
            offset = f.tell()
        results[sc.name] = {"transcript": record, "log": log.splitlines()}
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


# ---------------------------------------------------------------- comparing

SYSLOG = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ mail\.(\w+) (\w+)\[\d+\]: (.*)$")
QID = re.compile(r"\b[0-9A-Za-x]{8}\d{6,}\b")
DATE = re.compile(r"\b(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d\b")
CTIME = re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d(?: \d{4})?\b")
MMDD = re.compile(r"\b\d\d/\d\d \d\d:\d\d\b")
DELAY = re.compile(r"\b(x?delay|pri)=[\d:+]+")
PID = re.compile(r"\bpid=\d+|\bprocess \d+\b|\[\d{3,}\]")
MSGID = re.compile(r"<[0-9A-Za-x]{8}\d{6,}@")
# each target's binary is linked from its own directory (`restarting PATH due to signal`)
BINDIR = re.compile(r"\S*/bin-(?:oracle|ours)/")


# sendmail-rs's $v is its own version (the cf's $Z stays Debian's).
VERSION = re.compile(r"(\bSendmail |\bsendmail version |^\| Version |\bstarting daemon \()(?:8\.17\.1\.9|\d+\.\d+\.\d+)\b")


def norm(line):
    line = VERSION.sub(r"\1VERSION", line)
    line = QID.sub("QID", line)
    line = MSGID.sub("<QID@", line)
    line = DATE.sub("DATE", line)
    line = CTIME.sub("DATE", line)
    line = MMDD.sub("MM/DD hh:mm", line)
    line = DELAY.sub(lambda m: m.group(1) + "=N", line)
    line = PID.sub("PID", line)
    line = BINDIR.sub("BIN/", line)
    return line


def norm_transcript(lines):
    """Normalised client-side lines; the "Compiled with" list of -d0.1 is the build's own,
    so only its presence is compared."""
    out = []
    compiled = False
    for line in lines:
        if line.startswith("|  Compiled with: "):
            compiled = True
            out.append("|  Compiled with: <the build's options>")
            continue
        if compiled and line.startswith("| \t\t"):
            continue
        compiled = False
        out.append(norm(line))
    return out


def norm_log(lines):
    out = []
    for line in lines:
        m = SYSLOG.match(line)
        if not m or m.group(2) != "sendmail":
            continue
        out.append(f"LOG {m.group(1)}: {norm(m.group(3))}")
    return out


def fail2ban_count(logfile, filt):
    """Lines of a mail log that fail2ban's Debian filter FILT matches."""
    plain = logfile + ".syslog"
    with open(logfile, encoding="latin-1") as f, open(plain, "w", encoding="latin-1") as g:
        for line in f:
            # busybox writes "host facility.severity ident[pid]: msg"; syslog files have no
            # facility.severity field, and fail2ban's prefix expects them without it
            g.write(re.sub(r"^(\S+ +\d+ \S+ \S+) mail\.\w+ ", r"\1 ", line))
    filt_path = f"/etc/fail2ban/filter.d/{filt}.conf"
    if not os.path.exists(filt_path):
        return f"{filt_path} missing (apt-get install fail2ban)"
    p = subprocess.run(["fail2ban-regex", "--print-all-matched", plain, filt_path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    m = re.search(r"^Lines: \d+ lines, \d+ ignored, (\d+) matched", p.stdout, re.M)
    if not m:
        return f"fail2ban-regex: {p.stdout[-300:]}"
    matched = [ln.strip() for ln in p.stdout.splitlines() if ln.startswith("|  ")]
    return (int(m.group(1)), matched)


def compare(scenarios, results, works, verbose):
    passed = failed = xfail = 0
    for sc in scenarios:
        if sc.fail2ban:
            sides = []
            for t in ("oracle", "ours"):
                r = fail2ban_count(os.path.join(works[t], "maillog"), sc.fail2ban)
                sides.append(r)
            if all(isinstance(s, tuple) for s in sides):
                a = [f"{sc.fail2ban}: {sides[0][0]} lines matched"] + [norm(x) for x in sides[0][1]]
                b = [f"{sc.fail2ban}: {sides[1][0]} lines matched"] + [norm(x) for x in sides[1][1]]
                a = [a[0]]
                b = [b[0]]
                detail = [f"  oracle: {x}" for x in sides[0][1]] + [f"  ours:   {x}" for x in sides[1][1]]
            else:
                a, b = [str(sides[0])], [str(sides[1])]
                detail = []
        else:
            ro, rr = results["oracle"].get(sc.name), results["ours"].get(sc.name)
            if ro is None or rr is None:
                # a target whose run failed never counts as "the same"
                a = ["<not run>" if ro is None else "ran"]
                b = ["<not run: sendmail-rs>" if rr is None else "ran"]
                detail = []
            else:
                la, lb = norm_log(ro["log"]), norm_log(rr["log"])
                if sc.ignore_log:
                    def kept(lines):
                        return [x for x in lines if not any(r.search(x) for r in sc.ignore_log)]
                    la, lb = kept(la), kept(lb)
                if sc.log_any_order:
                    la, lb = sorted(la), sorted(lb)
                a = norm_transcript(ro["transcript"]) + la
                b = norm_transcript(rr["transcript"]) + lb
                detail = []
        same = a == b
        diff = list(difflib.unified_diff(a, b, "oracle", "sendmail-rs", lineterm="", n=2))
        if sc.expect == "pass":
            status = "PASS" if same else "FAIL"
        else:
            status = "XPASS" if same else "XFAIL"
        if status in ("PASS", "XFAIL"):
            passed += 1
            xfail += status == "XFAIL"
        else:
            failed += 1
        why = f"  ({sc.reason})" if status == "XFAIL" else ""
        if status == "XPASS":
            why = "  (now the same as sendmail: change its expect: line to pass)"
        print(f"{status:5} {sc.name}{why}")
        if status == "FAIL" or (verbose and status == "XFAIL"):
            for line in diff[2:]:
                print("      " + line)
            for line in detail:
                print("      " + line)
        elif verbose and status == "PASS":
            for line in a:
                print("      " + line)
    print(f"{passed} passed, {failed} failed ({xfail} of the passed are expected failures)")
    return failed == 0


def outside(args):
    os.makedirs(args.work, exist_ok=True)
    # a bare name or a path relative to here: the namespace run starts elsewhere
    scenario_paths = [p if os.path.exists(p) else os.path.join(SCENARIOS, p)
                      for p in args.scenarios]
    scenario_paths = [os.path.abspath(p) for p in scenario_paths] or sorted(
        os.path.join(SCENARIOS, f) for f in os.listdir(SCENARIOS) if f.endswith(".txt"))
    scenarios = [Scenario(p) for p in scenario_paths]
    smtp_paths = [s.path for s in scenarios if not s.fail2ban]
    procs, works, outs = {}, {}, {}
    for t, bindir in (("oracle", args.oracle_bin), ("ours", args.ours_bin)):
        works[t] = os.path.join(args.work, t)
        outs[t] = os.path.join(args.work, f"{t}.json")
        if os.path.exists(outs[t]):
            os.unlink(outs[t])
        logf = open(os.path.join(args.work, f"{t}.ns.log"), "w")
        procs[t] = (subprocess.Popen(
            [os.path.join(HERE, "ns.sh"), t, bindir, works[t], sys.executable, __file__,
             "--inside", "--out", outs[t], *smtp_paths],
            stdout=logf, stderr=subprocess.STDOUT), logf)
    results = {}
    for t, (p, logf) in procs.items():
        p.wait()
        logf.close()
        try:
            with open(outs[t]) as f:
                results[t] = json.load(f)
        except OSError:
            print(f"{t}: the namespace run failed; see {logf.name}:")
            print(open(logf.name).read()[-2000:])
            results[t] = {}
    return compare(scenarios, results, works, args.verbose)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--oracle-bin", default=os.path.join(ROOT, "target/differential/bin-oracle"))
    ap.add_argument("--ours-bin", default=os.path.join(ROOT, "target/differential/bin-ours"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target/differential/work"))
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("scenarios", nargs="*")
    args = ap.parse_args()
    if args.inside:
        inside(args)
        return 0
    return 0 if outside(args) else 1


if __name__ == "__main__":
    sys.exit(main())
