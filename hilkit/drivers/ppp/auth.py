"""PPP authentication, both sides: PAP (RFC 1334 §2) and CHAP with MD5 (RFC 1994).

Sans-I/O like the automaton: ``receive(packet, now_ms)``, ``poll(now_ms)`` by
``next_deadline()``; packets to send collect in ``send`` (the owner frames them
under ``protocol``), outcomes in ``events`` as ``AuthSucceeded``/``AuthFailed``.

Secrets stay secret: ``Credentials`` hides the secret in its ``repr``, and no
event, log line or exception carries it. Messages from the peer are shown only
after ``sanitise`` (printable ASCII, bounded).
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from hilkit.drivers.ppp.fsm import LinkEvent, Packet
from hilkit.drivers.ppp.proto import PPP_CHAP, PPP_PAP

# PAP codes (RFC 1334 §2.2).
PAP_AUTHENTICATE_REQUEST = 1
PAP_AUTHENTICATE_ACK = 2
PAP_AUTHENTICATE_NAK = 3
# CHAP codes (RFC 1994 §4).
CHAP_CHALLENGE = 1
CHAP_RESPONSE = 2
CHAP_SUCCESS = 3
CHAP_FAILURE = 4

RESTART_MS = 3000  # retransmission: the restart timer of RFC 1661 §4.6
MAX_REQUESTS = 10  # Authenticate-Requests/Challenges before giving up (Max-Configure)
CHALLENGE_LEN = 16  # ours; RFC 1994 §4.1 leaves it to the implementation
MD5_LEN = 16  # RFC 1321
MESSAGE_LIMIT = 120  # characters of a peer's message we pass on


def sanitise(raw: bytes, limit: int = MESSAGE_LIMIT) -> str:
    """A peer's text made safe to log: printable ASCII only, at most ``limit`` chars."""
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in raw[:limit])
    return text + ("..." if len(raw) > limit else "")


@dataclass(frozen=True)
class Credentials:
    """A name and its secret; ``repr`` shows the name only."""

    name: bytes
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not 0 < len(self.name) <= 255 or len(self.secret) > 255:
            raise ValueError("PPP credentials: name 1-255 bytes, secret at most 255 bytes")

    def __repr__(self) -> str:
        return f"Credentials(name={sanitise(self.name)!r}, secret=<hidden>)"

    __str__ = __repr__

    @staticmethod
    def of(name: str, secret: str) -> Credentials:
        return Credentials(name.encode(), secret.encode())


@dataclass(frozen=True)
class AuthSucceeded(LinkEvent):
    """The authentication phase passed; ``peer`` is the name the peer gave (servers)."""

    message: str = ""
    peer: str = ""


@dataclass(frozen=True)
class AuthFailed(LinkEvent):
    """It failed; ``message`` is the peer's (sanitised) or ours. The link should close."""

    message: str = ""
    peer: str = ""


