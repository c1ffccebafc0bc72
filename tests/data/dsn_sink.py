#!/usr/bin/env python3
"""A next hop for the delivery tests: an SMTP server on loopback that answers RCPT
by the address: `550 5.1.1 <a>... User unknown` when it contains "nosuch",
`451 4.3.0 <a>... try again later` when it contains "later" (until the file
<outdir>/accept-later exists: then 250), else 250.
Usage: dsn_sink.py <outdir> [address]. Binds port 0 on the address (127.0.0.1 by
default) and prints "port N" on stdout. Each message goes to <outdir>/<n>.eml, after
X-Sink-Mail / X-Sink-Rcpt lines with the envelope. (No DSN extension: sendmail-rs
reports NOTIFY=SUCCESS as "relayed".) While the file <outdir>/stall-after-data exists, a
session that has just answered 250 to a message reads and answers nothing more: the
client's next command (QUIT, RSET) waits."""
import os
import socketserver
import sys
import threading
import time

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
LOCK = threading.Lock()
COUNTER = [0]


class Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def reply(self, text):
        self.wfile.write((text + "\r\n").encode())
        self.wfile.flush()

    def handle(self):
        self.reply("220 sink.test ESMTP bounce-test sink")
        mail_from, rcpts = None, []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode("latin-1").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb == "EHLO":
                self.wfile.write(b"250-sink.test\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 SIZE 10000000\r\n")
                self.wfile.flush()
            elif verb == "HELO":
                self.reply("250 sink.test")
            elif verb == "MAIL":
                mail_from, rcpts = cmd[5:].strip(), []
                self.reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                arg = cmd[5:].strip()
                addr = arg[3:].split(" ")[0] if arg.upper().startswith("TO:") else arg
                if "nosuch" in addr:
                    self.reply("550 5.1.1 %s... User unknown" % addr)
                elif "later" in addr and not os.path.exists(os.path.join(OUT, "accept-later")):
                    self.reply("451 4.3.0 %s... try again later" % addr)
                else:
                    rcpts.append(arg)
                    self.reply("250 2.1.5 Ok")
            elif verb == "DATA":
                if not rcpts:
                    self.reply("554 5.5.1 Error: no valid recipients")
                    continue
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                body = []
                while True:
                    l = self.rfile.readline()
                    if not l:
                        return  # cut off before the final dot: nothing was accepted
                    if l in (b".\r\n", b".\n"):
                        break
                    body.append(l[1:] if l.startswith(b"..") else l)
                with LOCK:
                    COUNTER[0] += 1
                    n = COUNTER[0]
                tmp = os.path.join(OUT, ".%d.tmp" % n)
                with open(tmp, "wb") as f:
                    f.write(("X-Sink-Mail: %s\r\n" % mail_from).encode())
                    for r in rcpts:
                        f.write(("X-Sink-Rcpt: %s\r\n" % r).encode())
                    f.writelines(body)
                os.rename(tmp, os.path.join(OUT, "%d.eml" % n))
                self.reply("250 2.0.0 Ok: queued as SINK%d" % n)
                while os.path.exists(os.path.join(OUT, "stall-after-data")):
                    time.sleep(0.05)
            elif verb in ("RSET", "NOOP"):
                if verb == "RSET":
                    mail_from, rcpts = None, []
                self.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 Error: command not recognized")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True


if __name__ == "__main__":
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    with Server((host, 0), Handler) as srv:
        print("port %d" % srv.server_address[1], flush=True)
        srv.serve_forever()
