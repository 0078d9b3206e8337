#!/usr/bin/env python3
"""Fetch a URL over hilkit with the standard library's http.client, unmodified.

    python examples/http_get.py https://192.168.5.5/index.html \\
        --tap tap0 --ip 192.168.5.4/24 --cafile ca.pem -o index.html

http.client only needs a connected socket-like object: hilkit's TCP socket for
http://, and hilkit.tls on top of it for https:// (certificates are verified,
against --cafile or the system's CAs). The host must be an IPv4 address: hilkit
has no DNS resolver yet. Prints `status`, `bytes` and `sha256` of the body.
Exit status: 0 on 2xx, 1 on an HTTP or network failure, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import ipaddress
import ssl
import sys
from urllib.parse import urlsplit

from hilkit.drivers.tap import TapDevice
from hilkit.stack import Stack
from hilkit.stack.addr import int_to_ip, parse_cidr
from hilkit.tls import wrap_client


class HilkitHTTPConnection(http.client.HTTPConnection):
    """http.client over hilkit: only connect() differs (as HTTPSConnection's does)."""

    def __init__(self, stack: Stack, host: str, port: int, timeout: float,
                 context: ssl.SSLContext | None) -> None:
        self.default_port = 443 if context else 80  # for the Host header
        super().__init__(host, port, timeout=timeout)
        self.stack, self.context = stack, context

    def connect(self) -> None:
        from hilkit.stack.sockets import create_connection
        raw = create_connection(self.stack, (self.host, self.port), timeout=self.timeout)
        self.sock = wrap_client(raw, self.context, self.host) if self.context else raw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="http://ADDR[:PORT]/PATH or https://...")
    p.add_argument("--tap", required=True, help="name of an existing TAP interface")
    p.add_argument("--ip", required=True, metavar="ADDR/LEN", help="e.g. 192.168.5.4/24")
    p.add_argument("--gw", metavar="ADDR", help="default gateway")
    p.add_argument("-o", "--output", metavar="FILE", help="write the body to FILE")
    p.add_argument("--cafile", metavar="PEM", help="CA certificates to trust (https)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="default: 10")
    args = p.parse_args(argv)

    def bad(msg: str) -> int:
        print(f"http_get: {msg}", file=sys.stderr)
        return 2

    try:
        url = urlsplit(args.url)
        port = url.port or (443 if url.scheme == "https" else 80)
        addr, mask = parse_cidr(args.ip)
    except ValueError as e:
        return bad(str(e))
    if url.scheme not in ("http", "https") or not url.hostname:
        return bad(f"not an http:// or https:// URL: {args.url}")
    try:
        ipaddress.IPv4Address(url.hostname)
    except ValueError:
        return bad(f"{url.hostname!r}: DNS is not supported yet; use an IPv4 address")
    try:
        context = ssl.create_default_context(cafile=args.cafile) if url.scheme == "https" else None
    except OSError as e:  # FileNotFoundError, ssl.SSLError
        return bad(f"--cafile {args.cafile}: {e}")
    try:
        tap = TapDevice(args.tap, create=False)
    except OSError as e:  # FileNotFoundError: no such TAP; PermissionError: not root
        return bad(f"cannot open TAP {args.tap!r}: {e}")

    stack = Stack()
    try:
        stack.link_add(stack.add_device(tap), int_to_ip(addr), int_to_ip(mask))
        if args.gw:
            stack.route_add("0.0.0.0", "0.0.0.0", args.gw)
    except (OSError, ValueError) as e:
        stack.close()
        return bad(str(e))

    conn = HilkitHTTPConnection(stack, url.hostname, port, args.timeout, context)
    digest, size = hashlib.sha256(), 0
    try:
        conn.request("GET", (url.path or "/") + (f"?{url.query}" if url.query else ""))
        resp = conn.getresponse()
        with open(args.output, "wb") if args.output else contextlib.nullcontext() as out:
            while chunk := resp.read(65536):
                digest.update(chunk)
                size += len(chunk)
                if out:
                    out.write(chunk)
    except (OSError, http.client.HTTPException) as e:  # ssl.SSLError, TimeoutError, ...
        print(f"http_get: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        conn.close()
        stack.close()

    print(f"status {resp.status} {resp.reason}")
    print(f"bytes {size}")
    print(f"sha256 {digest.hexdigest()}")
    if not 200 <= resp.status < 300:
        print(f"http_get: HTTP {resp.status} {resp.reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
