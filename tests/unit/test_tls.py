"""hilkit.tls over plain stdlib sockets on 127.0.0.1, with a PKI made at test time.

The client side always goes through ``NoFdSocket``, which offers only what a
hilkit socket offers (no descriptor), so nothing here leans on ``fileno()``.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import io
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from hilkit.tls import TlsSocket, wrap_client, wrap_server

pytest.importorskip("cryptography")
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"
TIMEOUT = 10.0

# -- a PKI: two CAs, and a server certificate for localhost/127.0.0.1 from the first ----------


@dataclass(frozen=True)
class Pki:
    ca: Path  # PEM of the CA that issued the server certificate
    other_ca: Path  # PEM of an unrelated CA
    server_cert: Path
    server_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[Any, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _pem(cert: Any) -> bytes:
    return bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca("hilkit test CA")
    other, _ = _ca("hilkit other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost")).issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address(LOOPBACK))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(d / "ca.pem", d / "other-ca.pem", d / "server.pem", d / "server.key")
    pki.ca.write_bytes(_pem(ca))
    pki.other_ca.write_bytes(_pem(other))
    pki.server_cert.write_bytes(_pem(cert))
    pki.server_key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return pki


@pytest.fixture
def server_ctx(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    return ctx


@pytest.fixture
def client_ctx(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki.ca)


# -- plumbing -----------------------------------------------------------------------------------


class NoFdSocket:
    """A stdlib socket cut down to what a hilkit socket has; ``max_recv`` trickles bytes in."""

    def __init__(self, sock: socket.socket, max_recv: int | None = None) -> None:
        self._sock = sock
        self._max_recv = max_recv
        self.closed = False

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def recv(self, n: int) -> bytes:
        return self._sock.recv(min(n, self._max_recv or n))

    def settimeout(self, t: float | None) -> None:
        self._sock.settimeout(t)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self.closed = True
        self._sock.close()


def connect(port: int, max_recv: int | None = None) -> NoFdSocket:
    return NoFdSocket(socket.create_connection((LOOPBACK, port), timeout=TIMEOUT), max_recv)


class Peer(threading.Thread):
    """Accepts one connection on 127.0.0.1 and runs ``fn`` on the raw socket in a thread."""

    def __init__(self, fn: Callable[[socket.socket], Any]) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self._lsock = socket.create_server((LOOPBACK, 0))
        self.port: int = self._lsock.getsockname()[1]
        self.value: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._lsock.settimeout(TIMEOUT)
            conn, _ = self._lsock.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                self.value = self._fn(conn)
        except BaseException as e:
            self.error = e
        finally:
            self._lsock.close()

    def result(self) -> Any:
        self.join(TIMEOUT * 2)
        assert not self.is_alive(), "peer thread hung"
        if self.error is not None:
            raise self.error
        return self.value


def read_all(tls: TlsSocket) -> bytes:
    chunks = []
    while chunk := tls.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- data ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_round_trip_1mib(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
                         version: ssl.TLSVersion) -> None:
    payload = os.urandom(1 << 20)

    def echo(raw: socket.socket) -> int:
        tls = wrap_server(raw, server_ctx, suppress_ragged_eofs=False)
        n = 0
        while chunk := tls.recv(100_000):  # ends at the client's close_notify
            tls.sendall(chunk)
            n += len(chunk)
        tls.close()
        return n

    peer = Peer(echo)
    client_ctx.maximum_version = version
    tls = wrap_client(connect(peer.port), client_ctx, "localhost", suppress_ragged_eofs=False)
    assert tls.version() == version.name.replace("_", ".")
    assert tls.cipher() is not None
    assert tls.getpeercert()["subjectAltName"] == (("DNS", "localhost"),
                                                    ("IP Address", LOOPBACK))
    assert isinstance(tls.getpeercert(binary_form=True), bytes)
    assert tls.fileno() == -1

    # One thread writes while this one reads, as with a stdlib socket: a single
    # thread could deadlock with both directions' buffers full.
    def write() -> None:
        view = memoryview(payload)
        for i in range(0, len(view), 300_000):
            tls.sendall(view[i:i + 300_000])
        tls.shutdown(socket.SHUT_WR)  # close_notify, then FIN

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    echoed = read_all(tls)
    writer.join(TIMEOUT)
    assert peer.result() == len(payload)
    assert len(echoed) == len(payload)
    assert sha(echoed) == sha(payload)
    tls.close()


def test_trickle_and_recv_into(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """Ciphertext arriving 1..7 bytes at a time: records and handshake messages split anywhere."""
    payload = os.urandom(40_000)

    def send(raw: socket.socket) -> None:
        tls = wrap_server(raw, server_ctx)
        tls.sendall(payload)
        tls.close()

    peer = Peer(send)
    tls = wrap_client(connect(peer.port, max_recv=7), client_ctx, "localhost")
    assert tls.recv(0) == b""
    buf = bytearray(len(payload) + 10)
    got = 0
    while n := tls.recv_into(memoryview(buf)[got:], min(5000, len(buf) - got)):
        assert n <= 5000
        got += n
    assert bytes(buf[:got]) == payload
    peer.result()
    tls.close()
    with pytest.raises(OSError):
        tls.recv(1)


def test_ip_address_as_server_hostname(server_ctx: ssl.SSLContext,
                                       client_ctx: ssl.SSLContext) -> None:
    """An IPv4 address (what examples/http_get.py passes) is checked against the IP SAN."""
    peer = Peer(lambda raw: wrap_server(raw, server_ctx).sendall(b"ok"))
    with wrap_client(connect(peer.port), client_ctx, LOOPBACK) as tls:
        assert tls.recv(10) == b"ok"
    peer.result()


def test_alpn(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    client_ctx.set_alpn_protocols(["http/1.1"])
    peer = Peer(lambda raw: wrap_server(raw, server_ctx).selected_alpn_protocol())
    with wrap_client(connect(peer.port), client_ctx, "localhost") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
    assert peer.result() == "http/1.1"


# -- verification and handshake failures -------------------------------------------------------


def _expect_server_failure(server_ctx: ssl.SSLContext) -> Peer:
    def serve(raw: socket.socket) -> BaseException | None:
        try:
            wrap_server(raw, server_ctx)
        except (ssl.SSLError, OSError) as e:
            return e
        return None

    return Peer(serve)


def test_wrong_hostname(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    peer = _expect_server_failure(server_ctx)
    raw = connect(peer.port)
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        wrap_client(raw, client_ctx, "wrong.example")
    assert "Hostname mismatch" in info.value.verify_message
    assert raw.closed  # as SSLContext.wrap_socket closes its socket
    # The alert reached the server: it fails with a TLS alert, not a bare EOF.
    err = peer.result()
    assert isinstance(err, ssl.SSLError)
    assert "ALERT" in str(err).upper()  # e.g. "sslv3 alert bad certificate"


def test_untrusted_ca(server_ctx: ssl.SSLContext, pki: Pki) -> None:
    peer = _expect_server_failure(server_ctx)
    ctx = ssl.create_default_context(cafile=pki.other_ca)
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        wrap_client(connect(peer.port), ctx, "localhost")
    assert info.value.verify_code == 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert isinstance(peer.result(), ssl.SSLError)


def test_check_hostname_needs_server_hostname(client_ctx: ssl.SSLContext) -> None:
    peer = Peer(lambda raw: raw.recv(1))
    raw = connect(peer.port)
    with pytest.raises(ValueError, match="server_hostname"):
        wrap_client(raw, client_ctx, None)
    assert raw.closed
    peer.result()


def test_eof_during_handshake(client_ctx: ssl.SSLContext) -> None:
    def hang_up(raw: socket.socket) -> None:
        raw.shutdown(socket.SHUT_WR)  # FIN, not RST: the ClientHello is read below
        while raw.recv(65536):
            pass

    peer = Peer(hang_up)
    with pytest.raises(ssl.SSLEOFError):
        wrap_client(connect(peer.port), client_ctx, "localhost")
    peer.result()


def test_handshake_timeout(client_ctx: ssl.SSLContext) -> None:
    done = threading.Event()
    peer = Peer(lambda raw: done.wait(TIMEOUT))  # accepts, never answers
    raw = connect(peer.port)
    raw.settimeout(0.3)
    with pytest.raises(TimeoutError):
        wrap_client(raw, client_ctx, "localhost")
    assert raw.closed
    done.set()
    peer.result()


# -- the end of the stream ---------------------------------------------------------------------


def test_close_notify(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """close() sends close_notify: a strict client sees a clean end, twice."""
    def serve(raw: socket.socket) -> None:
        tls = wrap_server(raw, server_ctx)
        tls.sendall(b"bye")
        tls.close()

    peer = Peer(serve)
    tls = wrap_client(connect(peer.port), client_ctx, "localhost", suppress_ragged_eofs=False)
    assert read_all(tls) == b"bye"
    assert tls.recv(10) == b""
    peer.result()
    tls.close()


def test_unwrap_both_ways(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """unwrap(): close_notify each way, plaintext before the peer's is discarded, raw stays open."""
    def serve(raw: socket.socket) -> bytes:
        tls = wrap_server(raw, server_ctx)
        tls.sendall(b"discarded")
        back = tls.unwrap()
        assert back is raw
        return raw.recv(100)  # the client's FIN, after both close_notifies

    peer = Peer(serve)
    raw = connect(peer.port)
    tls = wrap_client(raw, client_ctx, "localhost")
    assert tls.unwrap() is raw
    assert not raw.closed
    with pytest.raises(OSError):
        tls.recv(1)
    raw.close()
    assert peer.result() == b""


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_half_close_with_unread_records(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
                                        version: ssl.TLSVersion) -> None:
    """shutdown(SHUT_WR) while records the peer sent wait undecrypted: none may be lost
    (SSLObject.unwrap() reads the incoming BIO itself and fails on application data)."""
    sent = threading.Event()

    def serve(raw: socket.socket) -> bytes:
        tls = wrap_server(raw, server_ctx, suppress_ragged_eofs=False)
        tls.sendall(b"x" * 10)
        tls.sendall(b"y" * 10)  # a second record
        sent.set()
        got = read_all(tls)  # up to the client's close_notify
        tls.sendall(b"z")  # half-close: this direction still works
        tls.close()
        return got

    peer = Peer(serve)
    client_ctx.maximum_version = version
    tls = wrap_client(connect(peer.port), client_ctx, "localhost", suppress_ragged_eofs=False)
    tls.sendall(b"hello")
    assert sent.wait(TIMEOUT)
    time.sleep(0.2)  # both records are in the kernel: one raw recv takes them together
    assert tls.recv(100) == b"x" * 10
    tls.shutdown(socket.SHUT_WR)
    assert read_all(tls) == b"y" * 10 + b"z"
    assert peer.result() == b"hello"
    tls.close()


