"""IPCP (RFC 1332) with RFC 1877 DNS: the client pattern, a server, VJ, rejects."""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address

import pytest

from hilkit.drivers.ppp.fsm import (
    CONFIGURE_ACK,
    CONFIGURE_NAK,
    CONFIGURE_REJECT,
    CONFIGURE_REQUEST,
    LayerStarted,
    LayerUp,
    Option,
    Packet,
    State,
    encode_options,
    parse_options,
)
from hilkit.drivers.ppp.ipcp import (
    IP_ADDRESS,
    IP_COMPRESSION_PROTOCOL,
    PRIMARY_DNS,
    SECONDARY_DNS,
    Ipcp,
    IpcpConfig,
    IpcpNegotiated,
    IpcpResult,
    VjParams,
)
from tests.ppp_loop import converse, options_of, pkt

A = IPv4Address
CLIENT = IpcpConfig()
SERVER = IpcpConfig(address=A("10.0.2.2"), peer_address=A("10.0.2.15"), request_dns=False,
                    dns_servers=(A("10.0.2.3"), A("10.0.2.4")))


def addr(kind: int, address: str) -> Option:
    return Option(kind, A(address).packed)


def started(config: IpcpConfig) -> Ipcp:
    ncp = Ipcp(config)
    ncp.open(0)
    ncp.up(0)
    return ncp


def test_client_asks_to_be_told_address_and_dns() -> None:
    ncp = started(CLIENT)
    assert options_of(ncp.send[0]) == [addr(IP_ADDRESS, "0.0.0.0"), addr(PRIMARY_DNS, "0.0.0.0"),
                                       addr(SECONDARY_DNS, "0.0.0.0")]


def test_slirp_exchange_from_the_facts() -> None:
    """slirp's IPCP, as recorded: it Naks address and primary DNS, acks secondary 0."""
    ncp = started(CLIENT)
    first = Packet.parse(ncp.send.pop())
    assert first is not None
    vj = Option(IP_COMPRESSION_PROTOCOL, b"\x00\x2d\x0f\x01")
    peer_req = encode_options([addr(IP_ADDRESS, "10.0.2.2"), vj])
    ncp.receive(pkt(CONFIGURE_REQUEST, 1, peer_req), 1)
    # VJ not enabled here: rejected, the address acked once VJ is gone.
    assert ncp.send.pop() == pkt(CONFIGURE_REJECT, 1, vj.encode())
    ncp.receive(pkt(CONFIGURE_REQUEST, 2, addr(IP_ADDRESS, "10.0.2.2").encode()), 2)
    assert ncp.send.pop()[0] == CONFIGURE_ACK
    nak = encode_options([addr(IP_ADDRESS, "10.0.2.15"), addr(PRIMARY_DNS, "192.0.2.53")])
    ncp.receive(pkt(CONFIGURE_NAK, first.ident, nak), 3)
    second = Packet.parse(ncp.send.pop())
    assert second is not None
    assert parse_options(second.data) == [addr(IP_ADDRESS, "10.0.2.15"),
                                          addr(PRIMARY_DNS, "192.0.2.53"),
                                          addr(SECONDARY_DNS, "0.0.0.0")]
    ncp.receive(pkt(CONFIGURE_ACK, second.ident, second.data), 4)
    assert ncp.state is State.OPENED
    assert ncp.result == IpcpResult(A("10.0.2.15"), A("10.0.2.2"), (A("192.0.2.53"),),
                                    None, None)
    assert [type(e) for e in ncp.events] == [LayerStarted, LayerUp, IpcpNegotiated]


@pytest.mark.parametrize("seed", range(8))
def test_client_and_server_open_over_a_lossy_loop(seed: int) -> None:
    rng = random.Random(seed)
    drop = {n for n in range(1, 40) if rng.random() < 0.3}
    client = started(IpcpConfig(vj=True))
    server = started(IpcpConfig(**{**SERVER.__dict__, "vj": True, "vj_max_slot_id": 7}))
    converse(client, server, drop)
    assert client.state is State.OPENED and server.state is State.OPENED
    assert client.result is not None and server.result is not None
    assert client.result.address == A("10.0.2.15") == server.result.peer_address
    assert client.result.peer_address == A("10.0.2.2") == server.result.address
    assert client.result.dns == (A("10.0.2.3"), A("10.0.2.4"))
    assert client.result.vj_rx == VjParams(15, True) == server.result.vj_tx
    assert client.result.vj_tx == VjParams(7, True) == server.result.vj_rx


def test_peer_asking_zero_without_an_address_to_give_is_rejected() -> None:
    ncp = started(CLIENT)
    ncp.send.clear()
    zero = addr(IP_ADDRESS, "0.0.0.0")
    ncp.receive(pkt(CONFIGURE_REQUEST, 1, zero.encode()), 1)
    assert ncp.send == [pkt(CONFIGURE_REJECT, 1, zero.encode())]


