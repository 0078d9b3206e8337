"""examples/http_get.py fetches over hilkit from a kernel-side http.server, plain and TLS."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import select
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hilkit.rig.netns import Netns
from tests.integration.conftest import KERNEL_IP, TAP, kernel_side

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "http_get.py"

SERVER = textwrap.dedent("""
    import http.server, ssl, sys, functools
    root, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
    srv = http.server.ThreadingHTTPServer(("{ip}", port), handler)
    if cert != "-":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("serving", flush=True)
    srv.serve_forever()
""").format(ip=KERNEL_IP)


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for the kernel's address, its own CA, made for this test."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hilkit test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(KERNEL_IP))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "server.pem", tmp / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def web(netns: Netns, tmp_path: Path) -> Iterator[tuple[Netns, Path, bytes]]:
    kernel_side(netns, persistent=True)
    root = tmp_path / "www"
    root.mkdir()
    body = os.urandom(3 << 20)
    (root / "blob.bin").write_bytes(body)
    cert, key = self_signed(tmp_path)
    procs = []
    for port, c, k in ((8080, "-", "-"), (8443, str(cert), str(key))):
        p = netns.popen([sys.executable, "-c", SERVER, str(root), str(port), c, k],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(p)
        assert p.stdout is not None
        ready, _, _ = select.select([p.stdout], [], [], 10)
        assert ready and p.stdout.readline() == b"serving\n"
    yield netns, tmp_path, body
    for p in procs:
        p.kill()
        p.wait()


def fetch(ns: Netns, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns.name, sys.executable, str(EXAMPLE), url, "--tap", TAP,
         "--ip", "192.168.5.4/24", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("scheme,port", [("http", 8080), ("https", 8443)])
def test_http_get_fetches_intact(web: tuple[Netns, Path, bytes], scheme: str, port: int) -> None:
    ns, tmp, body = web
    out = tmp / f"{scheme}.bin"
    res = fetch(ns, f"{scheme}://{KERNEL_IP}:{port}/blob.bin", "-o", str(out),
                "--cafile", str(tmp / "server.pem"))
    assert res.returncode == 0, res.stderr
    digest = hashlib.sha256(body).hexdigest()
    assert res.stdout.splitlines() == ["status 200 OK", f"bytes {len(body)}", f"sha256 {digest}"]
    assert out.read_bytes() == body


def test_https_refuses_an_untrusted_certificate(web: tuple[Netns, Path, bytes]) -> None:
    ns, _, _ = web
    res = fetch(ns, f"https://{KERNEL_IP}:8443/blob.bin")  # the system's CAs only
    assert res.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in res.stderr or "certificate" in res.stderr.lower()


def test_http_get_404_and_refused(web: tuple[Netns, Path, bytes]) -> None:
    ns, _, _ = web
    assert fetch(ns, f"http://{KERNEL_IP}:8080/missing").returncode == 1
    res = fetch(ns, f"http://{KERNEL_IP}:8099/", "--timeout", "5")
    assert res.returncode == 1 and "refused" in res.stderr.lower()