@pytest.mark.parametrize("suppress", [True, False])
def test_ragged_eof(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
                    suppress: bool) -> None:
    """The peer's TCP connection ends without close_notify (a truncation attack, or a lazy peer)."""
    def serve(raw: socket.socket) -> None:
        tls = wrap_server(raw, server_ctx)
        tls.sendall(b"part")
        raw.shutdown(socket.SHUT_RDWR)  # FIN straight on the raw socket

    peer = Peer(serve)
    tls = wrap_client(connect(peer.port), client_ctx, "localhost",
                      suppress_ragged_eofs=suppress)
    got = b""
    while len(got) < 4:
        got += tls.recv(10)
    assert got == b"part"
    if suppress:
        assert tls.recv(10) == b""
        assert tls.recv(10) == b""
    else:
        with pytest.raises(ssl.SSLEOFError):
            tls.recv(10)
    peer.result()
    tls.close()


# -- files --------------------------------------------------------------------------------------


def test_makefile_defers_close(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """As socket.makefile: close() waits for the files, which http.client relies on."""
    def serve(raw: socket.socket) -> list[str]:
        tls = wrap_server(raw, server_ctx, suppress_ragged_eofs=False)
        # Two files: a text "rw" file drops what it read ahead when written to.
        rf = cast(io.TextIOWrapper, tls.makefile("r", encoding="utf-8"))
        wf = cast(io.TextIOWrapper, tls.makefile("w", encoding="utf-8"))
        lines = []
        for line in rf:
            lines.append(line)
            wf.write(line.upper())
            wf.flush()
        rf.close()
        wf.close()
        tls.close()
        return lines

    peer = Peer(serve)
    tls = wrap_client(connect(peer.port), client_ctx, "localhost", suppress_ragged_eofs=False)
    wf = tls.makefile("wb", buffering=0)
    rf = tls.makefile("rb")
    wf.write(b"one\ntwo\n")
    assert rf.readline() == b"ONE\n"
    tls.close()  # deferred: two files are open
    assert rf.readline() == b"TWO\n"
    wf.close()
    tls.shutdown(socket.SHUT_WR)
    assert rf.read() == b""
    rf.close()  # the last file: now the raw socket closes
    assert tls.fileno() == -1
    assert peer.result() == ["one\n", "two\n"]


# -- http.client over wrap_client --------------------------------------------------------------

BIG = os.urandom(2_000_000)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/until-close":  # no length: the body ends with the connection
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(BIG)))
        self.end_headers()
        self.wfile.write(BIG)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply = sha(body).encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TlsHTTPConnection(http.client.HTTPConnection):
    """HTTPSConnection, the hilkit way: connect() wraps a socket-like object."""

    default_port = http.client.HTTPS_PORT

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=TIMEOUT)
        self._context = context

    def connect(self) -> None:
        raw = NoFdSocket(socket.create_connection((self.host, self.port), self.timeout))
        self.sock = wrap_client(raw, self._context, self.host)


