#!/usr/bin/env python3
"""Crash harness (issue 6 item 1): no acknowledged message is lost when the daemon is
SIGKILLed at random moments.

It starts the real `sendmail -bD` on a private cf (loopback only, everything in one work
directory), sends messages from many concurrent SMTP clients, some to local recipients
(aliases to mbox files in the work directory), some to a remote domain relayed through the
smart host to a sink this script runs, some to both. Meanwhile it SIGKILLs the daemon at
random moments and restarts it each time. Then it lets the queue drain and reports:

* acknowledged: messages whose final `.` got `250` (each carries a unique token, in its
  Message-Id and an `X-Harness-Token:` header, and `END <token>` as its last body line);
* delivered: acknowledged messages found complete at every destination;
* lost: acknowledged messages missing at one destination or more (must be 0);
* duplicated: extra complete copies; SMTP allows them only when a kill came between the
  first copy and the queue update (at-least-once), which is checked per copy (sink copies
  by their arrival time, mbox copies by their `From ` line's second);
* unacknowledged but delivered: the commit was done, the 250 was lost with the kill;
* torn: a kill in the middle of an append left a partial copy in a mailbox;
* queue recovery: `queue recovery:` lines the daemon logged at its starts (torn journal
  frames cut off, never delivered);
* duplicates per kill: duplicated / kills, and the local deliveries' alone
  (`--max-dups-per-kill`, `--max-local-dups-per-kill` make them conditions);
* remote duplicates timed: for each remote copy that was sent again, when the sink recorded
  it and wrote its 250, in ms from the nearest SIGKILL (from the clock read just before
  the signal was sent; the report gives how far apart the reads around each kill(2) were,
  the interpreter lock can hold the signal back by tens of ms).
  A copy recorded after the kill was data the daemon had sent before it died (nothing the
  daemon can mark: no 250 had come); one whose 250 was written before the kill is time the
  daemon took to read the 250 and write its mark (src/runner/marks.rs);
* connections open to the sink just before the kills (median, max): each can hold one
  message the sink took and the daemon had not marked, so the remote duplicates grow with
  them (`DestinationConcurrencyLimit`; docs/reliability.md).

The sink (the remote next hop) runs in a process of its own, one asyncio loop, and records
each message (a write(2) to a file this script reads) before it answers 250: the semantics
of a remote that committed. Until 2026-12-06 it ran as threads of this script, sharing the
GIL with the 50 client threads: a copy could wait 5 ms (the GIL's switch interval) or more
to be read, recorded and answered, time no real MTA adds, which this report counted as the
daemon's duplicates; and, being the slowest part, it held delivery back (the queue drained
in 3-7 s after the clients were done; now in 0.1-0.2 s), which kept the duplicates low. Its
figures are therefore not comparable with the earlier ones: the delivery rate at the kills
is higher, and duplicates per kill grow with it (Little's law). With `--sink smtp-sink`
the next hop is Postfix's smtp-sink instead (C; each message dumped to a file, read after it
is closed: `PostfixSink`), to see how much of the remote duplicates the harness's own sink
adds by holding messages while it waits for a core.

Local delivery goes by the file mailer into mbox files (`--local file`, aliases to the
files), into Maildirs (`--local maildir`, aliases to `…/Maildir/`: sendmail-rs's own
Maildir delivery; a message file in `new/` or `cur/` that is not whole fails the run, files
left in `tmp/` are counted), or (`--local program`) through the cf's `Mlocal` program, as Debian's procmail or
mail.local: a small C program this harness writes and compiles (`mda`; `mda.py`, the same
in Python, where no C compiler works) that takes an exclusive `flock` on the recipient's
mbox, appends what it reads on stdin, fsyncs and exits 0, one run per recipient. A program outlives a SIGKILLed daemon (it runs in its own process group), so
this mode shows what the next daemon makes of deliveries that finished behind its back.

A SIGKILL rarely lands inside a journal write, so the harness also tears the journal on
purpose: after most kills (`--clean-every`), before the restart, it writes into the newest
segment, from the end of its last whole frame on (so after every acknowledged frame, over
the zeroed bytes the daemon keeps ahead of its frames), what a write cut short by a crash
or a power cut leaves behind: a prefix of a real `Put` frame, or the whole frame with a
stale CRC (a torn sector), or a frame header cut short, random bytes; or zeros only, which
are no damage (nothing to log). The copied frames carry a new token (`t…`, never sent by a
client); the run fails if one of those tokens reaches a mailbox or the sink, or if a start
after a damaging tear did not log its `queue recovery:` line.

Exit status 0 when nothing was lost, every duplicate is explained, no torn frame was
delivered, every tear was recovered, and the queue drained.
Usage (the README has the figures): bash bench/crash-harness.sh [--smoke] [options].
"""

import argparse
import glob
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib

TOKEN_RE = re.compile(rb"^X-Harness-Token: (\S+)", re.M)
END_RE = re.compile(rb"^END (\S+)\r?$", re.M)


# ------------------------------------------------------------------ the remote sink


