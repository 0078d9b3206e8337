"""A whole PPP link (RFC 1661 §3 phases): two links back to back over an in-memory line,
auth, VJ, noise, keepalive, termination, renegotiation, rejects, fuzz, and slirp's
conversation (docs facts §9) replayed."""

from __future__ import annotations

import copy
import random
import struct
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest

from hilkit.drivers.ppp.auth import Credentials
from hilkit.drivers.ppp.fsm import (
    CONFIGURE_ACK,
    CONFIGURE_NAK,
    CONFIGURE_REQUEST,
    Option,
    Packet,
    encode_options,
    parse_options,
)
from hilkit.drivers.ppp.hdlc import FrameDecoder, FrameEncoder
from hilkit.drivers.ppp.ipcp import IP_ADDRESS, IP_COMPRESSION_PROTOCOL, PRIMARY_DNS, SECONDARY_DNS
from hilkit.drivers.ppp.lcp import (
    ADDRESS_AND_CONTROL_FIELD_COMPRESSION,
    MAGIC_NUMBER,
    MRU,
    PROTOCOL_FIELD_COMPRESSION,
    AuthProtocol,
)
from hilkit.drivers.ppp.link import (
    MAX_PACKETS,
    AuthFailedEvent,
    LinkDown,
    LinkUp,
    Phase,
    PppConfig,
    PppLink,
    Terminated,
)
from hilkit.drivers.ppp.proto import PPP_CCP, PPP_IP, PPP_IPCP, PPP_IPV6, PPP_LCP, PPP_VJC
from hilkit.stack import ipv4, udp
from tests.ppp_loop import pump
from tests.unit.test_ppp_vj import CLIENT, SERVER, connection

A = IPv4Address
SECRETS = {b"alice": b"s3cret-pw"}
GOOD = Credentials(b"alice", b"s3cret-pw")
PROTOCOL_REJECT = 8  # RFC 1661 §5.7


def client_config(**kw: object) -> PppConfig:
    base: dict[str, object] = {"credentials": GOOD, "restart_ms": 1000}
    base.update(kw)
    return PppConfig(**base)  # type: ignore[arg-type]


def server_config(auth: AuthProtocol | None = AuthProtocol.PAP, **kw: object) -> PppConfig:
    base: dict[str, object] = {
        "demand_auth": (auth,) if auth else (), "secrets": SECRETS, "address": "10.0.2.2",
        "peer_address": "10.0.2.15", "dns_servers": ("10.0.2.3",), "request_dns": False,
        "restart_ms": 1000}
    base.update(kw)
    return PppConfig(**base)  # type: ignore[arg-type]


def pair(client: PppConfig | None = None, server: PppConfig | None = None,
         seed: int = 1) -> tuple[PppLink, PppLink]:
    c = PppLink(client or client_config(), rng=random.Random(seed))
    s = PppLink(server or server_config(), rng=random.Random(seed + 1000))
    c.line_up(0)
    s.line_up(0)
    return c, s


def both_up(c: PppLink, s: PppLink) -> Callable[[], bool]:
    return lambda: c.ip_open and s.ip_open


def of(events: list[object], kind: type) -> list[object]:
    return [e for e in events if isinstance(e, kind)]


def udp_packet(src: int, dst: int, payload: bytes, ident: int = 7) -> bytes:
    return ipv4.build_header(src, dst, ipv4.PROTO_UDP, 8 + len(payload), ident) \
        + udp.header(src, 5000, dst, 53, payload) + payload


def frames_of(data: bytes) -> list[tuple[int, Packet | bytes]]:
    """Decode a link's line output; control packets parsed."""
    out: list[tuple[int, Packet | bytes]] = []
    for protocol, info in FrameDecoder().feed(data):
        packet = Packet.parse(info) if protocol >= 0x8000 else None
        out.append((protocol, packet if packet is not None else info))
    return out


# --- coming up ----------------------------------------------------------------------------


