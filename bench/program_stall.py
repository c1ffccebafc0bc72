#!/usr/bin/env python3
"""program_stall.py -- does a program delivery stall the daemon?

    python3 bench/program_stall.py BINARY [-n 300] [--strace]

N messages to one local user are queued first (DeliveryMode=queueonly); then a daemon
started with -q1s delivers them all through the cf's `Mlocal` program (a shell script
that flock(1)s a mailbox and appends, one run per recipient, F=S as Debian's procmail).
Meanwhile a client opens session after session and times each from connect to the
220 greeting: a daemon that stalls while it starts programs answers late. Prints those
times (p50, p99, max, and how many took over 10 ms), the deliveries per second, the daemon's RSS
and, with --strace (strace -f attached to the daemon), how its children were made:
`fork` (clone without CLONE_VM) or `vfork` (clone with CLONE_VM|CLONE_VFORK, posix_spawn)
and the time those calls took. Run as root (the -bD daemon). Bounded: N <= 5000, the
delivery phase at most 120 s. Loopback only.
"""
import argparse
import os
import pwd
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline):
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--strace", action="store_true")
    a = ap.parse_args()
    n = min(a.n, 5000)
    binary = os.path.realpath(a.binary)
    d = tempfile.mkdtemp(prefix="program-stall-")
    os.chmod(d, 0o755)
    user = sorted(p.pw_name for p in pwd.getpwall() if 0 < p.pw_uid < 65534)[0]
    box = os.path.join(d, "box.mbox")
    mda = os.path.join(d, "mda.sh")
    with open(mda, "w") as f:
        f.write(f'#!/bin/sh\nexec 9>>{box}\nflock 9\ncat >&9\necho >&9\n')
    os.chmod(mda, 0o755)
    with open(os.path.join(d, "aliases"), "w") as f:
        f.write(f"box: {user}\n")
    port = free_port()
    with open(os.path.join(d, "cf"), "w") as f:
        f.write(
            "Djmta.example.test\nCwmta.example.test\n"
            f"O AliasFile={d}/aliases\n"
            f"O DaemonPortOptions=Name=MTA-v4, Family=inet, Port={port}, Addr=127.0.0.1\n"
            f"Mlocal, P={mda}, F=lsDFMAS5:/|@qP, T=DNS/RFC822/X-Unix, A=mda $u\n"
        )
    common = [binary, "-C", f"{d}/cf", "-O", f"PidFile={d}/pid", "-O", f"QueueDirectory={d}/mqueue",
              "-O", f"AliasFile={d}/aliases", "-O", "LogLevel=9"]
    subprocess.run([binary, "-bi", "-C", f"{d}/cf", "-O", f"AliasFile={d}/aliases"], check=True,
                   capture_output=True, timeout=30)
    p = subprocess.Popen(common + ["-bD", "-O", f"LogFile={d}/log1", "-O", "DeliveryMode=queueonly"],
                         stderr=subprocess.DEVNULL)
    if not wait_port(port, time.time() + 20):
        sys.exit("queueonly daemon did not listen")
    import smtplib
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("bench.example.test")
    body = b"Subject: bench\r\n\r\n" + b"x" * 4000 + b"\r\n"
    for _ in range(n):
        s.sendmail("b@bench.example.test", ["box@mta.example.test"], body)
    s.quit()
    p.terminate()
    p.wait(30)

    log = f"{d}/log"
    p = subprocess.Popen(common + ["-bD", "-O", f"LogFile={log}", "-q1s"], stderr=subprocess.DEVNULL)
    t0 = time.time()
    if not wait_port(port, t0 + 20):
        sys.exit("delivering daemon did not listen")
    tr = None
    if a.strace:
        tr = subprocess.Popen(["strace", "-f", "-T", "-qq", "-o", f"{d}/strace",
                               "-e", "trace=clone,clone3,fork,vfork", "-p", str(p.pid)],
                              stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    rtts, stop = [], threading.Event()

    def probe():
        # a new session each time (sendmail slows down a session after 20 NOOPs)
        while not stop.is_set():
            t = time.perf_counter()
            c = socket.create_connection(("127.0.0.1", port), timeout=30)
            f = c.makefile("rb")
            f.readline()
            rtts.append(time.perf_counter() - t)
            c.sendall(b"QUIT\r\n")
            f.readline()
            c.close()
            time.sleep(0.005)

    th = threading.Thread(target=probe)
    th.start()
    rss, sent, first, last = 0, 0, None, None
    while time.time() < t0 + 120:
        try:
            with open(log, errors="replace") as f:
                sent = f.read().count("stat=Sent")
        except FileNotFoundError:
            sent = 0
        if sent and first is None:
            first = time.time()
        try:
            with open(f"/proc/{p.pid}/status") as f:
                m = re.search(r"VmRSS:\s+(\d+)", f.read())
                rss = max(rss, int(m.group(1)) if m else 0)
        except FileNotFoundError:
            pass
        if sent >= n:
            last = time.time()
            break
        time.sleep(0.02)
    stop.set()
    th.join(40)
    if tr:
        tr.terminate()
        tr.wait(30)
    p.terminate()
    p.wait(30)
    rtts.sort()
    ms = lambda q: 1000 * rtts[min(len(rtts) - 1, int(q * len(rtts)))]
    span = (last or time.time()) - (first or t0)
    print(f"program_stall binary={a.binary} n={n} sent={sent} deliveries_per_s={sent / max(span, 1e-3):.0f} "
          f"daemon_rss_max_kB={rss}")
    print(f"  connect-to-greeting during delivery: count={len(rtts)} p50_ms={ms(0.5):.2f} p90_ms={ms(0.9):.2f} "
          f"p99_ms={ms(0.99):.2f} max_ms={1000 * rtts[-1]:.2f} over_10ms={sum(r > 0.01 for r in rtts)}")
    if tr:
        # Only the daemon's own calls: not those of its children (supervisors, programs).
        forks, vforks, children, pending = [], [], set(), {}
        with open(f"{d}/strace") as f:
            for line in f:
                pid, _, rest = line.partition(" ")
                rest = rest.strip()
                if rest.startswith("<..."):
                    head = pending.pop(pid, None)
                    if head is None:
                        continue
                    rest = head + rest
                elif rest.endswith("<unfinished ...>"):
                    pending[pid] = rest
                    continue
                m = re.match(r"(clone3?|fork|vfork)\((.*)\)\s*=\s*(-?\d+).*<([\d.]+)>$", rest)
                if not m:
                    continue
                thread = "CLONE_THREAD" in rest
                if pid in children:
                    if not thread:
                        children.add(m.group(3))
                    continue
                if thread:
                    continue
                children.add(m.group(3))
                vfork = "CLONE_VFORK" in rest or m.group(1) == "vfork"
                (vforks if vfork else forks).append(float(m.group(4)))
        for name, v in (("fork", forks), ("vfork/posix_spawn", vforks)):
            v.sort()
            if v:
                print(f"  the daemon's {name}: {len(v)} calls, median {1000 * v[len(v) // 2]:.2f} ms, "
                      f"max {1000 * v[-1]:.2f} ms")
            else:
                print(f"  the daemon's {name}: 0 calls")
    subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
