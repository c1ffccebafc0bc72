#!/usr/bin/env python3
"""bs.py -- plays an SMTP dialogue against `sendmail -bs` one command at a time.

    $ python3 "$DIFF_HARNESS/bs.py" sendmail -Am -bs -O DeliverByMin=60
    | EHLO client.example.test
    | MAIL FROM:<root@oracle.example.test> BY=30;R

Used by scenarios that need a daemon option the harness's daemon does not have: `-bs`
offers what the daemon would with the same options. Piping the lines in at once would
be refused as pipelining before the greeting; this waits for each whole reply (the
greeting first) before sending the next line, and prints every reply line. `-Am` makes
the oracle read sendmail.cf, not submit.cf (`-bs` is a submission otherwise).
"""
import subprocess
import sys


def reply(out):
    lines = []
    while True:
        line = out.readline()
        if not line:
            lines.append("<eof>")
            return lines
        line = line.decode("latin-1").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return lines


def main():
    p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    for line in reply(p.stdout):
        print(line)
    for cmd in sys.stdin.read().splitlines():
        print(f"C: {cmd}")
        try:
            p.stdin.write(cmd.encode("latin-1") + b"\r\n")
            p.stdin.flush()
        except BrokenPipeError:
            break
        for line in reply(p.stdout):
            print(line)
            if line == "<eof>":
                break
    try:
        p.stdin.close()
    except BrokenPipeError:
        pass
    return p.wait(timeout=20)


if __name__ == "__main__":
    sys.exit(main())