@pytest.mark.parametrize("accm", [0, 0xFFFFFFFF])
@pytest.mark.parametrize("vj", [True, False])
@pytest.mark.parametrize("auth", [None, AuthProtocol.PAP, AuthProtocol.CHAP_MD5])
def test_links_come_up_and_carry_ip_both_ways(auth: AuthProtocol | None, vj: bool,
                                               accm: int) -> None:
    c, s = pair(client_config(vj=vj, accm=accm), server_config(auth, vj=vj, accm=accm))
    pump(c, s, until=both_up(c, s))
    ce, se = c.take_events(), s.take_events()
    assert of(ce, LinkUp) and of(se, LinkUp)
    assert not of(ce + se, LinkDown) and not of(ce + se, AuthFailedEvent)
    cr, sr = c.ipcp_result, s.ipcp_result
    assert cr is not None and sr is not None
    assert cr.address == sr.peer_address == A("10.0.2.15")
    assert cr.peer_address == sr.address == A("10.0.2.2")
    assert cr.dns == (A("10.0.2.3"),)
    assert (cr.vj_tx is not None) is vj and (cr.vj_rx is not None) is vj
    assert c.lcp_result is not None and c.lcp_result.tx_accm == accm
    assert c.phase is Phase.NETWORK and s.phase is Phase.NETWORK
    if auth is not None:
        assert c.lcp_result.peer_auth is auth and s.lcp_result is not None
        assert s.lcp_result.our_auth is auth

    a, b = connection()
    sent_c = [a.send(b, bytes([i]) * (100 + i)) for i in range(30)]
    sent_c.append(udp_packet(CLIENT, SERVER, b"\x00\x01control\x1f" * 5))
    sent_s = [b.send(a, bytes([0x7E, 0x7D, i]) * 40) for i in range(30)]
    sent_s.append(udp_packet(SERVER, CLIENT, bytes(range(256))))
    for pc, ps in zip(sent_c, sent_s, strict=True):
        assert c.send_ip(pc, 10) and s.send_ip(ps, 10)
        pump(c, s, now=10, until=lambda: True)
    assert s.take_packets() == sent_c
    assert c.take_packets() == sent_s
    compressed = c.stats.get("vj_tx_compressed", 0)
    assert (compressed >= 25) is vj
    assert s.stats.get("vj_rx_compressed_in", 0) == compressed
    assert c.stats["tx_IPv4"] >= 1  # the UDP packet is never compressed
    if not vj:
        assert c.stats["tx_IPv4"] == len(sent_c)


def test_chunked_line_and_passive_ends() -> None:
    """One byte per read, and a passive server that speaks only when spoken to."""
    c, s = pair(client_config(), server_config(passive=True))
    assert s.take_output() == b""
    pump(c, s, until=both_up(c, s), chunk=1)
    assert c.ip_open and s.ip_open


def test_two_passive_ends_stay_silent() -> None:
    c, s = pair(client_config(passive=True), server_config(passive=True))
    pump(c, s, limit_ms=20_000)
    assert c.take_output() == b"" and s.take_output() == b""
    assert c.phase is Phase.ESTABLISH
    c.close(30_000)
    assert of(c.take_events(), Terminated) and c.next_deadline() is None


def test_send_ip_refused_unless_open_and_within_peer_mru() -> None:
    c, s = pair(client_config(), server_config(None, mru=600))
    assert not c.send_ip(b"\x45" + bytes(30), 0)
    pump(c, s, until=both_up(c, s))
    assert c.lcp_result is not None and c.lcp_result.peer_mru == 600
    assert not c.send_ip(udp_packet(CLIENT, SERVER, bytes(600)), 1)
    assert c.send_ip(udp_packet(CLIENT, SERVER, bytes(500)), 1)
    assert c.stats["ip_dropped"] == 2 and c.stats["ip_out"] == 1


def test_received_packets_are_bounded() -> None:
    c, s = pair(client_config(), server_config(None))
    pump(c, s, until=both_up(c, s))
    pkt = udp_packet(CLIENT, SERVER, b"x")
    for _ in range(MAX_PACKETS + 10):
        c.send_ip(pkt, 1)
    s.receive(c.take_output(), 1)
    assert len(s.take_packets()) == MAX_PACKETS
    assert s.stats["ip_dropped_queue_full"] == 10