def test_server_naks_zero_and_wrong_addresses_and_appends_a_missing_one() -> None:
    ncp = started(SERVER)
    ncp.send.clear()
    want = addr(IP_ADDRESS, "10.0.2.15").encode()
    for ident, asked in ((1, "0.0.0.0"), (2, "10.9.9.9")):
        ncp.receive(pkt(CONFIGURE_REQUEST, ident, addr(IP_ADDRESS, asked).encode()), 1)
        assert ncp.send.pop() == pkt(CONFIGURE_NAK, ident, want)
    ncp.receive(pkt(CONFIGURE_REQUEST, 3, b""), 1)
    assert ncp.send.pop() == pkt(CONFIGURE_NAK, 3, want)
    ncp.receive(pkt(CONFIGURE_REQUEST, 4, addr(PRIMARY_DNS, "0.0.0.0").encode()), 1)
    assert options_of(ncp.send.pop()) == [addr(PRIMARY_DNS, "10.0.2.3"),
                                          addr(IP_ADDRESS, "10.0.2.15")]


@pytest.mark.parametrize("kind", [130, 132, 1, 200])
def test_nbns_deprecated_and_unknown_options_are_rejected(kind: int) -> None:
    ncp = started(CLIENT)
    ncp.send.clear()
    odd = Option(kind, bytes(4) if kind != 1 else bytes(8))
    ncp.receive(pkt(CONFIGURE_REQUEST, 1, odd.encode()), 1)
    assert ncp.send == [pkt(CONFIGURE_REJECT, 1, odd.encode())]


def test_vj_offer_with_a_bad_form_is_naked_with_ours() -> None:
    ncp = started(IpcpConfig(vj=True, vj_max_slot_id=3, vj_comp_slot_id=False))
    ncp.send.clear()
    old = Option(IP_COMPRESSION_PROTOCOL, b"\x00\x2d")  # RFC 1172's short form
    ncp.receive(pkt(CONFIGURE_REQUEST, 1, old.encode()), 1)
    assert ncp.send == [pkt(CONFIGURE_NAK, 1, VjParams(3, False).option().encode())]


def test_rejects_of_our_options_drop_them() -> None:
    ncp = started(IpcpConfig(vj=True))
    req = Packet.parse(ncp.send.pop())
    assert req is not None
    opts = parse_options(req.data)
    assert opts is not None
    rejected = [o for o in opts if o.type in (IP_COMPRESSION_PROTOCOL, SECONDARY_DNS)]
    ncp.receive(pkt(CONFIGURE_REJECT, req.ident, encode_options(rejected)), 1)
    assert [o.type for o in options_of(ncp.send.pop())] == [IP_ADDRESS, PRIMARY_DNS]


def test_fixed_address_keeps_or_follows_a_nak() -> None:
    for accept, expected in ((True, "10.0.0.9"), (False, "10.0.0.1")):
        ncp = started(IpcpConfig(address=A("10.0.0.1"), request_dns=False,
                                 accept_nak_address=accept))
        req = Packet.parse(ncp.send.pop())
        assert req is not None
        ncp.receive(pkt(CONFIGURE_NAK, req.ident, addr(IP_ADDRESS, "10.0.0.9").encode()), 1)
        assert options_of(ncp.send.pop()) == [addr(IP_ADDRESS, expected)]


def test_renegotiation_gives_a_new_result_event() -> None:
    client, server = started(CLIENT), started(SERVER)
    converse(client, server)
    client.events.clear()
    client.receive(pkt(CONFIGURE_REQUEST, 99, addr(IP_ADDRESS, "10.0.2.2").encode()), 1)
    assert client.state is State.ACK_SENT
    converse(client, server)
    assert client.state is State.OPENED
    results = [e for e in client.events if isinstance(e, IpcpNegotiated)]
    assert len(results) == 1 and results[0].result.address == A("10.0.2.15")


def test_our_address_rejected_leaves_it_unknown() -> None:
    ncp = started(IpcpConfig(request_dns=False))
    req = Packet.parse(ncp.send.pop())
    assert req is not None
    ncp.receive(pkt(CONFIGURE_REJECT, req.ident, req.data), 1)
    req = Packet.parse(ncp.send.pop())
    assert req is not None and req.data == b""
    ncp.receive(pkt(CONFIGURE_ACK, req.ident, b""), 2)
    ncp.receive(pkt(CONFIGURE_REQUEST, 5, struct.pack("!BB", IP_ADDRESS, 6) + bytes(
        [10, 0, 0, 1])), 3)
    assert ncp.state is State.OPENED and ncp.result is not None
    assert ncp.result.address is None and ncp.result.peer_address == A("10.0.0.1")
