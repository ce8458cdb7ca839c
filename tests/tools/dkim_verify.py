#!/usr/bin/env python3
"""Verifies the DKIM signature of the message on stdin with dkimpy, an
implementation independent of mailgate's, using the TXT record given as the
only argument instead of DNS. Prints "pass" or "fail" and exits 0 or 1."""
import sys

import dkim

record = sys.argv[1].encode()
message = sys.stdin.buffer.read()
ok = dkim.DKIM(message).verify(dnsfunc=lambda name, timeout=5: record)
print("pass" if ok else "fail")
sys.exit(0 if ok else 1)
