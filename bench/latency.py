#!/usr/bin/env python3
"""latency.py -- how long a loopback SMTP server takes from the final "." to its "250".

    python3 latency.py HOST PORT [-s 20] [-m 50] [-l 5120]

S sessions run at once; each connects, says EHLO, then sends M messages of L body bytes
over its connection (MAIL, RCPT, DATA, body, "."; no pipelining) and QUITs. For every
message the time from writing the end-of-data "." line to reading the complete reply is
recorded. Prints one line:

    latency sessions=S msgs=N ok=K fail=F p50_ms=.. p90_ms=.. p99_ms=.. max_ms=..
            EHLO_p50_ms=.. MAIL_p50_ms=.. RCPT_p50_ms=.. DATA_p50_ms=.. wall_s=.. msgs_per_s=..

(the *_p50_ms figures are the median round trip of that command, for comparison)

and exits 1 if no message got a 250. Bounded: S <= 500, M <= 10000, every network
wait times out after 30 s, the whole run after 300 s. Loopback addresses only.
"""
import argparse
import asyncio
import ipaddress
import sys
import time


async def reply(reader):
    """One (possibly multi-line) SMTP reply; returns its first line."""
    first = line = await asyncio.wait_for(reader.readline(), 30)
    while line[3:4] == b"-":
        line = await asyncio.wait_for(reader.readline(), 30)
    if not line:
        raise ConnectionError("connection closed by server")
    return first


async def expect(reader, code):
    line = await reply(reader)
    if not line.startswith(code):
        raise ValueError(f"expected {code.decode()}, got {line[:80]!r}")


async def timed(writer, reader, line, code, times):
    """Sends one command line and waits for its reply; records the round trip."""
    t0 = time.perf_counter()
    writer.write(line)
    await expect(reader, code)
    times.append(time.perf_counter() - t0)


def message(i, size):
    head = (
        f"From: a@example.com\r\nTo: b@example.com\r\nSubject: latency {i}\r\n"
        f"Message-Id: <lat{i}.{time.time_ns()}@client.example.test>\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    body = (line * (size // len(line) + 1))[:size]
    if not body.endswith(b"\r\n"):
        body = body[:-2] + b"\r\n"
    return head + body


async def session(host, port, msgs, size, lat, cmds, stats):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
    except (OSError, asyncio.TimeoutError) as e:
        stats["fail"] += msgs
        stats["errors"].add(f"connect: {type(e).__name__}")
        return
    try:
        await expect(reader, b"220")
        await timed(writer, reader, b"EHLO latency.example.test\r\n", b"250", cmds["EHLO"])
        for i in range(msgs):
            await timed(writer, reader, b"MAIL FROM:<a@example.com>\r\n", b"250", cmds["MAIL"])
            await timed(writer, reader, b"RCPT TO:<b@example.com>\r\n", b"250", cmds["RCPT"])
            await timed(writer, reader, b"DATA\r\n", b"354", cmds["DATA"])
            writer.write(message(i, size))
            await writer.drain()
            t0 = time.perf_counter()
            writer.write(b".\r\n")
            line = await reply(reader)
            t1 = time.perf_counter()
            if line.startswith(b"250"):
                lat.append(t1 - t0)
                stats["ok"] += 1
            else:
                stats["fail"] += 1
                stats["errors"].add(line[:60].decode(errors="replace").strip())
        writer.write(b"QUIT\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.read(), 10)
    except (OSError, ValueError, ConnectionError, asyncio.TimeoutError) as e:
        stats["errors"].add(f"{type(e).__name__}: {e}"[:80])
        stats["fail"] += 1
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (OSError, asyncio.TimeoutError):
            pass


def pct(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("-s", type=int, default=20, help="concurrent sessions")
    ap.add_argument("-m", type=int, default=50, help="messages per session")
    ap.add_argument("-l", type=int, default=5120, help="body bytes per message")
    a = ap.parse_args()
    if not ipaddress.ip_address(a.host).is_loopback:
        sys.exit("latency.py: loopback addresses only")
    if not (1 <= a.s <= 500 and 1 <= a.m <= 10000 and 100 <= a.l <= 10_000_000):
        sys.exit("latency.py: need 1 <= -s <= 500, 1 <= -m <= 10000, 100 <= -l")
    lat, stats = [], {"ok": 0, "fail": 0, "errors": set()}
    cmds = {"EHLO": [], "MAIL": [], "RCPT": [], "DATA": []}
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(session(a.host, a.port, a.m, a.l, lat, cmds, stats)) for _ in range(a.s)]
    done, pending = await asyncio.wait(tasks, timeout=300)
    for t in pending:
        t.cancel()
    wall = time.perf_counter() - t0
    lat.sort()
    if lat:
        figures = (f"p50_ms={pct(lat, .5) * 1e3:.2f} p90_ms={pct(lat, .9) * 1e3:.2f} "
                   f"p99_ms={pct(lat, .99) * 1e3:.2f} max_ms={lat[-1] * 1e3:.2f}")
    else:
        figures = "p50_ms=- p90_ms=- p99_ms=- max_ms=-"
    for name, times in cmds.items():
        times.sort()
        if times:
            figures += f" {name}_p50_ms={pct(times, .5) * 1e3:.2f}"
    print(f"latency sessions={a.s} msgs={a.s * a.m} ok={stats['ok']} fail={stats['fail']} "
          f"{figures} wall_s={wall:.2f} msgs_per_s={stats['ok'] / wall:.0f}"
          + (f" timed_out_sessions={len(pending)}" if pending else "")
          + (f" errors={sorted(stats['errors'])}" if stats["errors"] else ""))
    return 0 if stats["ok"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