class Sink:
    """The remote next hop: an SMTP server in a process of its own (serve_sink below), which
    records each message it takes before it answers `250` — what a remote MTA that
    committed does. This side reads its records (token, complete, when recorded, when the
    250 was written) from files in `dir`.

    Why a process of its own: run as threads of this process, the sink shared the GIL with
    the 50 client threads, and a copy could wait a switch interval (5 ms) or more before it
    was read, recorded or answered — time no real MTA adds, which the harness counted as
    the daemon's duplicates (most remote duplicates were copies the sink recorded after the
    SIGKILL, data the daemon had sent that sat unread in the sink)."""

    def __init__(self, work):
        self.dir = os.path.join(work, "sink")
        os.makedirs(self.dir)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve-sink", self.dir],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        line = self.proc.stdout.readline().decode()
        if not line.startswith("port "):
            sys.exit(f"the sink did not start: {line!r}")
        self.port = int(line.split()[1])
        self.lock = threading.Lock()
        self.copies = []  # (token, complete, time recorded)
        self.answers = []  # per copy: when its 250 was written (None: not yet, or never)
        self.conns = {}  # per connection: [accepted, ended (None: not yet)]
        self.bodies = bytearray()  # every DATA received, to look for torn tokens
        self.read_to = 0

    def refresh(self):
        """Reads the records written since the last call (call it holding `lock`)."""
        with open(os.path.join(self.dir, "records"), "rb") as f:
            f.seek(self.read_to)
            data = f.read()
        whole = data[: data.rfind(b"\n") + 1]
        self.read_to += len(whole)
        for line in whole.decode().splitlines():
            kind, k, *rest = line.split()
            if kind == "rec":
                token, complete, when = rest
                self.copies.append((None if token == "-" else token, complete == "1", float(when)))
                self.answers.append(None)
            elif kind == "ans":
                self.answers[int(k)] = float(rest[0])
            elif kind == "open":
                self.conns[int(k)] = [float(rest[0]), None]
            elif kind == "close":
                self.conns[int(k)][1] = float(rest[0])
        with open(os.path.join(self.dir, "bodies"), "rb") as f:
            f.seek(len(self.bodies))
            self.bodies += f.read()

    def open_at(self, when):
        """Connections the sink had open at `when` (call it holding `lock`)."""
        return sum(1 for a, b in self.conns.values() if a <= when and (b is None or b > when))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


