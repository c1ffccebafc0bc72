#!/usr/bin/env python3
"""Two builds through the crash harness, seed by seed, for a comparison that the spread of
one seed does not drown.

One full run of bench/crash_harness.py gives duplicates per kill anywhere from 0.1 to 2.7
for the same build (the kills land in different moments of the delivery), so a difference
between two builds needs many seeds, each run by both builds, close together in time (the
machine's load moves the figure too). This script runs, for every seed, build A then build
B (or B then A on odd seeds, so neither always runs first), with the same harness options,
keeps each report, and prints:

* per seed: duplicates per kill of A and of B, and their difference;
* per build: mean and median duplicates per kill, the local and remote duplicates, the
  remote ones split as the harness times them (recorded by the sink after the kill: data
  on its way; before it: a 250 the daemon had not marked), lost and unexplained copies
  (both must be 0), and the median connections open to the sink at the kills;
* the paired difference B - A: its mean and standard error (the seeds are the pairs).

Usage:
  python3 bench/crash_ab.py --a BUILD_A --b BUILD_B --seeds 601-620 [--out DIR] \\
      [-- HARNESS OPTIONS]      # e.g. -- --local program
A build is a path to a sendmail binary (or a script that execs one with extra options,
e.g. `-O DestinationConcurrencyLimit=4`). Exit status 1 when any run lost a message, had
an unexplained duplicate or failed; 0 otherwise.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def seeds_of(text):
    """`601-620` or `1,5,9` or `7`."""
    out = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def parse(report):
    """The figures this script compares, from one harness report (None if it has none)."""
    m = re.search(
        r"lost=(\d+) duplicated=(\d+) \(unexplained (\d+)\) \(local (\d+), remote (\d+)\) "
        r"duplicates_per_kill=([0-9.]+)",
        report,
    )
    if not m:
        return None
    r = {
        "lost": int(m.group(1)),
        "dups": int(m.group(2)),
        "unexplained": int(m.group(3)),
        "local": int(m.group(4)),
        "remote": int(m.group(5)),
        "per_kill": float(m.group(6)),
        "after": 0,
        "before": 0,
        "conns": None,
    }
    t = re.search(r"after the kill (\d+) .*?before it (\d+)", report)
    if t:
        r["after"], r["before"] = int(t.group(1)), int(t.group(2))
    c = re.search(r"connections open to the sink at the kills: median (\d+)", report)
    if c:
        r["conns"] = int(c.group(1))
    return r


def run(binary, seed, harness_args, out):
    cmd = [sys.executable, os.path.join(HERE, "crash_harness.py"), "--binary", binary,
           "--seed", str(seed)] + harness_args
    # Into a file, not a pipe: a process the harness leaves behind would hold a pipe open.
    with tempfile.TemporaryFile("w+") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        f.seek(0)
        report = f.read()
    if out:
        with open(out, "w") as f:
            f.write(report)
    r = parse(report)
    if r is not None:
        r["status"] = p.returncode
    return r


def summary(name, rows):
    got = [r for r in rows if r]
    if not got:
        return f"{name}: no report"
    per = [r["per_kill"] for r in got]
    conns = [r["conns"] for r in got if r["conns"] is not None]
    total = lambda k: sum(r[k] for r in got)
    return (
        f"{name}: runs {len(got)}, duplicates per kill mean {statistics.mean(per):.3f} "
        f"median {statistics.median(per):.2f}; duplicates {total('dups')} (local {total('local')}, "
        f"remote {total('remote')}: recorded after the kill {total('after')}, before it "
        f"{total('before')}); lost {total('lost')}, unexplained {total('unexplained')}"
        + (f"; connections open at the kills, median of medians {statistics.median(conns)}"
           if conns else "")
    )


def main():
    argv = sys.argv[1:]
    harness_args = []
    if "--" in argv:
        k = argv.index("--")
        argv, harness_args = argv[:k], argv[k + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="build A (the reference)")
    ap.add_argument("--b", required=True, help="build B")
    ap.add_argument("--seeds", required=True, help="e.g. 601-620, or 1,5,9")
    ap.add_argument("--out", default=None, help="directory for each run's report")
    a = ap.parse_args(argv)
    for b in (a.a, a.b):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b}: not an executable")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
    rows_a, rows_b, pairs, failed = [], [], [], False
    started = time.time()
    print(f"{'seed':>6} {'A':>6} {'B':>6} {'B-A':>6}", flush=True)
    for i, seed in enumerate(seeds_of(a.seeds)):
        order = [("A", a.a), ("B", a.b)]
        if i % 2:
            order.reverse()
        got = {}
        for name, binary in order:
            out = os.path.join(a.out, f"{seed}-{name}.txt") if a.out else None
            got[name] = run(binary, seed, harness_args, out)
        ra, rb = got["A"], got["B"]
        rows_a.append(ra)
        rows_b.append(rb)
        for r in (ra, rb):
            if r is None or r["status"] != 0 or r["lost"] or r["unexplained"]:
                failed = True
        if ra and rb:
            pairs.append(rb["per_kill"] - ra["per_kill"])
            print(f"{seed:>6} {ra['per_kill']:>6.2f} {rb['per_kill']:>6.2f} "
                  f"{rb['per_kill'] - ra['per_kill']:>+6.2f}", flush=True)
        else:
            print(f"{seed:>6} {'-' if not ra else ra['per_kill']:>6} "
                  f"{'-' if not rb else rb['per_kill']:>6}   (a run gave no report)", flush=True)
    print(summary(f"A {a.a}", rows_a))
    print(summary(f"B {a.b}", rows_b))
    if len(pairs) >= 2:
        se = statistics.stdev(pairs) / len(pairs) ** 0.5
        print(f"paired B - A over {len(pairs)} seeds: {statistics.mean(pairs):+.3f} ± {se:.3f} "
              f"(standard error) duplicates per kill; {time.time() - started:.0f} s")
    if failed:
        print("a run lost mail, had an unexplained duplicate or failed: see its report"
              + (f" in {a.out}" if a.out else " (run again with --out DIR)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
