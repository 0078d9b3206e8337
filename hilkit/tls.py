"""TLS over any connected, blocking, socket-like object (hilkit's TCP sockets included).

picoTCP leaves TLS to wolfSSL or mbedTLS, fed through the socket API; hilkit does
the same with the standard library: an :class:`ssl.SSLObject` between two
:class:`ssl.MemoryBIO` buffers, and a pump that moves ciphertext between those
buffers and the raw socket. ``SSLContext.wrap_socket`` cannot be used, because
hilkit's sockets have no operating-system descriptor.

    raw = hilkit.stack.sockets.create_connection(stack, ("192.168.5.5", 443))
    tls = wrap_client(raw, ssl.create_default_context(), "192.168.5.5")
    tls.sendall(b"...")

The :class:`TlsSocket` that comes back has enough of the stdlib socket surface
for :mod:`http.client` (``sendall``, ``makefile("rb")``, ``close``) and for
ordinary code (``send``, ``recv``, ``recv_into``, ``shutdown``, timeouts, and
the ``SSLSocket`` queries ``getpeercert``, ``version``, ``cipher``, ...).

One thread may read while another writes, as with a stdlib socket, when the
raw socket allows that too (hilkit's blocking sockets belong to one thread).
"""

from __future__ import annotations

import contextlib
import errno
import io
import socket
import ssl
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, cast

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["RawSocket", "TlsSocket", "wrap_client", "wrap_server"]

_RECV_SIZE = 65536  # ciphertext read from the raw socket at a time
_WRITE_CHUNK = 65536  # plaintext encrypted per raw sendall (4 records): bounds memory


class RawSocket(Protocol):
    """What TLS needs from the connection underneath: a blocking byte stream."""

    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, bufsize: int, /) -> bytes: ...
    def settimeout(self, value: float | None, /) -> None: ...
    def gettimeout(self) -> float | None: ...
    def shutdown(self, how: int, /) -> None: ...
    def close(self) -> None: ...


def _unexpected_eof(e: ssl.SSLError) -> bool:
    """The stream ended without close_notify. Python before 3.11.4 (Debian 12's 3.11.2)
    raises a plain SSLError for OpenSSL 3's UNEXPECTED_EOF_WHILE_READING."""
    return isinstance(e, ssl.SSLEOFError) or e.reason == "UNEXPECTED_EOF_WHILE_READING"


def wrap_client(
    raw: RawSocket,
    context: ssl.SSLContext,
    server_hostname: str | None,
    *,
    suppress_ragged_eofs: bool = True,
    session: ssl.SSLSession | None = None,
) -> TlsSocket:
    """Run a client handshake over the connected ``raw`` socket and return the TLS socket.

    ``server_hostname`` is sent as SNI and checked against the certificate when
    ``context.check_hostname`` is set; an IPv4 address is checked against the
    certificate's IP addresses. Raises what ``SSLContext.wrap_socket`` raises
    (``ssl.SSLCertVerificationError``, ``ssl.SSLError``, ``TimeoutError``, ...);
    ``raw`` is closed when the handshake fails, as the stdlib closes its socket.
    """
    return TlsSocket(raw, context, server_side=False, server_hostname=server_hostname,
                     suppress_ragged_eofs=suppress_ragged_eofs, session=session)


def wrap_server(raw: RawSocket, context: ssl.SSLContext, *,
                suppress_ragged_eofs: bool = True) -> TlsSocket:
    """Run a server handshake over the accepted ``raw`` socket and return the TLS socket."""
    return TlsSocket(raw, context, server_side=True, server_hostname=None,
                     suppress_ragged_eofs=suppress_ragged_eofs)