# --- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [AuthProtocol.PAP, AuthProtocol.CHAP_MD5])
def test_wrong_secret_fails_and_terminates(auth: AuthProtocol) -> None:
    c, s = pair(client_config(credentials=Credentials(b"alice", b"guess")), server_config(auth))
    pump(c, s, until=lambda: c.phase is Phase.DEAD and s.phase is Phase.DEAD)
    ce, se = c.take_events(), s.take_events()
    assert not of(ce + se, LinkUp)
    assert of(ce, AuthFailedEvent) and of(se, AuthFailedEvent)
    assert [type(e) for e in ce][-1] is Terminated
    assert b"guess" not in repr(ce + se).encode()


def test_no_credentials_rejects_the_demand_and_the_server_gives_up() -> None:
    c, s = pair(client_config(credentials=None), server_config(AuthProtocol.CHAP_MD5))
    pump(c, s, until=lambda: s.phase is Phase.DEAD)
    assert of(s.take_events(), Terminated) and not of(c.take_events(), LinkUp)


def test_line_noise_links_come_up_and_delivered_packets_are_intact() -> None:
    rng = random.Random(1662)
    rate = 1 / 6000  # per byte, each of a drop and a bit flip

    def noisy(data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            r = rng.random()
            if r < rate:
                continue  # dropped
            out.append(byte ^ (1 << rng.randrange(8)) if r < 2 * rate else byte)
        return bytes(out)

    c, s = pair(client_config(), server_config(AuthProtocol.CHAP_MD5))
    now = pump(c, s, until=both_up(c, s), line=noisy, limit_ms=600_000)
    assert c.ip_open and s.ip_open
    a, b = connection()
    sent: list[bytes] = []
    delivered: list[bytes] = []
    for i in range(400):
        # Every tenth a TCP retransmission: never compressed, it resynchronises VJ.
        pkt = sent[-3] if i % 10 == 9 else a.send(b, bytes([i & 0xFF]) * 200)
        sent.append(pkt)
        if c.ip_open:
            c.send_ip(pkt, now)
        pump(c, s, now=now, line=noisy, until=lambda: True)
        delivered += s.take_packets()
    known = set(sent)
    assert all(p in known for p in delivered)
    assert len(delivered) > 250
    st = s.stats
    assert st["hdlc_rx_bad_fcs"] + st["hdlc_rx_aborts"] + st["hdlc_rx_too_short"] > 0
    assert st["vj_rx_frame_errors"] > 0 and st["vj_rx_tossed"] > 0
    assert st["vj_rx_uncompressed_in"] > 1 and st["vj_rx_compressed_in"] > 150


def test_keepalive_detects_a_silent_peer() -> None:
    c, s = pair(client_config(echo_interval_ms=1000, echo_failure=3), server_config(None))
    now = pump(c, s, until=both_up(c, s))
    c.take_events()
    # The peer answers echoes while it hears them ...
    now = pump(c, s, now=now, limit_ms=now + 10_000)
    assert c.ip_open and c.stats["rx_LCP"] >= 10
    # ... then goes silent.
    start = now
    while not of(events := c.take_events(), LinkDown) and now < start + 20_000:
        c.take_output()
        deadline = c.next_deadline()
        assert deadline is not None
        now = deadline
        c.poll(now)
    down = of(events, LinkDown)
    assert down and "echo" in str(down[0])
    assert 3 * 1000 <= now - start <= 4 * 1000
    assert not c.ip_open and c.phase is Phase.TERMINATE
    pump(c, PppLink(), now=now)  # nobody answers the Terminate-Requests
    assert c.phase is Phase.DEAD and of(c.take_events(), Terminated)


def test_peer_terminate_then_line_up_again() -> None:
    c, s = pair()
    now = pump(c, s, until=both_up(c, s))
    c.take_events()
    s.take_events()
    s.close(now, "bye")
    now = pump(c, s, now=now, until=lambda: c.phase is Phase.DEAD and s.phase is Phase.DEAD)
    ce, se = c.take_events(), s.take_events()
    assert [type(e) for e in ce] == [LinkDown, Terminated]
    assert [type(e) for e in se] == [LinkDown, Terminated]
    assert se[0] == LinkDown("bye") and "peer" in str(ce[0])
    assert not c.send_ip(udp_packet(CLIENT, SERVER, b"late"), now)
    c.line_up(now)
    s.line_up(now)
    pump(c, s, now=now, until=both_up(c, s))
    assert of(c.take_events(), LinkUp) and of(s.take_events(), LinkUp)


def test_line_down_ends_the_link_at_once() -> None:
    c, s = pair()
    now = pump(c, s, until=both_up(c, s))
    c.take_events()
    c.line_down(now)
    assert c.take_events() == [LinkDown("line down"), Terminated("line down")]
    assert c.phase is Phase.DEAD and c.next_deadline() is None
    c.receive(s.take_output() + b"\x7e\xff\x03\xc0\x21", now)  # ignored while DEAD


def test_lcp_renegotiation_brings_ip_down_then_up() -> None:
    c, s = pair()
    now = pump(c, s, until=both_up(c, s))
    c.take_events()
    s.take_events()
    # The server's LCP asks again (its options, a fresh identifier), as after a restart.
    request = Packet(CONFIGURE_REQUEST, 0x77, encode_options(s.lcp.our_options()))
    c.receive(FrameEncoder().encode(PPP_LCP, request.encode()), now)
    assert not c.ip_open and c.phase is Phase.ESTABLISH
    pump(c, s, now=now, until=both_up(c, s))
    ce, se = c.take_events(), s.take_events()
    assert [type(e) for e in ce] == [LinkDown, LinkUp]
    assert [type(e) for e in se] == [LinkDown, LinkUp]
    assert c.send_ip(udp_packet(CLIENT, SERVER, b"again"), now)
    pump(c, s, now=now, until=lambda: True)
    assert s.take_packets() == [udp_packet(CLIENT, SERVER, b"again")]


def test_unknown_protocol_is_protocol_rejected_to_the_peer() -> None:
    c, s = pair()
    now = pump(c, s, until=both_up(c, s))
    ccp = Packet(CONFIGURE_REQUEST, 1, b"").encode()
    c.receive(FrameEncoder().encode(PPP_CCP, ccp), now)
    c.receive(FrameEncoder().encode(PPP_IPV6, b"\x60" + bytes(39)), now)
    out = c.take_output()
    rejects = [p for proto, p in frames_of(out) if proto == PPP_LCP]
    assert [p.code for p in rejects if isinstance(p, Packet)] == [PROTOCOL_REJECT] * 2
    first = rejects[0]
    assert isinstance(first, Packet) and first.data == struct.pack("!H", PPP_CCP) + ccp
    s.receive(out, now)
    assert s.stats["protocol_rejects_received"] == 2 and s.ip_open
    assert c.stats["unknown_protocols"] == 2 and c.stats["protocol_rejects_sent"] == 2


def test_ncp_and_ip_before_their_phase_are_dropped_silently() -> None:
    c = PppLink(client_config(), rng=random.Random(3))
    c.line_up(0)
    c.take_output()
    enc = FrameEncoder()
    c.receive(enc.encode(PPP_IPCP, Packet(CONFIGURE_REQUEST, 1, b"").encode())
              + enc.encode(PPP_IP, udp_packet(SERVER, CLIENT, b"x"))
              + enc.encode(PPP_CCP, b"\x01\x01\x00\x04"), 0)
    assert c.take_output() == b"" and c.take_packets() == []
    assert c.stats["rx_before_lcp"] == 3


# --- a corpus of hostile input in every phase ---------------------------------------------


def _phase_links() -> dict[Phase, PppLink]:
    links: dict[Phase, PppLink] = {Phase.DEAD: PppLink(client_config())}
    est = PppLink(client_config(), rng=random.Random(5))
    est.line_up(0)
    links[Phase.ESTABLISH] = est
    c, s = pair(client_config(), server_config(AuthProtocol.CHAP_MD5))
    # The line goes quiet once the server challenges: it waits in AUTHENTICATE.
    pump(c, s, until=lambda: s.phase is Phase.AUTHENTICATE,
         line=lambda data: b"" if s.phase is Phase.AUTHENTICATE else data)
    assert s.phase is Phase.AUTHENTICATE
    links[Phase.AUTHENTICATE] = s
    c, s = pair()
    now = pump(c, s, until=both_up(c, s))
    links[Phase.NETWORK] = c
    s.close(now)
    links[Phase.TERMINATE] = s
    for link in links.values():
        link.take_output()
        link.take_events()
    return links


def _conversation() -> list[tuple[int, bytes]]:
    c, s = pair(client_config(), server_config(AuthProtocol.CHAP_MD5))
    captured: list[bytes] = []

    def tap(data: bytes) -> bytes:
        captured.append(data)
        return data

    now = pump(c, s, until=both_up(c, s), line=tap)
    a, b = connection()
    for i in range(5):
        c.send_ip(a.send(b, b"d" * i), now)
        s.send_ip(b.send(a, b"e" * i), now)
    pump(c, s, now=now, line=tap, until=lambda: True)
    return FrameDecoder(rx_accm=0).feed(b"".join(captured))


def test_corpus_of_mutated_streams_never_raises_and_stays_bounded() -> None:
    rng = random.Random(2024)
    seeds = _conversation()
    assert len(seeds) > 10
    enc = FrameEncoder()
    protocols = [p for p, _ in seeds] + [PPP_CCP, PPP_IPV6, 0x8057, 0xC025, 0x0031, 0x00FF]

    def mutate(info: bytes) -> bytes:
        b = bytearray(info)
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(4)
            if op == 0 and b:
                b[rng.randrange(len(b))] = rng.randrange(256)
            elif op == 1 and b:
                del b[rng.randrange(len(b)):]
            elif op == 2:
                b += rng.randbytes(rng.randrange(1, 40))
            elif len(b) >= 4:
                struct.pack_into("!H", b, 2, rng.randrange(65536))  # the Length field
        return bytes(b)

    def stream() -> bytes:
        parts = []
        for _ in range(rng.randrange(1, 4)):
            kind = rng.randrange(5)
            if kind == 0:
                parts.append(rng.randbytes(rng.randrange(1, 80)))
            elif kind == 1:
                proto, info = rng.choice(seeds)
                parts.append(enc.encode(proto, mutate(info)))
            elif kind == 2:
                parts.append(enc.encode(rng.choice(protocols), rng.randbytes(rng.randrange(60))))
            elif kind == 3:
                proto, info = rng.choice(seeds)
                parts.append(enc.encode(proto, info))  # replayed verbatim
            else:
                frame = bytearray(enc.encode(*rng.choice(seeds)))
                frame[rng.randrange(len(frame))] ^= 0xFF  # damaged on the line
                parts.append(bytes(frame))
        return b"".join(parts)

    def fresh(link: PppLink) -> PppLink:
        shared = {id(link.config): link.config, id(link.config.secrets): link.config.secrets}
        return copy.deepcopy(link, shared)  # the frozen config is shared, the state copied

    snapshots = _phase_links()
    fed = 0
    seen: dict[str, int] = {}
    for phase, snapshot in snapshots.items():
        link = fresh(snapshot)
        now = 100_000
        for i in range(4000):
            link.receive(stream(), now)
            if i % 7 == 0:
                now += rng.randrange(0, 2000)
                link.poll(now)
            link.send_ip(udp_packet(CLIENT, SERVER, b"q"), now)
            assert link.output_pending < 32 * 1024
            link.take_output()
            link.take_events()
            fed += 1
            if link.phase is not phase:
                for key, value in link.stats.items():
                    seen[key] = seen.get(key, 0) + value
                link = fresh(snapshot)
        assert len(link.take_packets()) <= MAX_PACKETS
        for key, value in link.stats.items():
            seen[key] = seen.get(key, 0) + value
    assert fed == 20_000
    # The streams reached every layer, not only the framing.
    for key in ("rx_LCP", "rx_IPCP", "rx_CHAP", "protocol_rejects_sent", "ip_in",
                "rx_before_lcp", "rx_before_network", "hdlc_rx_bad_fcs"):
        assert seen.get(key, 0) > 0, key


# --- slirp's conversation (docs facts §9), replayed ---------------------------------------


def test_replay_of_slirps_conversation_ends_with_link_up() -> None:
    enc = FrameEncoder()
    c = PppLink(PppConfig(), rng=random.Random(9))
    c.line_up(0)
    [(proto, our_lcp)] = frames_of(c.take_output())
    assert proto == PPP_LCP and isinstance(our_lcp, Packet)
    assert our_lcp.code == CONFIGURE_REQUEST

    def feed(protocol: int, code: int, ident: int, options: list[Option] | bytes
             ) -> list[tuple[int, Packet | bytes]]:
        data = options if isinstance(options, bytes) else encode_options(options)
        c.receive(enc.encode(protocol, Packet(code, ident, data).encode()), 1)
        return frames_of(c.take_output())

    slirp_lcp = [Option(MRU, struct.pack("!H", 1500)),
                 Option(MAGIC_NUMBER, struct.pack("!I", 0x5EED1E55)),
                 Option(PROTOCOL_FIELD_COMPRESSION), Option(ADDRESS_AND_CONTROL_FIELD_COMPRESSION)]
    [(proto, ack)] = feed(PPP_LCP, CONFIGURE_REQUEST, 1, slirp_lcp)
    assert proto == PPP_LCP and ack == Packet(CONFIGURE_ACK, 1, encode_options(slirp_lcp))

    c.receive(enc.encode(PPP_LCP, Packet(CONFIGURE_ACK, our_lcp.ident, our_lcp.data).encode()), 1)
    raw = c.take_output()
    assert raw.startswith(b"\x7e\x80\x21")  # slirp granted ACFC: no FF 03 now
    [(proto, our_ipcp)] = frames_of(raw)
    assert proto == PPP_IPCP and isinstance(our_ipcp, Packet)
    asked = parse_options(our_ipcp.data)
    assert asked is not None
    assert {o.type: o.data for o in asked} == {
        IP_COMPRESSION_PROTOCOL: b"\x00\x2d\x0f\x01", IP_ADDRESS: bytes(4),
        PRIMARY_DNS: bytes(4), SECONDARY_DNS: bytes(4)}

    slirp_ipcp = [Option(IP_ADDRESS, A("10.0.2.2").packed),
                  Option(IP_COMPRESSION_PROTOCOL, b"\x00\x2d\x0f\x01")]
    [(proto, ack)] = feed(PPP_IPCP, CONFIGURE_REQUEST, 1, slirp_ipcp)
    assert proto == PPP_IPCP and ack == Packet(CONFIGURE_ACK, 1, encode_options(slirp_ipcp))

    ccp = Packet(CONFIGURE_REQUEST, 1, b"").encode()
    [(proto, reject)] = feed(PPP_CCP, CONFIGURE_REQUEST, 1, b"")
    assert proto == PPP_LCP and isinstance(reject, Packet) and reject.code == PROTOCOL_REJECT
    assert reject.data == struct.pack("!H", PPP_CCP) + ccp

    nak = [Option(IP_ADDRESS, A("10.0.2.15").packed), Option(PRIMARY_DNS, A("10.0.2.3").packed)]
    [(proto, again)] = feed(PPP_IPCP, CONFIGURE_NAK, our_ipcp.ident, nak)
    assert proto == PPP_IPCP and isinstance(again, Packet) and again.code == CONFIGURE_REQUEST
    opts = parse_options(again.data)
    assert opts is not None
    assert {o.type: o.data for o in opts} == {
        IP_COMPRESSION_PROTOCOL: b"\x00\x2d\x0f\x01", IP_ADDRESS: A("10.0.2.15").packed,
        PRIMARY_DNS: A("10.0.2.3").packed, SECONDARY_DNS: bytes(4)}

    assert feed(PPP_IPCP, CONFIGURE_ACK, again.ident, again.data) == []
    [up] = c.take_events()
    assert isinstance(up, LinkUp)
    assert up.result.address == A("10.0.2.15") and up.result.peer_address == A("10.0.2.2")
    assert up.result.dns == (A("10.0.2.3"),)
    # An IPv4 packet now goes to slirp VJ-ready, under the compressed protocol field.
    a, b = connection()
    a.send(b, b"first")
    assert c.send_ip(a.send(b, b"data"), 2)
    [(proto, _)] = FrameDecoder().feed(c.take_output())
    assert proto in (PPP_IP, 0x002F, PPP_VJC)


def test_config_repr_hides_the_secrets() -> None:
    cfg = PppConfig(credentials=Credentials.of("user", "s3cr3t-pw"),
                    secrets={b"user": b"s3cr3t-pw"})
    assert "s3cr3t-pw" not in repr(cfg) and "s3cr3t-pw" not in str(cfg)