class PostfixSink(Sink):
    """`--sink smtp-sink`: Postfix's smtp-sink(1) as the next hop instead (C, one event loop),
    each message dumped to a file of its own (`-d`), read here after it is closed — to see
    how much of the remote duplicates comes from the harness's own sink being slow (it
    shares 2 cores with 50 client threads). It gives each copy's time (the file's last
    write), not when the 250 went, nor its connections; the rest of the report is the same."""

    def __init__(self, work):  # its own server: Sink.__init__ would start the harness sink
        self.dir = os.path.join(work, "sink")
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o777)  # smtp-sink writes as nobody when started as root
        self.port = free_port()
        cmd = ["smtp-sink", "-d", os.path.join(self.dir, "%H%M%S.")]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        cmd += [f"127.0.0.1:{self.port}", "1024"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while True:
            with socket.socket() as c:
                if c.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None or time.time() > deadline:
                sys.exit("smtp-sink did not start (the postfix package has it)")
            time.sleep(0.05)
        self.lock = threading.Lock()
        self.copies, self.answers, self.bodies = [], [], bytearray()
        self.read = set()  # dump files taken into `copies`

    def refresh(self):
        """Reads the dump files closed since the last call (call it holding `lock`): a file
        still being written (its message not whole yet, or written in the last 0.2 s) waits
        for the next call."""
        now = time.time()
        for name in sorted(os.listdir(self.dir)):
            if name in self.read:
                continue
            path = os.path.join(self.dir, name)
            try:
                st = os.stat(path)
                with open(path, "rb") as f:
                    body = f.read()
            except OSError:
                continue
            tok, end = TOKEN_RE.search(body), END_RE.search(body)
            complete = bool(tok and end and end.group(1) == tok.group(1))
            if not complete and now - st.st_mtime < 0.2:
                continue
            token = tok.group(1).decode() if tok else None
            self.read.add(name)
            self.copies.append((token, complete, st.st_mtime))
            self.answers.append(None)
            self.bodies += body

    def open_at(self, when):
        """Not known: smtp-sink does not say when connections open and end."""
        return None


def serve_sink(out):
    """The sink's process: one asyncio loop (no threads, so no GIL hand-offs), port on
    stdout. Per message: its body appended to `out/bodies`, then a line `rec K TOKEN
    COMPLETE TIME` to `out/records` (each one write(2): that is the commit, which this
    process's end does not undo), then the `250`, then `ans K TIME`. Per connection, `open
    C TIME` when it is accepted and `close C TIME` when it ends."""
    import asyncio

    bodies = os.open(os.path.join(out, "bodies"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    records = os.open(os.path.join(out, "records"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    count = [0]
    conns = [0]

    def record(body):
        tok = TOKEN_RE.search(body)
        end = END_RE.search(body)
        token = tok.group(1).decode() if tok else "-"
        complete = int(bool(tok and end and end.group(1) == tok.group(1)))
        os.write(bodies, body)
        k = count[0]
        count[0] += 1
        os.write(records, f"rec {k} {token} {complete} {time.time():.6f}\n".encode())
        return k

    async def converse(reader, writer):
        writer.write(b"220 sink.example.test ESMTP harness sink\r\n")
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-sink.example.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                writer.write(b"250 2.0.0 Ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                lines = []
                while True:
                    line = await reader.readline()
                    if not line:
                        return  # cut off before the final dot: nothing was taken
                    if line == b".\r\n":
                        break
                    lines.append(line[1:] if line.startswith(b".") else line)
                k = record(b"".join(lines))
                writer.write(b"250 2.0.0 Ok: queued\r\n")  # sent now when the socket takes it
                os.write(records, f"ans {k} {time.time():.6f}\n".encode())
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                writer.close()
                return
            else:
                writer.write(b"500 5.5.1 what\r\n")
            await writer.drain()

    async def handle(reader, writer):
        c = conns[0]
        conns[0] += 1
        os.write(records, f"open {c} {time.time():.6f}\n".encode())
        try:
            await converse(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass  # the daemon was killed in mid-session
        finally:
            writer.close()
            os.write(records, f"close {c} {time.time():.6f}\n".encode())

    async def main():
        server = await asyncio.start_server(
            handle, "127.0.0.1", 0, backlog=1024, limit=1 << 20, reuse_address=True
        )
        print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

    asyncio.run(main())


# ------------------------------------------------------------------ the daemon


def free_port():
    """A free port below the ephemeral range: a port the kernel hands out (bind to 0) can
    be taken by a client connection's source port while the daemon is down between a kill
    and its restart, which then cannot bind it (seen once in 12 runs)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    pick = random.Random()
    for _ in range(1000):
        port = pick.randrange(min(10000, low - 1000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    sys.exit("no free port below the ephemeral range")


MDA = """#!/usr/bin/env python3
import fcntl, os, sys
data = sys.stdin.buffer.read()
with open(%r[sys.argv[1]], "ab") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.write(data if data.endswith(b"\\n\\n") else data + b"\\n")
    f.flush()
    os.fsync(f.fileno())
"""


# The same program in C, as procmail and mail.local are: a Python interpreter per delivery
# (tens of ms of CPU) would compete with the daemon for the cores far more than a real
# MDA does. Used when a C compiler is there; else mda.py. Exit 75 (EX_TEMPFAIL) on error.
MDA_C = r"""#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
static const char *box(const char *u) {
%(cases)s    return 0;
}
int main(int argc, char **argv) {
    const char *path = argc > 1 ? box(argv[1]) : 0;
    if (!path) return 67;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len == cap && !(buf = realloc(buf, cap *= 2))) return 75;
        ssize_t n = read(0, buf + len, cap - len);
        if (n < 0) return 75;
        if (n == 0) break;
        len += (size_t)n;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) < 0) return 75;
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n <= 0) return 75;
        off += (size_t)n;
    }
    if (!(len >= 2 && buf[len - 1] == '\n' && buf[len - 2] == '\n') && write(fd, "\n", 1) != 1)
        return 75;
    return fsync(fd) < 0 ? 75 : 0;
}
"""


def build_mda(work, boxes_of):
    """The harness's MDA: compiled from MDA_C when `cc` works, else the Python one."""
    cases = "".join(
        f'    if (!strcmp(u, "{u}")) return "{path}";\n' for u, path in boxes_of.items()
    )
    src = os.path.join(work, "mda.c")
    exe = os.path.join(work, "mda")
    with open(src, "w") as f:
        f.write(MDA_C % {"cases": cases})
    try:
        subprocess.run(["cc", "-O2", "-o", exe, src], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return exe
    except (OSError, subprocess.CalledProcessError):
        mda = os.path.join(work, "mda.py")
        with open(mda, "w") as m:
            m.write(MDA % boxes_of)
        os.chmod(mda, 0o755)
        return mda


class Daemon:
    def __init__(self, binary, work, sink_port, boxes, local="file", run_as=None):
        self.binary = binary
        # `RunAsUser`: the daemon serves SMTP and the queue as that user; the root agent
        # delivers locally (src/privsep/)
        self.daemon_args = ["-O", f"RunAsUser={run_as}"] if run_as else []
        self.work = work
        self.port = free_port()
        self.cf = os.path.join(work, "sendmail.cf")
        self.log = os.path.join(work, "maillog")
        self.proc = None
        self.starts = 0
        self.mda = None  # the program mode's MDA (mda, compiled, or mda.py)
        self.local = local
        self.reaped = []  # seconds from each SIGKILL to the daemon's end
        self.sending = []  # seconds between the clock reads around each kill(2)
        self.bind_retries = 0  # starts that found the port still taken
        # An alias's /file is written as DefaultUser, as sendmail's mailfile() does: the
        # mailboxes live in a directory that user can reach and write (sticky, like /tmp).
        os.chmod(work, 0o755)
        os.makedirs(os.path.join(work, "boxes"), exist_ok=True)
        os.chmod(os.path.join(work, "boxes"), 0o1777)
        aliases = os.path.join(work, "aliases")
        mailer = ""
        with open(aliases, "w") as f:
            if local == "file":
                for i in range(boxes):
                    f.write(f"box{i}: {self.mbox(i)}\n")
            elif local == "maildir":
                # the trailing slash makes the alias a Maildir, delivered by sendmail-rs
                # itself as DefaultUser (mailnull, else 1:1), as the file mailer's mbox
                owner = default_user()
                for i in range(boxes):
                    for sub in ("tmp", "new", "cur"):
                        d = os.path.join(self.maildir(i), sub)
                        os.makedirs(d, exist_ok=True)
                    if os.geteuid() == 0:  # else the daemon writes as this user
                        for d, _, _ in os.walk(os.path.dirname(self.maildir(i))):
                            os.chown(d, *owner)
                    f.write(f"box{i}: {self.maildir(i)}/\n")
            else:
                # boxN is an alias for an account of this host (the server checks local
                # users at RCPT); the program maps the account back to boxN's mbox.
                import pwd
                users = sorted(p.pw_name for p in pwd.getpwall() if p.pw_uid != 0)[:boxes]
                if len(users) < boxes:
                    sys.exit(f"--local program needs {boxes} accounts on this host")
                for i, u in enumerate(users):
                    f.write(f"box{i}: {u}\n")
                mda = build_mda(work, {u: self.mbox(i) for i, u in enumerate(users)})
                self.mda = os.path.basename(mda)
                # as Debian's procmail mailer: a From line, Return-Path; S keeps root
                mailer = f"Mlocal, P={mda}, F=lsDFMAS5:/|@qP, T=DNS/RFC822/X-Unix, A=mda $u\n"
        with open(self.cf, "w") as f:
            f.write(
                "Djmta.example.test\n"
                "Cwmta.example.test\n"
                "DSrelay:[127.0.0.1]\n"
                f"O AliasFile={aliases}\n"
                f"O DaemonPortOptions=Name=MTA-v4, Family=inet, Port={self.port}, Addr=127.0.0.1, Listen=1024\n"
                "Mrelay, P=[IPC], F=mDFMuXa8, E=\\r\\n, L=2040, T=DNS/RFC822/SMTP, "
                f"A=TCP $h {sink_port}\n"
                + mailer
            )
        self.args = [
            "-C", self.cf,
            "-O", f"LogFile={self.log}",
            "-O", f"PidFile={os.path.join(work, 'sendmail.pid')}",
            "-O", f"StatusFile={os.path.join(work, 'sendmail.st')}",
            "-O", f"QueueDirectory={os.path.join(work, 'mqueue')}",
            "-O", "LogLevel=9",
        ]
        out = subprocess.run([binary, "-bi"] + self.args, capture_output=True, timeout=30)
        if out.returncode != 0:
            sys.exit(f"newaliases failed: {out.stderr.decode(errors='replace')}")

    def mbox(self, i):
        return os.path.join(self.work, "boxes", f"box{i}.mbox")

    def maildir(self, i):
        return os.path.join(self.work, "boxes", f"box{i}", "Maildir")

    def local_copies(self, i):
        """(token, complete, time) for each copy delivered to box i."""
        if self.local == "maildir":
            return maildir_copies(self.maildir(i))
        return mbox_copies(self.mbox(i))

    def local_bytes(self, i):
        """Everything delivered to box i, as one byte string."""
        if self.local == "maildir":
            return b"".join(maildir_files(self.maildir(i), ("new", "cur", "tmp")).values())
        try:
            with open(self.mbox(i), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def maildir_leftovers(self, boxes):
        """Files left in the Maildirs' tmp/ (deliveries a SIGKILL cut short)."""
        if self.local != "maildir":
            return 0
        return sum(len(maildir_files(self.maildir(i), ("tmp",))) for i in range(boxes))

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def listening(self):
        # sendmail logs no line per listener (since b5732eb neither do we, unless Port=0 or
        # LogLevel > 13): the previous daemon is dead (waited for), so a port that accepts
        # is the new daemon's.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def started(self):
        """The port accepts and this very daemon logged its start (which it does after it
        bound its ports): a port that accepts may still be the killed daemon's listening
        socket, held by a mailer it was forking (then the new daemon waits and tries again,
        5 s later, as sendmail's opendaemonsocket)."""
        mine = f"sendmail[{self.proc.pid}]: starting daemon"
        return self.listening() and mine in self.log_text()

    def start(self):
        """Starts the daemon and waits for its port. A start that cannot bind the port
        (exit 71) is tried again, up to 5 s: a mailer program the killed daemon was
        starting holds a copy of the listening socket from its fork until its exec, which
        on a machine this loaded took long enough, twice in ~20 program-mode runs, for the
        restart to find the port taken (as an init system restarts a daemon that failed).
        Since the daemon tries again by itself (10 tries, 5 s apart, `problem creating SMTP
        socket` in its log), this loop only serves builds that exit at once."""
        deadline = time.time() + 30
        retry_until = time.time() + 5
        while True:
            self.proc = subprocess.Popen(
                [self.binary, "-bD"] + self.args + self.daemon_args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(self.work, "stderr"), "ab"),
            )
            self.starts += 1
            while not self.started() and self.proc.poll() is None:
                if time.time() > deadline:
                    sys.exit(f"daemon did not listen within 30 s; see {self.work}")
                time.sleep(0.02)
            if self.proc.poll() == 71 and time.time() < retry_until:
                self.bind_retries += 1
                time.sleep(0.1)
                continue
            break
        while not self.started():
            if self.proc.poll() is not None:
                sys.exit(f"daemon exited with {self.proc.returncode} at start; see {self.work}")
            if time.time() > deadline:
                sys.exit(f"daemon did not listen within 30 s; see {self.work}")
            time.sleep(0.02)

    def kill(self):
        """SIGKILL; returns when it was sent, as (not before, not after): the daemon runs
        no code after that moment, while the wait for its end can take tens of ms on a
        loaded machine. The two bounds are the clock read just before and just after the
        kill(2): this script's 50 client threads share one interpreter lock, which the
        thread sending the signal may lose between reading the clock and sending it (up to
        70 ms seen on this machine's 2 cores under the full run's load)."""
        at = time.time()
        os.kill(self.proc.pid, signal.SIGKILL)
        sent = time.time()
        self.proc.wait(timeout=30)
        self.reaped.append(time.time() - at)
        self.sending.append(sent - at)
        return (at, sent)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def queue_empty(self):
        out = subprocess.run([self.binary, "-bp"] + self.args, capture_output=True, timeout=30)
        return b"is empty" in out.stdout


# ------------------------------------------------------------------ the clients


class Clients:
    """`n` SMTP clients sending messages 0..total-1 (several per connection)."""

    def __init__(self, port, total, boxes, per_conn):
        self.port = port
        self.total = total
        self.boxes = boxes
        self.per_conn = per_conn
        self.lock = threading.Lock()
        self.next = 0
        self.acked = {}  # token -> destinations
        self.attempts = {}  # token -> destinations, acknowledged or not
        self.errors = 0

    def destinations(self, idx):
        local = f"box{idx % self.boxes}@mta.example.test"
        remote = f"r{idx}@remote.example.test"
        return [[local], [remote], [local, remote]][idx % 3]

    def take(self):
        with self.lock:
            if self.next >= self.total:
                return None
            self.next += 1
            return self.next - 1

    def run(self):
        idx = self.take()
        attempt = 0
        while idx is not None:
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as s:
                    s.ehlo("client.example.test")
                    for _ in range(self.per_conn):
                        if idx is None:
                            break
                        token = f"m{idx}a{attempt}"
                        rcpts = self.destinations(idx)
                        with self.lock:
                            self.attempts[token] = rcpts
                        s.sendmail("sender@client.example.test", rcpts, message(token, rcpts))
                        with self.lock:
                            self.acked[token] = rcpts
                        idx, attempt = self.take(), 0
            except (OSError, smtplib.SMTPException):
                # The daemon was killed (or refused): send this message again, new token.
                with self.lock:
                    self.errors += 1
                attempt += 1
                time.sleep(0.05)


def message(token, rcpts):
    return (
        f"From: sender@client.example.test\r\n"
        f"To: {', '.join(rcpts)}\r\n"
        f"Subject: harness {token}\r\n"
        f"Message-Id: <{token}@harness.example.test>\r\n"
        f"X-Harness-Token: {token}\r\n"
        f"\r\n"
        + "".join(f"line {i} of {token}\r\n" for i in range(20))
        + f"END {token}\r\n"
    )


# ------------------------------------------------------------------ reading the results


def mbox_copies(path):
    """(token, complete, time of the From line) for each message in an mbox file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for part in re.split(rb"(?m)^(?=From )", data):
        if not part.startswith(b"From "):
            continue
        first = part.split(b"\n", 1)[0].decode(errors="replace")
        when = from_line_time(first)
        tok = TOKEN_RE.search(part)
        ends = END_RE.findall(part)
        token = tok.group(1).decode() if tok else None
        complete = bool(tok) and ends == [tok.group(1)]
        out.append((token, complete, when))
    return out


def maildir_files(maildir, subdirs):
    """path -> contents of the files in a Maildir's `subdirs`."""
    out = {}
    for sub in subdirs:
        d = os.path.join(maildir, sub)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for n in names:
            p = os.path.join(d, n)
            try:
                with open(p, "rb") as f:
                    out[p] = f.read()
            except (FileNotFoundError, IsADirectoryError):
                pass  # moved from new/ to cur/ meanwhile, or not a message
    return out


def maildir_copies(maildir):
    """(token, complete, mtime) for each message file in a Maildir's new/ and cur/."""
    out = []
    for p, data in maildir_files(maildir, ("new", "cur")).items():
        tok = TOKEN_RE.search(data)
        ends = END_RE.findall(data)
        token = tok.group(1).decode() if tok else None
        try:
            when = os.stat(p).st_mtime
        except FileNotFoundError:
            when = None
        out.append((token, bool(tok) and ends == [tok.group(1)], when))
    return out


def default_user():
    """(uid, gid) the daemon writes an alias's file or Maildir as: mailnull, else 1:1."""
    import pwd
    try:
        p = pwd.getpwnam("mailnull")
        return p.pw_uid, p.pw_gid
    except KeyError:
        return 1, 1


def from_line_time(line):
    # "From sender@client.example.test Wed Dec  2 16:11:10 2026"
    parts = line.split()
    try:
        stamp = " ".join(parts[2:7])
        return time.mktime(time.strptime(stamp, "%a %b %d %H:%M:%S %Y"))
    except (ValueError, IndexError):
        return None


def explained(times, kills, slack):
    """Every copy after the first has a kill between it and the copy before it (a kill is
    the interval in which its signal was sent: `Daemon.kill`)."""
    times = sorted(t for t in times if t is not None)
    for a, b in zip(times, times[1:]):
        if not any(a - slack <= sent and at <= b + slack for at, sent in kills):
            return False
    return True


# ------------------------------------------------------------------ tearing the journal

FRAME_MAGIC = 0xA5  # src/queue/file.rs: magic, kind, len u32 BE, CRC-32 u32 BE, payload
FRAME_HEADER = 10
TEAR_MODES = ("prefix", "stale-crc", "zeros", "random", "header")


def segments(journal):
    return sorted(glob.glob(os.path.join(journal, "*.seg")))


def put_frames(path):
    """Payloads of the whole, checked `Put` frames of a segment, and where they end."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0
    out, pos = [], 0
    while pos + FRAME_HEADER <= len(data) and data[pos] == FRAME_MAGIC:
        kind = data[pos + 1:pos + 2]
        n = int.from_bytes(data[pos + 2:pos + 6], "big")
        crc = int.from_bytes(data[pos + 6:pos + 10], "big")
        payload = data[pos + FRAME_HEADER:pos + FRAME_HEADER + n]
        if len(payload) < n or zlib.crc32(data[pos + 1:pos + 6] + payload) != crc:
            break
        if kind == b"P":
            out.append(payload)
        pos += FRAME_HEADER + n
    return out, pos


def frame(kind, payload, crc=None):
    head = kind + len(payload).to_bytes(4, "big")
    crc = zlib.crc32(head + payload) if crc is None else crc
    return bytes([FRAME_MAGIC]) + head + crc.to_bytes(4, "big") + payload


class Tearer:
    """Damages the tail of the journal between a SIGKILL and the restart."""

    def __init__(self, journal, rng):
        self.journal = journal
        self.rng = rng
        self.template = None  # a real Put frame's payload holding a harness message
        self.tears = []  # (mode, segment, bytes appended)
        self.torn_tokens = []

    def tear(self, mode):
        segs = segments(self.journal)
        if not segs:
            return None
        newest = segs[-1]
        if self.template is None:
            for seg in reversed(segs):
                found = [p for p in put_frames(seg)[0] if TOKEN_RE.search(p)]
                if found:
                    self.template = found[-1]
                    break
        if self.template is None and mode in ("prefix", "stale-crc"):
            mode = "random"
        rng = self.rng
        if mode in ("prefix", "stale-crc"):
            old = TOKEN_RE.search(self.template).group(1)
            new = b"t%0*d" % (len(old) - 1, len(self.torn_tokens))
            self.torn_tokens.append(new.decode())
            payload = self.template.replace(old, new)
            if mode == "prefix":
                whole = frame(b"P", payload)
                # Cut somewhere after the new token's first appearance, short of the end.
                first = whole.index(new) + len(new)
                tail = whole[:rng.randrange(first, len(whole))]
            else:
                # Whole length, but the CRC is the one of the frame before the token
                # changed: what a sector that never reached the disk looks like.
                tail = frame(b"P", payload, crc=zlib.crc32(b"P" + len(payload).to_bytes(4, "big") + self.template))
        elif mode == "header":
            tail = frame(b"P", b"x" * rng.randrange(100, 10000))[:rng.randrange(1, FRAME_HEADER)]
        elif mode == "zeros":
            # No damage: zeros are what the daemon writes ahead of its frames (nothing to log).
            tail = bytes(rng.randrange(1, 2 << 20))
        else:
            tail = rng.randbytes(rng.randrange(1, 4097))
        # Over the zeroed bytes the daemon keeps ahead of its frames (and past them), as
        # a write cut short would leave it: everything from the end of the frames on.
        end = put_frames(newest)[1]
        with open(newest, "r+b") as f:
            f.seek(end)
            f.write(tail)
        self.tears.append((mode, os.path.basename(newest), len(tail)))
        return mode

    def damaging(self):
        """Tears that leave bytes other than zeros, each to be cut and logged at start."""
        return sum(1 for mode, _, _ in self.tears if mode != "zeros")

    def delivered(self, daemon, boxes, sink):
        """Torn tokens found anywhere in a mailbox or in what the sink received."""
        found = set()
        data = b"".join(daemon.local_bytes(i) for i in range(boxes))
        with sink.lock:
            sink.refresh()
            data += sink.bodies
            # The check sees the sink only through its bodies: each copy it recorded with a
            # token is there (a harness that stopped reading them would find nothing torn).
            recorded = sum(1 for token, _, _ in sink.copies if token)
            seen = len(TOKEN_RE.findall(sink.bodies))
        if seen < recorded:
            found.add(f"(the sink's bodies hold {seen} tokens for {recorded} recorded copies)")
        for t in self.torn_tokens:
            if re.search(rb"(?<![\w])" + t.encode() + rb"(?![\w])", data):
                found.add(t)
        return sorted(found)


# ------------------------------------------------------------------ the run


def main():
    if sys.argv[1:2] == ["--serve-sink"]:
        return serve_sink(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="target/release/sendmail")
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--per-conn", type=int, default=5, help="messages per SMTP connection")
    ap.add_argument("--kills", type=int, default=15, help="SIGKILLs at least (>= 10 for a full run)")
    ap.add_argument("--boxes", type=int, default=8, help="local mailboxes")
    ap.add_argument("--gap", type=float, nargs=2, default=(0.1, 0.8),
                    help="random time between kills, seconds (min max)")
    ap.add_argument("--drain", type=float, default=180, help="seconds allowed for the queue to drain")
    ap.add_argument("--clean-every", type=int, default=3,
                    help="leave every Nth kill's journal as the kill left it; tear it after the "
                         "others (0: tear after every kill)")
    ap.add_argument("--no-tear", action="store_true", help="never tear the journal")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--sink", choices=("harness", "smtp-sink"), default="harness",
                    help="the next hop: this script's own (records when each 250 went) or "
                    "Postfix's smtp-sink (faster; PostfixSink)")
    ap.add_argument("--smoke", action="store_true", help="CI size: 300 messages, 6 kills")
    ap.add_argument("--local", choices=("file", "program", "maildir"), default="file",
                    help="local delivery: the file mailer into mbox files, the cf's Mlocal "
                         "program (a script that locks and appends, as procmail), or "
                         "sendmail-rs's own Maildir delivery (aliases to Maildir/ directories)")
    ap.add_argument("--run-as", metavar="USER", default=None,
                    help="run the daemon with RunAsUser=USER (root only; the work directory "
                         "goes under /tmp, which that user can reach)")
    ap.add_argument("--max-dups-per-kill", type=float, default=None,
                    help="fail when duplicated / kills is above this")
    ap.add_argument("--max-local-dups-per-kill", type=float, default=None,
                    help="fail when the local deliveries' duplicates / kills is above this")
    a = ap.parse_args()
    if a.smoke:
        a.messages, a.clients, a.kills, a.gap, a.drain = 300, 16, 6, (0.05, 0.3), 45
    seed = a.seed if a.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    started = time.time()

    if a.run_as and os.geteuid() != 0:
        sys.exit("--run-as needs root (the daemon starts as root and gives it up)")
    os.makedirs("bench/run", exist_ok=True)
    # under RunAsUser the daemon must reach its queue: not below a private home
    work = tempfile.mkdtemp(prefix="crash-", dir=None if a.run_as else os.path.abspath("bench/run"))
    sink = PostfixSink(work) if a.sink == "smtp-sink" else Sink(work)
    daemon = None
    kills = []
    ok = False
    try:
        # Inside: a daemon that cannot be set up or started ends the run through the
        # `finally` below, which stops the sink (it was left running, holding this
        # script's stderr).
        daemon = Daemon(os.path.abspath(a.binary), work, sink.port, a.boxes, a.local, a.run_as)
        daemon.start()
        tearer = Tearer(os.path.join(work, "mqueue", "journal"), rng)
        clients = Clients(daemon.port, a.messages, a.boxes, a.per_conn)
        threads = [threading.Thread(target=clients.run, daemon=True) for _ in range(a.clients)]
        for t in threads:
            t.start()
        # Kill while clients send, and go on killing during delivery until enough kills.
        while len(kills) < a.kills or any(t.is_alive() for t in threads):
            time.sleep(rng.uniform(*a.gap))
            if len(kills) >= a.kills:
                continue
            kills.append(daemon.kill())
            torn = ""
            clean = a.no_tear or (a.clean_every and len(kills) % a.clean_every == 0)
            if not clean:
                mode = tearer.tear(TEAR_MODES[len(tearer.tears) % len(TEAR_MODES)])
                if mode:
                    torn = f", journal torn ({mode}, {tearer.tears[-1][2]} bytes)"
            print(f"kill {len(kills)}: acknowledged so far {len(clients.acked)}{torn}", flush=True)
            daemon.start()
        sent_at = time.time()

        def delivered_everywhere():
            local, remote = local_and_remote(daemon, a.boxes, sink)
            for token, rcpts in clients.acked.items():
                for r in rcpts:
                    have = local if r.startswith("box") else remote
                    if not any(c for c in have.get(token, []) if c[0]):
                        return False
            return True

        deadline = time.time() + a.drain
        while not (delivered_everywhere() and daemon.queue_empty()):
            if time.time() > deadline:
                break
            time.sleep(0.5)
        drained = time.time() - sent_at
        daemon.stop()
        ok = report(a, seed, daemon, clients, sink, kills, tearer, drained, time.time() - started)
    finally:
        if daemon:
            daemon.stop()
        sink.stop()
        if ok and not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")
    sys.exit(0 if ok else 1)


def local_and_remote(daemon, boxes, sink):
    """token -> [(complete, time)] for the local mailboxes and for the sink."""
    local, remote = {}, {}
    for i in range(boxes):
        for token, complete, when in daemon.local_copies(i):
            local.setdefault(token, []).append((complete, when))
    with sink.lock:
        sink.refresh()
        for token, complete, when in sink.copies:
            remote.setdefault(token, []).append((complete, when))
    return local, remote


def remote_dup_timing(sink, kills):
    """For each remote copy that was delivered again, when the sink recorded it and wrote
    its 250, relative to the nearest SIGKILL (negative: before it). Lines for the report."""
    by_token = {}
    with sink.lock:
        sink.refresh()
        for k, (token, complete, when) in enumerate(sink.copies):
            if complete:
                by_token.setdefault(token, []).append((when, sink.answers[k]))
    rows = []
    for copies in by_token.values():
        copies.sort(key=lambda c: c[0])
        for rec, ans in copies[:-1]:
            # Times from the nearest kill, from the last clock read before its signal.
            kill = min((at for at, _ in kills), key=lambda k: abs(k - rec), default=None)
            if kill is not None:
                rows.append((rec - kill, None if ans is None else ans - kill))
    if not rows:
        return []
    rows.sort()
    after = sum(1 for r, _ in rows if r >= 0)
    unanswered = sum(1 for r, a in rows if r < 0 and (a is None or a >= 0))
    answered = [a for r, a in rows if r < 0 and a is not None and a < 0]
    show = lambda x: "-" if x is None else f"{x * 1000:+.1f}"
    return [
        f"  remote duplicates: {len(rows)} copies sent again, by when the sink recorded them: "
        f"after the kill {after} (the data was on its way), before it {len(rows) - after} "
        f"(of which 250 written after the kill: {unanswered}, before it: {len(answered)})",
        "    ms from the kill to record/250: "
        + " ".join(f"{show(r)}/{show(a)}" for r, a in rows),
    ]


def median_max(xs):
    """The upper median and the largest of a non-empty list."""
    xs = sorted(xs)
    return xs[len(xs) // 2], xs[-1]


def report(a, seed, daemon, clients, sink, kills, tearer, drained, took):
    local, remote = local_and_remote(daemon, a.boxes, sink)
    lost, dups, unexplained, delivered = [], 0, [], 0
    dups_by = {"local": 0, "remote": 0}
    for token, rcpts in sorted(clients.acked.items()):
        everywhere = True
        for r in rcpts:
            kind, have = ("local", local) if r.startswith("box") else ("remote", remote)
            complete = [w for c, w in have.get(token, []) if c]
            if not complete:
                lost.append(f"{token} {kind}")
                everywhere = False
                continue
            dups += len(complete) - 1
            dups_by[kind] += len(complete) - 1
            slack = 1.5 if kind == "local" else 0.05
            if len(complete) > 1 and not explained(complete, kills, slack):
                unexplained.append(f"{token} {kind} x{len(complete)}")
        delivered += everywhere
    unacked = sum(
        1 for t in clients.attempts if t not in clients.acked and (t in local or t in remote)
    )
    torn_local = sum(1 for v in local.values() for c, _ in v if not c)
    torn = torn_local + sum(1 for v in remote.values() for c, _ in v if not c)
    # A Maildir message appears whole or not at all (written in tmp/, then linked into
    # new/): a partial copy there is a failure; tmp/ files are deliveries a kill cut short,
    # which readers never see (left for the Maildir's cleanup, as qmail's are).
    maildir_partial = torn_local if a.local == "maildir" else 0
    leftovers = daemon.maildir_leftovers(a.boxes)
    log = daemon.log_text()
    recoveries = log.count("queue recovery:")
    queue_empty = daemon.queue_empty()
    torn_delivered = tearer.delivered(daemon, a.boxes, sink)
    print(
        f"crash harness: seed={seed} messages={a.messages} clients={a.clients} per_conn={a.per_conn} "
        f"boxes={a.boxes} local={a.local}{' (' + daemon.mda + ')' if daemon.mda else ''}{' run_as=' + a.run_as if a.run_as else ''} kills={len(kills)} starts={daemon.starts} "
        f"(bind retries {daemon.bind_retries})\n"
        f"  acknowledged={len(clients.acked)} delivered={delivered} lost={len(lost)} "
        f"duplicated={dups} (unexplained {len(unexplained)}) "
        f"(local {dups_by['local']}, remote {dups_by['remote']}) "
        f"duplicates_per_kill={dups / max(len(kills), 1):.2f} "
        f"(local {dups_by['local'] / max(len(kills), 1):.2f}) "
        f"unacknowledged_but_delivered={unacked} torn_copies={torn} client_retries={clients.errors}"
        + (f" maildir_tmp_leftovers={leftovers}" if a.local == "maildir" else "") + "\n"
        f"  tears={len(tearer.tears)} (damaging {tearer.damaging()}) "
        f"torn_frames_delivered={len(torn_delivered)} "
        f"queue_recovery_lines={recoveries} queue_empty={queue_empty} "
        f"drain_s={drained:.1f} total_s={took:.1f}"
    )
    for line in remote_dup_timing(sink, kills):
        print(line)
    with sink.lock:  # refreshed by remote_dup_timing; the daemon has stopped
        conns = [n for n in (sink.open_at(at) for at, _ in kills) if n is not None]
    if conns:
        med, top = median_max(conns)
        print(f"  connections open to the sink at the kills: median {med} max {top} (each can "
              "hold one message the sink has taken and the daemon has not marked: a remote "
              "duplicate)")
    if daemon.reaped:
        med, top = median_max(daemon.reaped)
        print(f"  SIGKILL to the daemon's end: median {med * 1000:.1f} max {top * 1000:.1f} ms")
        med, top = median_max(daemon.sending)
        print(f"  clock reads around each kill(2) apart: median {med * 1000:.1f} "
              f"max {top * 1000:.1f} ms (the kill is somewhere between)")
    for x in lost[:20]:
        print(f"  LOST {x}")
    for x in unexplained[:20]:
        print(f"  UNEXPLAINED DUPLICATE {x}")
    for t in torn_delivered:
        print(f"  DELIVERED FROM A TORN FRAME {t}")
    if maildir_partial:
        print(f"  {maildir_partial} PARTIAL MESSAGE FILES in the Maildirs' new/ or cur/")
    if recoveries < tearer.damaging():
        print(f"  {tearer.damaging()} damaging tears but only {recoveries} queue recovery lines")
    per_kill = max(len(kills), 1)
    too_many = a.max_dups_per_kill is not None and dups > a.max_dups_per_kill * per_kill
    if a.max_local_dups_per_kill is not None and dups_by["local"] > a.max_local_dups_per_kill * per_kill:
        print(f"  {dups_by['local']} local duplicates in {len(kills)} kills: more than "
              f"{a.max_local_dups_per_kill} per kill")
        too_many = True
    if too_many:
        print(f"  {dups} duplicates in {len(kills)} kills: more than {a.max_dups_per_kill} per kill")
    return (
        not lost and not unexplained and queue_empty and len(kills) >= a.kills
        and not torn_delivered and recoveries >= tearer.damaging() and not too_many
        and not maildir_partial
    )


if __name__ == "__main__":
    main()
