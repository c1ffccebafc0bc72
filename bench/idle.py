#!/usr/bin/env python3
"""idle.py -- a loopback SMTP server's memory while it holds N idle connections.

    python3 idle.py HOST PORT ROOT_PID [-n 1000] [--settle 3]

Measures the server's process tree (ROOT_PID and every descendant: RSS, PSS and USS
summed from /proc/PID/smaps_rollup), opens N connections that each read the 220 banner,
send EHLO and read its reply, then sit idle; measures the tree again, then QUITs every
connection. Prints one line:

    idle n=N up=K failed=F procs=A->B rss_kib=X->Y pss_kib=.. uss_kib=..
         per_conn_rss_kib=.. per_conn_pss_kib=.. per_conn_uss_kib=.. connect_s=..

RSS summed over a forking server's processes counts shared pages many times; PSS is the
fair figure for a tree, and for a single process RSS and PSS are close. Exits 1 if no
connection came up. Bounded: N <= 10000, connects paced in batches of 50, every wait
times out. Loopback addresses only.
"""
import argparse
import asyncio
import ipaddress
import os
import sys
import time


def tree(root):
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(p))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def memory(root):
    total = {"procs": 0, "rss": 0, "pss": 0, "uss": 0}
    for pid in tree(root):
        fields = {}
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if rest.strip().endswith("kB"):
                        fields[key] = int(rest.split()[0])
        except OSError:
            continue
        total["procs"] += 1
        total["rss"] += fields.get("Rss", 0)
        total["pss"] += fields.get("Pss", 0)
        total["uss"] += fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return total


async def reply(reader):
    line = await asyncio.wait_for(reader.readline(), 30)
    while line[3:4] == b"-":
        line = await asyncio.wait_for(reader.readline(), 30)
    return line


async def hold(host, port, up, release, stats):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 15)
    except (OSError, asyncio.TimeoutError) as e:
        stats["failed"] += 1
        stats["errors"].add(type(e).__name__)
        up.set_result(False)
        return
    ok = False
    try:
        if (await reply(reader)).startswith(b"220"):
            writer.write(b"EHLO idle.example.test\r\n")
            ok = (await reply(reader)).startswith(b"250")
    except (OSError, asyncio.TimeoutError) as e:
        stats["errors"].add(type(e).__name__)
    stats["up" if ok else "failed"] += 1
    up.set_result(ok)
    await release.wait()
    try:
        writer.write(b"QUIT\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)
    except (OSError, asyncio.TimeoutError):
        pass
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (OSError, asyncio.TimeoutError):
        pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("root_pid", type=int)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--settle", type=float, default=3.0)
    a = ap.parse_args()
    if not ipaddress.ip_address(a.host).is_loopback:
        sys.exit("idle.py: loopback addresses only")
    n = max(1, min(a.n, 10000))
    before = memory(a.root_pid)
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    stats = {"up": 0, "failed": 0, "errors": set()}
    t0 = time.monotonic()
    tasks, ups = [], []
    for i in range(n):
        fut = loop.create_future()
        ups.append(fut)
        tasks.append(asyncio.create_task(hold(a.host, a.port, fut, release, stats)))
        if (i + 1) % 50 == 0:
            await asyncio.wait(ups[i - 49:i + 1], timeout=60)
    await asyncio.wait(ups, timeout=60)
    connect_s = time.monotonic() - t0
    await asyncio.sleep(min(a.settle, 60))
    during = memory(a.root_pid)
    release.set()
    await asyncio.wait(tasks, timeout=30)
    for t in tasks:
        t.cancel()
    up = max(stats["up"], 1)

    def per(k):
        return (during[k] - before[k]) / up

    print(f"idle n={n} up={stats['up']} failed={stats['failed']} "
          f"procs={before['procs']}->{during['procs']} "
          f"rss_kib={before['rss']}->{during['rss']} pss_kib={before['pss']}->{during['pss']} "
          f"uss_kib={before['uss']}->{during['uss']} per_conn_rss_kib={per('rss'):.1f} "
          f"per_conn_pss_kib={per('pss'):.1f} per_conn_uss_kib={per('uss'):.1f} "
          f"connect_s={connect_s:.2f}"
          + (f" errors={sorted(stats['errors'])}" if stats["errors"] else ""))
    return 0 if stats["up"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