@pytest.fixture
def https_server(server_ctx: ssl.SSLContext) -> Iterator[int]:
    httpd = ThreadingHTTPServer((LOOPBACK, 0), _Handler)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(TIMEOUT)


def test_http_client_keep_alive(https_server: int, client_ctx: ssl.SSLContext) -> None:
    conn = TlsHTTPConnection(LOOPBACK, https_server, client_ctx)
    try:
        for _ in range(2):  # the same connection twice
            conn.request("GET", "/big")
            resp = conn.getresponse()
            assert (resp.status, resp.reason) == (200, "OK")
            body = resp.read()
            assert sha(body) == sha(BIG)
        sock = conn.sock
        upload = os.urandom(1_000_000)
        conn.request("POST", "/upload", body=upload)
        resp = conn.getresponse()
        assert resp.status == 201
        assert resp.read().decode() == sha(upload)
        assert conn.sock is sock  # still the first connection
    finally:
        conn.close()


def test_http_client_body_until_close(https_server: int, client_ctx: ssl.SSLContext) -> None:
    """http.client closes the connection before reading the body (deferred close), and the
    stdlib server ends without close_notify (a ragged EOF, suppressed as the stdlib does)."""
    conn = TlsHTTPConnection(LOOPBACK, https_server, client_ctx)
    conn.request("GET", "/until-close")
    resp = conn.getresponse()
    assert conn.sock is None  # closed by getresponse(): will_close
    body = resp.read()
    assert len(body) == len(BIG)
    assert sha(body) == sha(BIG)
    resp.close()