class TlsSocket:
    """A TLS connection over a raw socket-like object; build it with wrap_client/wrap_server.

    Locks, always taken in this order: ``_recv_lock`` (one reader of the raw
    socket at a time), ``_send_lock`` (ciphertext leaves in the order it was
    made), ``_ssl_lock`` (the SSLObject and its BIOs; never held across I/O).
    """

    def __init__(self, raw: RawSocket, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None, suppress_ragged_eofs: bool = True,
                 session: ssl.SSLSession | None = None) -> None:
        self._raw = raw
        self.context = context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.suppress_ragged_eofs = suppress_ragged_eofs
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._recv_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._ssl_lock = threading.Lock()
        self._raw_eof = False  # the raw socket said EOF: fed to the BIO as write_eof()
        self._tls_eof = False  # recv() has reported the end of the stream
        self._broken = False  # the stream is unusable: no close_notify on close
        self._ragged = False  # the end came without the peer's close_notify
        self._notify_sent = False
        self._closed = False  # close() was called (makefile() objects may keep it open)
        self._real_closed = False
        self._io_refs = 0
        try:
            if not server_side and context.check_hostname and not server_hostname:
                # SSLSocket refuses this; SSLObject would silently skip the hostname check.
                raise ValueError("check_hostname requires server_hostname")
            if context.options & ssl.OP_IGNORE_UNEXPECTED_EOF:
                # Python 3.10 to 3.11.3 (Debian 12, Raspberry Pi OS) set this by default and
                # so report a truncated stream as a clean end: RFC 8446 §6.1 says it is not.
                # With it cleared, a ragged EOF is an SSLEOFError (or b"" when suppressed).
                context.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
            self._obj = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                         server_hostname=server_hostname, session=session)
            self._handshake()
        except BaseException:
            self._broken = True
            self._real_close()
            raise

    # -- the pump --------------------------------------------------------------

    def _handshake(self) -> None:
        while True:
            try:
                self._obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError as e:
                self._flush_quietly()  # the alert tells the peer why
                if _unexpected_eof(e):
                    raise _eof_error(e) from e
                raise
            self._flush()
            if done:
                return
            self._fill()

    def _fill(self) -> None:
        """Read ciphertext from the raw socket into the incoming BIO (call under _recv_lock)."""
        if self._raw_eof:
            return
        try:
            data = self._raw.recv(_RECV_SIZE)
        except (TimeoutError, BlockingIOError, InterruptedError):
            raise  # nothing lost: the TLS state is intact, a later recv may retry
        except OSError:
            self._broken = True
            raise
        with self._ssl_lock:
            if data:
                self._incoming.write(data)
            else:
                self._raw_eof = True
                self._incoming.write_eof()

    def _flush(self) -> None:
        """Send what the SSLObject produced as a side effect (handshake, alerts, key updates)."""
        if not self._outgoing.pending:
            return  # the common case; a reader must not queue behind a blocked writer
        with self._send_lock:
            with self._ssl_lock:
                data = self._outgoing.read()
            self._raw_sendall(data)

    def _flush_quietly(self) -> None:
        with contextlib.suppress(OSError):
            self._flush()

    def _raw_sendall(self, data: bytes) -> None:
        if not data:
            return
        try:
            self._raw.sendall(data)
        except OSError:
            self._broken = True  # part of a record may be gone: the stream is corrupt
            raise

    def _check_open(self) -> None:
        if self._real_closed:
            raise OSError(errno.EBADF, "Bad file descriptor")

    # -- reading ----------------------------------------------------------------

    def _read(self, n: int, buffer: WriteableBuffer | None) -> bytes | int:
        self._check_open()
        with self._recv_lock:
            while True:
                if self._tls_eof:
                    return b"" if buffer is None else 0
                with self._ssl_lock:
                    try:
                        got: bytes | int = (self._obj.read(n) if buffer is None
                                            else self._obj.read(n, buffer))
                    except ssl.SSLWantReadError:
                        got = -1  # e.g. a TLS 1.3 session ticket came, but no data yet
                    except ssl.SSLZeroReturnError:
                        got = 0  # close_notify, when ours was sent first (else read gives b"")
                    except ssl.SSLError as e:
                        self._broken = True
                        if not _unexpected_eof(e):
                            raise
                        if not self.suppress_ragged_eofs:
                            raise _eof_error(e) from e
                        self._ragged = True
                        got = 0  # raw EOF without close_notify: ragged, as the stdlib
                self._flush()
                if got == -1:
                    if self._raw_eof:  # cannot happen: OpenSSL reports EOF; be safe anyway
                        got = 0
                    else:
                        self._fill()
                        continue
                if not got:
                    self._tls_eof = True
                    return b"" if buffer is None else 0
                return got

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes of plaintext; b"" once the peer has closed."""
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv() on TlsSocket")
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if bufsize == 0:
            return b""
        got = self._read(bufsize, None)
        assert isinstance(got, bytes)
        return got

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv_into() on TlsSocket")
        size = memoryview(buffer).nbytes
        if nbytes < 0 or nbytes > size:
            raise ValueError("nbytes out of range")
        n = nbytes or size
        if n == 0:
            return 0
        got = self._read(n, buffer)
        assert isinstance(got, int)
        return got

    def pending(self) -> int:
        """Plaintext already decrypted and readable without touching the raw socket."""
        with self._ssl_lock:
            return self._obj.pending()

    # -- writing ----------------------------------------------------------------

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        """Encrypt and send some of ``data`` (at most 64 KiB); return how much."""
        if flags:
            raise ValueError("non-zero flags not allowed in calls to send() on TlsSocket")
        self._check_open()
        view = memoryview(data).cast("B")
        if not view:
            return 0
        chunk = view[:_WRITE_CHUNK]
        while True:
            with self._send_lock:
                with self._ssl_lock:
                    try:
                        n = self._obj.write(chunk)
                        want_read = False
                    except ssl.SSLWantReadError:  # a TLS 1.2 renegotiation in progress
                        n, want_read = 0, True
                    except ssl.SSLError:
                        self._broken = True
                        raise
                    out = self._outgoing.read()
                self._raw_sendall(out)
            if not want_read:
                return n
            with self._recv_lock:  # never while holding _send_lock: keep the lock order
                self._fill()
                if self._raw_eof:
                    raise _eof_error()

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        while view:
            view = view[self.send(view, flags):]

    # -- closing ----------------------------------------------------------------

    def _send_close_notify(self) -> None:
        if self._notify_sent or self._broken:
            return
        self._notify_sent = True
        with self._send_lock:
            with self._ssl_lock:
                # SSLObject.unwrap() queues close_notify, then (CPython calls
                # SSL_shutdown twice) reads the incoming BIO for the peer's: records
                # not yet decrypted would be eaten, or fail with "application data
                # after close notify". Hold them aside, and put them back after.
                # (The BIO never holds data once write_eof() was called on it:
                # _fill only runs when the SSLObject has drained it.)
                unread = self._incoming.read()
                try:
                    self._obj.unwrap()
                except ssl.SSLWantReadError:
                    pass  # the usual answer: the peer's close_notify has not come yet
                finally:
                    if unread:
                        self._incoming.write(unread)
                out = self._outgoing.read()
            self._raw_sendall(out)

    def unwrap(self) -> RawSocket:
        """Full TLS shutdown: send close_notify, read until the peer's, return the raw socket.

        Plaintext that arrives before the peer's close_notify is discarded, and
        so are cleartext bytes the peer sent right behind its close_notify if one
        raw recv took them together. The TlsSocket is unusable afterwards; the
        raw socket is not closed.
        """
        self._check_open()
        self._send_close_notify()
        while self._read(_RECV_SIZE, None):
            pass
        if self._ragged:
            raise _eof_error()
        self._real_closed = self._closed = True
        return self._raw

    def shutdown(self, how: int) -> None:
        """As ``socket.shutdown``; shutting the write side sends close_notify first."""
        self._check_open()
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            with contextlib.suppress(OSError):
                self._send_close_notify()
        self._raw.shutdown(how)

    def close(self) -> None:
        """Close, sending close_notify best-effort; deferred while makefile() objects live."""
        if self._closed:
            return
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs <= 0:
            self._real_close()

    def _real_close(self) -> None:
        if self._real_closed:
            return
        self._real_closed = True
        try:
            self._send_close_notify()
        except OSError:
            pass
        finally:
            self._raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._real_closed else self.version() or "?"
        side = "server" if self.server_side else "client"
        return f"<TlsSocket {side} {state} over {self._raw!r}>"

    # -- socket surface ---------------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        self._raw.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._raw.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self._raw.settimeout(None if flag else 0.0)

    def fileno(self) -> int:
        """The raw socket's descriptor, or -1 (hilkit sockets have none)."""
        fileno = getattr(self._raw, "fileno", None)
        if fileno is None or self._real_closed:
            return -1
        fd = fileno()
        return fd if isinstance(fd, int) else -1

    @property
    def raw(self) -> RawSocket:
        """The connection underneath (write to it and the TLS stream is corrupt)."""
        return self._raw

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> io.IOBase:
        """A file over the plaintext, as ``socket.makefile`` (only 'r', 'w', 'b' in mode)."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        binary = "b" in mode
        raw = _TlsIO(self, ("r" if reading else "") + ("w" if writing else ""))
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: io.BufferedIOBase
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        # cast: typeshed's TextIOWrapper wants a ``name`` that BufferedRWPair lacks.
        text = io.TextIOWrapper(cast("io.BufferedReader", buffer), io.text_encoding(encoding),
                                errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    # -- SSLSocket queries ------------------------------------------------------

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._obj.getpeercert(binary_form)

    def version(self) -> str | None:
        return self._obj.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._obj.cipher()

    def shared_ciphers(self) -> list[tuple[str, str, int]] | None:
        return self._obj.shared_ciphers()

    def compression(self) -> str | None:
        return self._obj.compression()

    def selected_alpn_protocol(self) -> str | None:
        return self._obj.selected_alpn_protocol()

    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        return self._obj.get_channel_binding(cb_type)

    @property
    def session(self) -> ssl.SSLSession | None:
        """For resumption: pass it to the next wrap_client (TLS 1.3: after some recv)."""
        return self._obj.session

    @property
    def session_reused(self) -> bool:
        return self._obj.session_reused


def _eof_error(cause: ssl.SSLError | None = None) -> ssl.SSLEOFError:
    if isinstance(cause, ssl.SSLEOFError):
        return cause
    return ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")


class _TlsIO(io.RawIOBase):
    """Raw I/O over a TlsSocket, as ``socket.SocketIO`` is over a socket."""

    def __init__(self, sock: TlsSocket, mode: str) -> None:
        super().__init__()
        self._sock = sock
        self._mode = mode
        self._timeout_occurred = False

    @property
    def mode(self) -> str:
        return self._mode + "b"

    def readable(self) -> bool:
        return "r" in self._mode

    def writable(self) -> bool:
        return "w" in self._mode

    def seekable(self) -> bool:
        return False

    def readinto(self, b: WriteableBuffer) -> int:
        self._checkClosed()
        if self._timeout_occurred:  # a buffered reader may have lost data: as SocketIO
            raise OSError("cannot read from timed out object")
        try:
            return self._sock.recv_into(b)
        except TimeoutError:
            self._timeout_occurred = True
            raise

    def write(self, b: ReadableBuffer) -> int:
        self._checkClosed()
        return self._sock.send(b)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._sock._decref_socketios()