def chap_md5(ident: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 1994 §2: MD5 over Identifier, secret and challenge value."""
    return hashlib.md5(bytes((ident & 0xFF,)) + secret + challenge,
                       usedforsecurity=False).digest()


def _length_prefixed(data: bytes, at: int) -> tuple[bytes, int] | None:
    """One byte of length, then that many bytes; None if it runs past ``data``."""
    if at >= len(data) or at + 1 + data[at] > len(data):
        return None
    end = at + 1 + data[at]
    return bytes(data[at + 1:end]), end


class _Side:
    """What the four roles share: output lists, a retransmission timer, counters."""

    protocol = 0

    def __init__(self, restart_ms: int, max_requests: int) -> None:
        self.restart_ms = restart_ms
        self.max_requests = max_requests
        self.send: list[bytes] = []
        self.events: list[LinkEvent] = []
        self.rx_malformed = 0
        self.done = False
        self._deadline: int | None = None
        self._tries = 0
        self._ident = 0

    def next_deadline(self) -> int | None:
        return self._deadline

    def take(self) -> tuple[list[bytes], list[LinkEvent]]:
        out, events = self.send, self.events
        self.send, self.events = [], []
        return out, events

    def _emit(self, code: int, ident: int, data: bytes) -> None:
        self.send.append(Packet(code, ident, data).encode())

    def _parse(self, raw: bytes) -> Packet | None:
        packet = Packet.parse(raw)
        if packet is None:
            self.rx_malformed += 1
        return packet

    def _finish(self, event: LinkEvent) -> None:
        self.done = True
        self._deadline = None
        self.events.append(event)


class PapClient(_Side):
    """The authenticatee of RFC 1334 §2: Authenticate-Request until Ack or Nak."""

    protocol = PPP_PAP

    def __init__(self, credentials: Credentials, *, restart_ms: int = RESTART_MS,
                 max_requests: int = MAX_REQUESTS) -> None:
        super().__init__(restart_ms, max_requests)
        self._credentials = credentials

    def start(self, now_ms: int) -> None:
        self.done = False
        self._tries = 0
        self._ident = (self._ident + 1) & 0xFF
        self._request(now_ms)

    def _request(self, now_ms: int) -> None:
        c = self._credentials
        self._tries += 1
        self._emit(PAP_AUTHENTICATE_REQUEST, self._ident,
                   bytes((len(c.name),)) + c.name + bytes((len(c.secret),)) + c.secret)
        self._deadline = now_ms + self.restart_ms

    def poll(self, now_ms: int) -> None:
        if self._deadline is None or now_ms < self._deadline:
            return
        if self._tries >= self.max_requests:
            self._finish(AuthFailed(self.protocol, "no answer from the authenticator"))
        else:
            self._request(now_ms)

    def receive(self, raw: bytes, now_ms: int) -> None:
        packet = self._parse(raw)
        if packet is None or self.done or packet.ident != self._ident:
            return
        if packet.code not in (PAP_AUTHENTICATE_ACK, PAP_AUTHENTICATE_NAK):
            return
        field_ = _length_prefixed(packet.data, 0)
        message = sanitise(field_[0]) if field_ else ""  # §2.2.2: a lax Msg-Length is no harm
        if packet.code == PAP_AUTHENTICATE_ACK:
            self._finish(AuthSucceeded(self.protocol, message))
        else:
            self._finish(AuthFailed(self.protocol, message))


class PapServer(_Side):
    """The authenticator of RFC 1334 §2: answers each Authenticate-Request."""

    protocol = PPP_PAP

    def __init__(self, secrets: Mapping[bytes, bytes], *, ack_message: bytes = b"welcome",
                 nak_message: bytes = b"authentication failed") -> None:
        super().__init__(RESTART_MS, MAX_REQUESTS)
        self._secrets = secrets
        self._messages = (ack_message, nak_message)
        self._answered: tuple[int, int] | None = None  # (ident, code) of our verdict

    def poll(self, now_ms: int) -> None:
        """The authenticator keeps no timer (its owner may give up on silence)."""

    def reset(self) -> None:
        """A new link: forget the last verdict."""
        self._answered = None
        self.done = False

    def receive(self, raw: bytes, now_ms: int) -> None:
        packet = self._parse(raw)
        if packet is None or packet.code != PAP_AUTHENTICATE_REQUEST:
            return
        name = _length_prefixed(packet.data, 0)
        secret = _length_prefixed(packet.data, name[1]) if name else None
        if name is None or secret is None:
            self.rx_malformed += 1
            return
        if self._answered is not None:
            # §2.2.1: a retransmitted request after our verdict gets the same verdict.
            code = self._answered[1]
        else:
            known = self._secrets.get(name[0])
            ok = known is not None and hmac.compare_digest(known, secret[0])
            code = PAP_AUTHENTICATE_ACK if ok else PAP_AUTHENTICATE_NAK
            self._answered = (packet.ident, code)
            peer = sanitise(name[0])
            self._finish(AuthSucceeded(self.protocol, "", peer) if ok
                         else AuthFailed(self.protocol, "wrong name or secret", peer))
        message = self._messages[0 if code == PAP_AUTHENTICATE_ACK else 1]
        self._emit(code, packet.ident, bytes((len(message),)) + message)


class ChapClient(_Side):
    """The authenticatee of RFC 1994 §4: answers every Challenge, re-challenges too.

    A Success may be lost; the authenticator must take a repeated Response
    (§4.2), so the Response is repeated on the restart timer until a verdict.
    """

    protocol = PPP_CHAP

    def __init__(self, credentials: Credentials, *, restart_ms: int = RESTART_MS,
                 max_requests: int = MAX_REQUESTS) -> None:
        super().__init__(restart_ms, max_requests)
        self._credentials = credentials
        self._response = b""
        self.succeeded = False

    def poll(self, now_ms: int) -> None:
        if self._deadline is None or now_ms < self._deadline:
            return
        if self._tries >= self.max_requests:
            self._deadline = None  # the authenticator's own timer decides now
            return
        self._tries += 1
        self.send.append(self._response)
        self._deadline = now_ms + self.restart_ms

    def receive(self, raw: bytes, now_ms: int) -> None:
        packet = self._parse(raw)
        if packet is None:
            return
        if packet.code == CHAP_CHALLENGE:
            value = _length_prefixed(packet.data, 0)
            if value is None or not value[0]:
                self.rx_malformed += 1
                return
            self._ident = packet.ident
            c = self._credentials
            digest = chap_md5(packet.ident, c.secret, value[0])
            self._response = Packet(CHAP_RESPONSE, packet.ident,
                                    bytes((MD5_LEN,)) + digest + c.name).encode()
            self.send.append(self._response)
            self.done = False
            self._tries = 1
            self._deadline = now_ms + self.restart_ms
        elif packet.code in (CHAP_SUCCESS, CHAP_FAILURE) and packet.ident == self._ident:
            if self.done:
                return  # a copy of the verdict we already have
            message = sanitise(packet.data)
            if packet.code == CHAP_SUCCESS:
                first = not self.succeeded
                self.succeeded = True
                self.done = True
                self._deadline = None
                if first:
                    self.events.append(AuthSucceeded(self.protocol, message))
            else:
                self.succeeded = False
                self._finish(AuthFailed(self.protocol, message))


class ChapServer(_Side):
    """The authenticator of RFC 1994 §4: Challenge until a Response, then the verdict.

    ``challenge(now_ms)`` starts (and, while the link is up, re-starts) a round.
    """

    protocol = PPP_CHAP

    def __init__(self, secrets: Mapping[bytes, bytes], *, name: bytes = b"hilkit",
                 rng: random.Random | None = None, restart_ms: int = RESTART_MS,
                 max_requests: int = MAX_REQUESTS) -> None:
        super().__init__(restart_ms, max_requests)
        self._secrets = secrets
        self._name = name
        self._rng = rng or random.SystemRandom()
        self._value = b""
        self._verdict: int | None = None
        self.authenticated = False

    def challenge(self, now_ms: int) -> None:
        self._ident = (self._ident + 1) & 0xFF
        self._value = bytes(self._rng.getrandbits(8) for _ in range(CHALLENGE_LEN))
        self._verdict = None
        self.done = False
        self._tries = 0
        self._send_challenge(now_ms)

    def _send_challenge(self, now_ms: int) -> None:
        self._tries += 1
        self._emit(CHAP_CHALLENGE, self._ident,
                   bytes((len(self._value),)) + self._value + self._name)
        self._deadline = now_ms + self.restart_ms

    def poll(self, now_ms: int) -> None:
        if self._deadline is None or now_ms < self._deadline:
            return
        if self._tries >= self.max_requests:
            self.authenticated = False
            self._finish(AuthFailed(self.protocol, "no response to the challenge"))
        else:
            self._send_challenge(now_ms)

    def receive(self, raw: bytes, now_ms: int) -> None:
        packet = self._parse(raw)
        if packet is None or packet.code != CHAP_RESPONSE or not self._value \
                or packet.ident != self._ident:
            return
        value = _length_prefixed(packet.data, 0)
        if value is None:
            self.rx_malformed += 1
            return
        if self._verdict is None:
            peer = packet.data[value[1]:]
            secret = self._secrets.get(bytes(peer))
            ok = secret is not None and hmac.compare_digest(
                chap_md5(self._ident, secret, self._value), value[0])
            self._verdict = CHAP_SUCCESS if ok else CHAP_FAILURE
            self.authenticated = ok
            self._finish(AuthSucceeded(self.protocol, "", sanitise(peer)) if ok
                         else AuthFailed(self.protocol, "wrong response", sanitise(peer)))
        # §4.2: a repeated Response gets the same verdict again.
        message = b"welcome" if self._verdict == CHAP_SUCCESS else b"authentication failed"
        self._emit(self._verdict, packet.ident, message)


__all__ = [
    "AuthFailed",
    "AuthSucceeded",
    "ChapClient",
    "ChapServer",
    "Credentials",
    "PapClient",
    "PapServer",
    "chap_md5",
    "sanitise",
]
