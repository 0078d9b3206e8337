"""PAP (RFC 1334) and CHAP-MD5 (RFC 1994), client against server, with a manual clock."""

from __future__ import annotations

import hashlib
import random
from typing import Protocol

import pytest

from hilkit.drivers.ppp.auth import (
    AuthFailed,
    AuthSucceeded,
    ChapClient,
    ChapServer,
    Credentials,
    PapClient,
    PapServer,
    chap_md5,
    sanitise,
)
from hilkit.drivers.ppp.fsm import LinkEvent, Packet
from hilkit.drivers.ppp.proto import PPP_CHAP, PPP_PAP

SECRETS = {b"alice": b"s3cret-pw"}
GOOD = Credentials(b"alice", b"s3cret-pw")
WRONG = Credentials(b"alice", b"guess")


class Side(Protocol):
    send: list[bytes]
    events: list[LinkEvent]

    def receive(self, raw: bytes, now_ms: int) -> None: ...


def pump(a: Side, b: Side, now: int = 0, drop: set[int] | None = None) -> None:
    n = 0
    for _ in range(50):
        moved = False
        for src, dst in ((a, b), (b, a)):
            out, src.send = src.send, []
            for raw in out:
                n += 1
                moved = True
                if not drop or n not in drop:
                    dst.receive(raw, now)
        if not moved:
            return


def test_credentials_never_show_the_secret() -> None:
    for text in (repr(GOOD), str(GOOD), repr([GOOD]), f"{GOOD}"):
        assert "s3cret" not in text and "alice" in text
    with pytest.raises(ValueError) as err:
        Credentials(b"alice", b"s3cret-pw" * 40)
    assert "s3cret" not in str(err.value)


def test_sanitise_keeps_printable_and_bounds_length() -> None:
    assert sanitise(b"ok\x1b[31m\x00\xff") == "ok?[31m??"
    assert len(sanitise(b"x" * 1000)) == 123


def test_pap_success() -> None:
    client, server = PapClient(GOOD), PapServer(SECRETS)
    client.start(0)
    pump(client, server)
    assert client.events == [AuthSucceeded(PPP_PAP, "welcome")]
    assert server.events == [AuthSucceeded(PPP_PAP, "", "alice")]


def test_pap_failure_carries_the_peers_message() -> None:
    client, server = PapClient(WRONG), PapServer(SECRETS, nak_message=b"no\x07 way")
    client.start(0)
    pump(client, server)
    assert client.events == [AuthFailed(PPP_PAP, "no? way")]
    assert isinstance(server.events[0], AuthFailed)
    assert "guess" not in repr(server.events) + repr(client.events)


def test_pap_retransmits_then_gives_up() -> None:
    client = PapClient(GOOD, restart_ms=1000, max_requests=3)
    client.start(0)
    for t in (999, 1000, 2000, 3000):
        client.poll(t)
    assert len(client.send) == 3
    assert client.events == [AuthFailed(PPP_PAP, "no answer from the authenticator")]
    assert client.next_deadline() is None


def test_pap_survives_a_lost_request_and_a_lost_ack() -> None:
    client, server = PapClient(GOOD), PapServer(SECRETS)
    client.start(0)
    client.send.clear()  # lost
    client.poll(3000)
    pump(client, server, 3000, drop={2})  # the Ack is lost
    assert client.events == []
    client.poll(6000)
    pump(client, server, 6000)
    assert client.events == [AuthSucceeded(PPP_PAP, "welcome")]
    assert len(server.events) == 1  # the retransmission was answered, not re-judged


def test_chap_response_is_md5_of_id_secret_challenge() -> None:
    client = ChapClient(GOOD)
    challenge = bytes(range(16))
    client.receive(Packet(1, 7, bytes((16,)) + challenge + b"srv").encode(), 0)
    response = Packet.parse(client.send[0])
    assert response is not None and response.code == 2 and response.ident == 7
    assert response.data[0] == 16
    assert response.data[1:17] == hashlib.md5(b"\x07" + b"s3cret-pw" + challenge).digest()
    assert response.data[17:] == b"alice"
    assert chap_md5(7, b"s3cret-pw", challenge) == response.data[1:17]


def test_chap_success_and_rechallenge() -> None:
    client, server = ChapClient(GOOD), ChapServer(SECRETS, rng=random.Random(1))
    server.challenge(0)
    pump(client, server)
    assert client.events == [AuthSucceeded(PPP_CHAP, "welcome")]
    assert server.events == [AuthSucceeded(PPP_CHAP, "", "alice")] and server.authenticated
    server.challenge(60_000)  # a re-challenge while the link is up
    pump(client, server, 60_000)
    assert len(client.events) == 1 and server.authenticated
    assert len(server.events) == 2


def test_chap_failure() -> None:
    client, server = ChapClient(WRONG), ChapServer(SECRETS, rng=random.Random(2))
    server.challenge(0)
    pump(client, server)
    assert client.events == [AuthFailed(PPP_CHAP, "authentication failed")]
    assert not server.authenticated
    unknown, server = ChapClient(Credentials(b"mallory", b"x")), ChapServer(SECRETS)
    server.challenge(0)
    pump(unknown, server)
    assert server.events == [AuthFailed(PPP_CHAP, "wrong response", "mallory")]


def test_chap_server_retransmits_challenge_then_fails() -> None:
    server = ChapServer(SECRETS, restart_ms=100, max_requests=2)
    server.challenge(0)
    server.poll(100)
    server.poll(200)
    assert len(server.send) == 2 and server.send[0] == server.send[1]
    assert server.events == [AuthFailed(PPP_CHAP, "no response to the challenge")]


def test_chap_lost_success_is_repeated_for_the_repeated_response() -> None:
    client, server = ChapClient(GOOD, restart_ms=100), ChapServer(SECRETS)
    server.challenge(0)
    pump(client, server, drop={3})  # challenge, response, [success lost]
    assert client.events == [] and client.next_deadline() == 100
    client.receive(Packet(3, 200, b"").encode(), 1)  # a verdict for another round: ignored
    client.poll(100)  # the Response again (RFC 1994 §4.2)
    pump(client, server, 100)
    assert client.events == [AuthSucceeded(PPP_CHAP, "welcome")]
    assert len(server.events) == 1  # answered again, not judged again
    assert client.next_deadline() is None


def test_mismatched_identifiers_are_ignored() -> None:
    client = PapClient(GOOD)
    client.start(0)
    client.receive(Packet(2, 99, b"\x02hi").encode(), 1)
    assert client.events == [] and not client.done
    chap = ChapClient(GOOD)
    chap.receive(Packet(1, 4, b"\x04abcd").encode(), 0)
    chap.receive(Packet(3, 5, b"ok").encode(), 1)
    assert chap.events == []
