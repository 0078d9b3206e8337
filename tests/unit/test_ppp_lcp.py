"""LCP (RFC 1661 §5, §6): options, loop detection, keepalive, rejects, two ends talking."""

from __future__ import annotations

import random
import struct

import pytest

from hilkit.drivers.ppp.fsm import (
    CODE_REJECT,
    CONFIGURE_ACK,
    CONFIGURE_NAK,
    CONFIGURE_REJECT,
    CONFIGURE_REQUEST,
    TERMINATE_ACK,
    TERMINATE_REQUEST,
    LayerFinished,
    Option,
    Packet,
    State,
    encode_options,
)
from hilkit.drivers.ppp.lcp import (
    ACCM,
    ADDRESS_AND_CONTROL_FIELD_COMPRESSION,
    AUTHENTICATION_PROTOCOL,
    DEFAULT_ACCM,
    FCS_ALTERNATIVES,
    MAGIC_NUMBER,
    MRU,
    PROTOCOL_FIELD_COMPRESSION,
    AuthProtocol,
    CodeRejected,
    Lcp,
    LcpConfig,
    LcpNegotiated,
    LinkDead,
    LoopbackDetected,
    ProtocolRejected,
)
from hilkit.drivers.ppp.proto import PPP_IPCP, PPP_LCP
from tests.ppp_loop import converse, options_of, pkt

ECHO_REQUEST, ECHO_REPLY, DISCARD_REQUEST, PROTOCOL_REJECT = 9, 10, 11, 8


def lcp(config: LcpConfig | None = None, seed: int = 1, **timers: int) -> Lcp:
    link = Lcp(config, rng=random.Random(seed), **timers)
    link.open(0)
    link.up(0)
    return link


def opened(config: LcpConfig | None = None, peer: LcpConfig | None = None) -> tuple[Lcp, Lcp]:
    a, b = lcp(config, 1), lcp(peer, 2)
    converse(a, b)
    assert a.state is State.OPENED and b.state is State.OPENED
    a.events.clear()
    b.events.clear()
    return a, b


def test_default_request_asks_accm_magic_pfc_acfc() -> None:
    link = lcp()
    types = [o.type for o in options_of(link.send[0])]
    assert types == [ACCM, MAGIC_NUMBER, PROTOCOL_FIELD_COMPRESSION,
                     ADDRESS_AND_CONTROL_FIELD_COMPRESSION]
    link = lcp(LcpConfig(mru=1400, accm=None, magic=False, pfc=False, acfc=False))
    assert options_of(link.send[0]) == [Option(MRU, struct.pack("!H", 1400))]


@pytest.mark.parametrize("seed", range(8))
def test_two_ends_open_over_a_lossy_loop_and_agree(seed: int) -> None:
    rng = random.Random(seed)
    drop = {n for n in range(1, 60) if rng.random() < 0.3}
    a = lcp(LcpConfig(mru=1400, accm=0x000A0000), 10 + seed)
    b = lcp(LcpConfig(pfc=False), 20 + seed)
    converse(a, b, drop)
    assert a.state is State.OPENED and b.state is State.OPENED
    ra, rb = a.result, b.result
    assert ra is not None and rb is not None
    assert (ra.mru, ra.peer_mru, rb.mru, rb.peer_mru) == (1400, 1500, 1500, 1400)
    assert (ra.rx_accm, rb.tx_accm, ra.tx_accm, rb.rx_accm) == (0xA0000, 0xA0000, 0, 0)
    assert (ra.rx_pfc, rb.tx_pfc, ra.tx_pfc) == (False, False, False)  # b: no PFC either way
    assert ra.rx_acfc and ra.tx_acfc
    assert ra.magic == rb.peer_magic != 0 and rb.magic == ra.peer_magic != 0
    assert ra.magic != rb.magic
    assert b.peer_mru == 1400
    assert any(isinstance(e, LcpNegotiated) for e in a.events)


def test_slirp_request_is_acked_and_default_accm_stays_for_tx() -> None:
    """The request slirp sends (docs: MRU 1500, Magic, PFC, ACFC, no ACCM)."""
    link = lcp()
    req = encode_options([Option(MRU, struct.pack("!H", 1500)),
                          Option(MAGIC_NUMBER, struct.pack("!I", 0x1234ABCD)),
                          Option(PROTOCOL_FIELD_COMPRESSION),
                          Option(ADDRESS_AND_CONTROL_FIELD_COMPRESSION)])
    link.receive(pkt(CONFIGURE_REQUEST, 1, req), 1)
    assert link.send[-1] == pkt(CONFIGURE_ACK, 1, req)
    ours = Packet.parse(link.send[0])
    assert ours is not None
    link.receive(pkt(CONFIGURE_ACK, ours.ident, ours.data), 2)
    assert link.state is State.OPENED and link.result is not None
    assert link.result.tx_accm == DEFAULT_ACCM and link.result.rx_accm == 0
    assert link.result.tx_pfc and link.result.peer_magic == 0x1234ABCD


