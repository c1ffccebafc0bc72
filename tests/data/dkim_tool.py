#!/usr/bin/python3
"""An independent DKIM signer and verifier (python3-dkim) for the milter tests.

  dkim_tool.py sign <private key file> <selector> <domain>   < message > signed message
  dkim_tool.py verify <opendkim-genkey .txt file>             < message   (prints pass/fail)

The verifier takes the public key from the zone-file text opendkim-genkey wrote, not DNS."""
import re
import sys

import dkim


def txt_record(path):
    text = open(path).read()
    return "".join(re.findall(r'"([^"]*)"', text)).encode()


def main():
    msg = sys.stdin.buffer.read()
    if sys.argv[1] == "sign":
        key = open(sys.argv[2], "rb").read()
        sig = dkim.sign(msg, sys.argv[3].encode(), sys.argv[4].encode(), key,
                        canonicalize=(b"relaxed", b"simple"),
                        include_headers=[b"from", b"subject", b"to"])
        sys.stdout.buffer.write(sig + msg)
    else:
        record = txt_record(sys.argv[2])
        ok = dkim.verify(msg, dnsfunc=lambda name, timeout=5: record)
        print("pass" if ok else "fail")


if __name__ == "__main__":
    main()