def test_tiny_mru_is_naked_and_fcs_alternatives_rejected_unless_supported() -> None:
    link = lcp()
    link.send.clear()
    mru = Option(MRU, struct.pack("!H", 20))
    fcs = Option(FCS_ALTERNATIVES, b"\x04")
    link.receive(pkt(CONFIGURE_REQUEST, 1, mru.encode()), 1)
    assert link.send.pop() == pkt(CONFIGURE_NAK, 1, Option(MRU, b"\x00\x80").encode())
    link.receive(pkt(CONFIGURE_REQUEST, 2, fcs.encode()), 1)
    assert link.send.pop() == pkt(CONFIGURE_REJECT, 2, fcs.encode())
    link = lcp(LcpConfig(fcs_alternatives=0x06))
    link.send.clear()
    link.receive(pkt(CONFIGURE_REQUEST, 2, fcs.encode()), 1)
    assert link.send.pop()[0] == CONFIGURE_ACK


@pytest.mark.parametrize("bad", [Option(MRU, b"\x05"), Option(ACCM, b"\x00\x00"),
                                 Option(MAGIC_NUMBER, b"\x01\x02\x03"),
                                 Option(PROTOCOL_FIELD_COMPRESSION, b"x"), Option(4, b"\xc0\x25"),
                                 Option(99, b"")])
def test_bad_lengths_and_unknown_options_are_rejected(bad: Option) -> None:
    link = lcp()
    link.send.clear()
    link.receive(pkt(CONFIGURE_REQUEST, 1, bad.encode()), 1)
    assert link.send == [pkt(CONFIGURE_REJECT, 1, bad.encode())]


# --- authentication option ----------------------------------------------------------------


def test_auth_demand_is_rejected_without_credentials_and_the_demander_closes() -> None:
    server = lcp(LcpConfig(demand_auth=(AuthProtocol.PAP,)), 1)
    client = lcp(LcpConfig(), 2)
    converse(server, client)
    assert server.state in (State.CLOSING, State.CLOSED, State.STOPPED)
    assert client.state is not State.OPENED
    assert any(isinstance(e, LayerFinished) for e in server.events)


def test_we_nak_an_auth_protocol_we_cannot_do_with_one_we_can() -> None:
    link = lcp(LcpConfig(can_authenticate=(AuthProtocol.PAP,)))
    link.send.clear()
    chap = AuthProtocol.CHAP_MD5.option()
    link.receive(pkt(CONFIGURE_REQUEST, 1, chap.encode()), 1)
    assert link.send.pop() == pkt(CONFIGURE_NAK, 1, AuthProtocol.PAP.option().encode())
    sha1 = Option(AUTHENTICATION_PROTOCOL, b"\xc2\x23\x06")
    link.receive(pkt(CONFIGURE_REQUEST, 2, sha1.encode()), 1)
    assert link.send.pop()[0] == CONFIGURE_NAK


def test_server_follows_the_clients_nak_to_another_protocol() -> None:
    server_cfg = LcpConfig(demand_auth=(AuthProtocol.CHAP_MD5, AuthProtocol.PAP))
    client_cfg = LcpConfig(can_authenticate=(AuthProtocol.PAP,))
    server, client = opened(server_cfg, client_cfg)
    assert server.result is not None and client.result is not None
    assert server.result.our_auth is AuthProtocol.PAP
    assert client.result.peer_auth is AuthProtocol.PAP
    assert client.result.our_auth is None
    server, client = opened(server_cfg, LcpConfig(can_authenticate=(AuthProtocol.CHAP_MD5,)))
    assert client.result is not None and client.result.peer_auth is AuthProtocol.CHAP_MD5


# --- magic numbers ------------------------------------------------------------------------


def test_own_magic_from_the_peer_is_naked_and_ours_changes() -> None:
    link = lcp()
    req = {o.type: o for o in options_of(link.send.pop())}
    mine = struct.unpack("!I", req[MAGIC_NUMBER].data)[0]
    link.receive(pkt(CONFIGURE_REQUEST, 1, req[MAGIC_NUMBER].encode()), 1)
    nak = options_of(link.send.pop())
    assert nak[0].type == MAGIC_NUMBER and nak[0] != req[MAGIC_NUMBER]
    assert link.loop_count == 1
    link.poll(3000)  # the retransmission carries a new number
    again = {o.type: o for o in options_of(link.send.pop())}
    assert struct.unpack("!I", again[MAGIC_NUMBER].data)[0] != mine


def test_looped_back_line_is_detected() -> None:
    link = lcp(LcpConfig(max_loopback=4))
    for _ in range(40):  # the line returns everything we send
        out, link.send = link.send, []
        for raw in out:
            link.receive(raw, 1)
        if any(isinstance(e, LoopbackDetected) for e in link.events):
            break
    detected = [e for e in link.events if isinstance(e, LoopbackDetected)]
    assert detected == [LoopbackDetected(PPP_LCP, 4)]
    assert link.state is not State.OPENED


def test_zero_magic_is_naked() -> None:
    link = lcp()
    link.send.clear()
    link.receive(pkt(CONFIGURE_REQUEST, 1, Option(MAGIC_NUMBER, bytes(4)).encode()), 1)
    nak = options_of(link.send.pop())
    assert nak[0].type == MAGIC_NUMBER and nak[0].data != bytes(4)
    assert link.loop_count == 0


# --- keepalive, echo, discard -------------------------------------------------------------


def test_echo_keepalive_declares_the_link_dead_after_n_misses() -> None:
    cfg = LcpConfig(echo_interval_ms=1000, echo_failure=3)
    a, _ = opened(cfg, LcpConfig())
    start = a.next_deadline()
    assert start is not None
    for i in range(3):
        a.poll(start + 1000 * i)
        assert [p[0] for p in a.send] == [ECHO_REQUEST]
        a.send.clear()
    a.poll(start + 3000)
    assert a.events == [LinkDead(PPP_LCP, 3)] and a.send == []
    assert a.next_deadline() is None


def test_echo_replies_keep_the_link_alive() -> None:
    cfg = LcpConfig(echo_interval_ms=1000, echo_failure=2)
    a, b = opened(cfg, LcpConfig())
    now = a.next_deadline()
    assert now is not None
    for _ in range(10):
        a.poll(now)
        for raw in a.take()[0]:
            b.receive(raw, now)
        replies = b.take()[0]
        assert [r[0] for r in replies] == [ECHO_REPLY]
        assert replies[0][4:8] == struct.pack("!I", b.result.magic if b.result else 0)
        a.receive(replies[0], now)
        now += 1000
    assert not any(isinstance(e, LinkDead) for e in a.events)


def test_echo_with_our_own_magic_is_dropped_and_discard_ignored() -> None:
    a, _ = opened()
    assert a.result is not None
    a.receive(pkt(ECHO_REQUEST, 3, struct.pack("!I", a.result.magic)), 5)
    a.receive(pkt(DISCARD_REQUEST, 4, b"\0\0\0\1junk"), 5)
    a.receive(pkt(ECHO_REQUEST, 5, b"\0\0"), 5)  # no room for a magic number
    assert a.send == [] and a.state is State.OPENED


def test_code_reject_of_echo_stops_keepalive() -> None:
    a, _ = opened(LcpConfig(echo_interval_ms=1000))
    a.receive(pkt(CODE_REJECT, 9, pkt(ECHO_REQUEST, 1, bytes(4))), 5)
    assert a.state is State.OPENED and a.events == [CodeRejected(PPP_LCP, ECHO_REQUEST)]
    assert a.next_deadline() is None


def test_code_reject_of_configure_request_is_catastrophic() -> None:
    a, _ = opened()
    a.receive(pkt(CODE_REJECT, 9, pkt(CONFIGURE_REQUEST, 1)), 5)
    assert a.state is State.STOPPING and a.send[-1][0] == TERMINATE_REQUEST


# --- Protocol-Reject, Code-Reject, Terminate ----------------------------------------------


def test_protocol_reject_helper_is_bounded_to_the_peers_mru() -> None:
    a, _ = opened(LcpConfig(), LcpConfig(mru=200))
    raw = a.protocol_reject(0x80FD, bytes(1000))
    assert raw is not None and len(raw) == 200
    assert raw[0] == PROTOCOL_REJECT and raw[4:6] == b"\x80\xfd"
    assert a.send == [raw]
    assert lcp().protocol_reject(0x80FD, b"") is None  # only in Opened


def test_received_protocol_reject_tells_the_owner() -> None:
    a, _ = opened()
    a.receive(pkt(PROTOCOL_REJECT, 1, struct.pack("!H", PPP_IPCP) + b"xx"), 5)
    assert a.events == [ProtocolRejected(PPP_LCP, PPP_IPCP)] and a.state is State.OPENED
    a.receive(pkt(PROTOCOL_REJECT, 2, struct.pack("!H", PPP_LCP)), 6)
    assert a.state is State.STOPPING  # LCP itself rejected: RXJ-


def test_unknown_code_gets_a_code_reject() -> None:
    a, _ = opened()
    a.receive(pkt(77, 1, b"abc"), 5)
    assert a.send == [pkt(CODE_REJECT, a.send[0][1], pkt(77, 1, b"abc"))]


def test_terminate_request_is_acked_and_both_ends_close() -> None:
    a, b = opened()
    a.close(10)
    assert a.send[0][0] == TERMINATE_REQUEST
    converse(a, b)
    assert a.state is State.CLOSED and b.state is State.STOPPED
    b_sent = [e for e in b.events if isinstance(e, LayerFinished)]
    assert b_sent
    a2, _ = opened()
    a2.receive(pkt(TERMINATE_REQUEST, 42, b"bye"), 1)
    assert a2.send == [pkt(TERMINATE_ACK, 42)]
