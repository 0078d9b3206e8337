"""The CDC-ECM gadget model, driven packet by packet the way the virtual bus drives it
(docs/hardware/cdc_ecm.md)."""

from __future__ import annotations

import random
import struct
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilkit.drivers.cdc_ecm import proto as p
from hilkit.drivers.cdc_ecm.model import (
    BULK_IN,
    BULK_OUT,
    NOTIFY_IN,
    STAT_KEYS,
    CdcEcmFaults,
    CdcEcmModel,
    CdcEcmOptions,
    content_length,
    parse_mac,
)
from hilkit.port import ManualClock
from hilkit.sim.usb.device import Setup, Stall
from tests.memwire import WireEnd, wire

MAC = "02:00:00:00:00:ec"
MAC_B = bytes.fromhex("0200000000ec")
PEER = bytes.fromhex("02000000000b")


def make(*, faults: CdcEcmFaults | None = None, up: bool = True,
         **opts: Any) -> tuple[CdcEcmModel, WireEnd, WireEnd]:
    """A model on one end of an in-memory wire; the other end plays the network."""
    tap, net = wire()
    tap.up = net.up = up
    options = CdcEcmOptions(mac=MAC, **opts)
    m = CdcEcmModel(wire=tap, clock=ManualClock(), seed=1, faults=faults, options=options)
    return m, tap, net


def bring_up(m: CdcEcmModel) -> None:
    assert m.ecm_config is not None
    m.set_configuration(m.ecm_config)
    m.set_interface(1, 0)
    m.set_interface(1, 1)


def ctl(m: CdcEcmModel, req: int, value: int, data: bytes = b"", *, index: int = 0,
        rtype: int = p.REQ_TYPE_CLASS_IFACE_OUT) -> bytes:
    return m.control(Setup(rtype, req, value, index, len(data)), data)


def set_filter(m: CdcEcmModel, bits: int) -> None:
    ctl(m, p.SET_ETHERNET_PACKET_FILTER, bits)


def ip_frame(n: int, dst: bytes = MAC_B, *, rng: random.Random | None = None) -> bytes:
    """An ``n``-byte IPv4 frame whose total length says ``n - 14`` (n >= 34)."""
    rng = rng or random.Random(n)
    hdr = dst + PEER + b"\x08\x00" + bytes([0x45, 0]) + struct.pack(">H", n - 14)
    return hdr + bytes(rng.randrange(256) for _ in range(n - len(hdr)))


def raw_frame(n: int, dst: bytes = MAC_B) -> bytes:
    """An ``n``-byte frame with an EtherType that says nothing about its length."""
    return (dst + PEER + b"\x88\xb5" + bytes(range(256)) * 6)[:n]


def packets(frame: bytes, mp: int, term: str) -> list[bytes]:
    """How a host sends ``frame``: max-packet slices, then ``term`` ("zlp", "pad", "none")
    after an exact multiple."""
    out = [frame[i:i + mp] for i in range(0, len(frame), mp)]
    if len(frame) % mp == 0:
        if term == "zlp":
            out.append(b"")
        elif term == "pad":
            out.append(b"\x00")
    return out


def write(m: CdcEcmModel, frame: bytes, term: str = "zlp") -> None:
    for pkt in packets(frame, m.bulk_max_packet, term):
        m.out_packet(BULK_OUT, pkt)


def read_frame(m: CdcEcmModel) -> tuple[bytes, list[int]] | None:
    """One bulk IN transfer: the frame and the packet sizes it came in."""
    sizes: list[int] = []
    buf = b""
    while True:
        pkt = m.in_packet(BULK_IN, m.bulk_max_packet)
        if pkt is None:
            assert not sizes, "NAK in the middle of a frame"
            return None
        sizes.append(len(pkt))
        buf += pkt
        if len(pkt) < m.bulk_max_packet:
            return buf, sizes


def read_all(m: CdcEcmModel) -> list[bytes]:
    out = []
    while (got := read_frame(m)) is not None:
        out.append(got[0])
    return out


def notifications(m: CdcEcmModel) -> list[tuple[int, int, bytes]]:
    """Every notification waiting, reassembled from its packets: (code, wValue, data)."""
    out = []
    while (pkt := m.in_packet(NOTIFY_IN, m.notify_max_packet)) is not None:
        assert len(pkt) <= m.notify_max_packet
        code, value, index, data = p.parse_notification(pkt)
        assert index == 0
        need = struct.unpack_from("<H", pkt, 6)[0]
        while len(data) < need:
            more = m.in_packet(NOTIFY_IN, m.notify_max_packet)
            assert more is not None
            data += more
        out.append((code, value, data))
    return out


# -- descriptors -------------------------------------------------------------------------------


def split_descriptors(blob: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(blob):
        assert blob[i] >= 2
        out.append(blob[i:i + blob[i]])
        i += blob[i]
    assert i == len(blob)
    return out


def interfaces(config: bytes) -> list[tuple[bytes, bytes, list[bytes]]]:
    """(interface descriptor, class-specific bytes after it, endpoint descriptors)."""
    descs = split_descriptors(config)
    assert descs[0][1] == 2 and struct.unpack_from("<H", descs[0], 2)[0] == len(config)
    out: list[tuple[bytes, bytes, list[bytes]]] = []
    for desc in descs[1:]:
        if desc[1] == 4:
            out.append((desc, b"", []))
        elif desc[1] == 5:
            out[-1][2].append(desc)
        else:
            iface, extra, eps = out[-1]
            out[-1] = (iface, extra + desc, eps)
    return out


@pytest.mark.parametrize(("speed", "mp"), [("full", 64), ("high", 512)])
def test_ecm_descriptors(speed: str, mp: int) -> None:
    m, _, _ = make(speed=speed)
    dev = m.device_descriptor
    assert len(dev) == 18 and dev[4] == p.CDC_CLASS_COMM and dev[17] == 1
    assert struct.unpack_from("<HH", dev, 8) == (0x0525, 0xA4A2)
    assert m.strings[dev[16]] == "hilkit-ecm-0001"
    (config,) = m.configurations
    assert config[5] == 1  # bConfigurationValue
    ifs = interfaces(config)
    assert [(i[2], i[3]) for i, _, _ in ifs] == [(0, 0), (1, 0), (1, 1)]
    ctrl, extra, ctrl_eps = ifs[0]
    assert tuple(ctrl[5:8]) == (p.CDC_CLASS_COMM, p.CDC_SUBCLASS_ECM, p.CDC_PROTO_NONE)
    fds = p.parse_functional(extra)
    assert [(sub, len(b)) for sub, b in fds] == [(p.FD_HEADER, 5), (p.FD_UNION, 5),
                                                 (p.FD_ETHERNET, 13)]
    assert struct.unpack_from("<H", fds[0][1], 3)[0] == 0x0120
    assert tuple(fds[1][1][3:5]) == (0, 1)  # master: control, slave: data
    i_mac, stats, mss, mcf, pwr = struct.unpack_from("<BIHHB", fds[2][1], 3)
    assert (stats, mss, mcf & 0x8000, pwr) == (0, 1514, 0, 0) and mcf >= 1
    mac_text = m.strings[i_mac]
    assert mac_text == "0200000000EC" and len(mac_text) == 12
    assert bytes.fromhex(mac_text) == m.mac
    (notify,) = ctrl_eps
    assert (notify[2], notify[3] & 3, struct.unpack_from("<H", notify, 4)[0]) == (0x83, 3, 16)
    assert notify[6] == (32 if speed == "full" else 9)
    data0, extra0, eps0 = ifs[1]
    assert data0[5] == p.CDC_CLASS_DATA and data0[4] == 0 and eps0 == [] and extra0 == b""
    data1, _, eps1 = ifs[2]
    assert data1[5] == p.CDC_CLASS_DATA and data1[4] == 2
    assert sorted((e[2], e[3] & 3, struct.unpack_from("<H", e, 4)[0]) for e in eps1) == [
        (BULK_OUT, 2, mp), (BULK_IN, 2, mp)]
    assert m.bulk_max_packet == mp and int(m.speed) == (2 if speed == "full" else 3)


def test_notification_endpoint_absent_or_split() -> None:
    m, _, _ = make(notifications=False)
    ctrl, _, eps = interfaces(m.configurations[0])[0]
    assert ctrl[4] == 0 and eps == []
    m, _, _ = make(speed_change_split=True)
    (notify,) = interfaces(m.configurations[0])[0][2]
    assert struct.unpack_from("<H", notify, 4)[0] == 8


def test_rndis_first_and_only_ncm_only() -> None:
    m, _, _ = make(rndis_first=True)
    assert len(m.configurations) == 2 and m.device_descriptor[17] == 2 and m.ecm_config == 2
    rndis, ecm = (interfaces(c) for c in m.configurations)
    assert tuple(rndis[0][0][5:8]) == (0x02, 0x02, 0xFF)
    assert tuple(ecm[0][0][5:8]) == (0x02, 0x06, 0x00)
    m.set_configuration(1)  # RNDIS: descriptors only
    with pytest.raises(Stall):
        set_filter(m, 0x0C)
    with pytest.raises(Stall):
        m.out_packet(BULK_OUT, b"x")
    assert m.in_packet(NOTIFY_IN, 8) is None
    m.set_configuration(2)
    m.set_interface(1, 1)
    set_filter(m, 0x0C)

    m, _, _ = make(rndis_only=True)
    assert m.ecm_config is None
    assert [tuple(c[0][0][5:8]) for c in map(interfaces, m.configurations)] == [(2, 2, 0xFF)]
    m, _, _ = make(ncm_only=True)
    assert m.ecm_config is None
    ifs = interfaces(m.configurations[0])
    assert tuple(ifs[0][0][5:8]) == (0x02, 0x0D, 0x00)
    assert p.FD_NCM in [sub for sub, _ in p.parse_functional(ifs[0][1])]
    assert ifs[2][0][7] == 0x01  # NTB data protocol


def test_kernel_driver_bound_and_mac_from_seed() -> None:
    m, _, _ = make(kernel_driver_bound=True)
    assert m.kernel_driver_bound == {0, 1}
    assert make()[0].kernel_driver_bound == set()
    a = CdcEcmModel(wire=None, clock=ManualClock(), seed=7)
    b = CdcEcmModel(wire=None, clock=ManualClock(), seed=7)
    c = CdcEcmModel(wire=None, clock=ManualClock(), seed=8)
    assert a.mac == b.mac != c.mac
    assert a.mac[0] & 3 == 2  # locally administered unicast


@pytest.mark.parametrize("kw", [
    {"speed": "super"}, {"vendor": 0x10000}, {"mac": "01:00:5e:00:00:01"}, {"mac": "zz"},
    {"serial": ""}, {"ncm_only": True, "rndis_only": True},
    {"rndis_first": True, "ncm_only": True}, {"notifications": False, "speed_change_split": True},
])
def test_options_validated(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CdcEcmOptions(**kw)  # type: ignore[arg-type]


def test_faults_validated() -> None:
    for kw in ({"rx_queue_frames": 0}, {"drop_notifications": -1}):
        with pytest.raises(ValueError):
            CdcEcmFaults(**kw)  # type: ignore[arg-type]
    assert parse_mac("02-00-00-00-00-EC") == parse_mac("0200000000ec") == MAC_B


# -- bulk OUT framing --------------------------------------------------------------------------


@pytest.mark.parametrize(("speed", "mp"), [("full", 64), ("high", 512)])
def test_out_exact_multiple_with_zlp_or_pad(speed: str, mp: int) -> None:
    m, tap, _ = make(speed=speed)
    bring_up(m)
    f1, f2 = ip_frame(mp), ip_frame(2 * mp)
    write(m, f1, "zlp")
    write(m, f2, "pad")
    write(m, ip_frame(100), "none")
    assert tap.sent == [f1, f2, ip_frame(100)]
    s = m.stats
    assert (s["zlps_received"], s["pad_bytes_stripped"], s["to_wire_frames"]) == (1, 1, 3)
    assert s["to_wire_bytes"] == 3 * mp + 100


def test_out_without_terminator_merges() -> None:
    m, tap, _ = make()
    bring_up(m)
    first, second = ip_frame(512), ip_frame(100, rng=random.Random(5))
    write(m, first, "none")
    assert tap.sent == []  # a full packet does not end the transfer
    write(m, second)
    assert tap.sent == [first + second]  # what silicon puts on the wire
    assert m.stats["merged_transfers"] == 1
    write(m, first, "none")
    write(m, ip_frame(1100))
    assert len(tap.sent) == 1 and m.stats["oversize_frames"] == 1


def test_out_lenient_mode_ends_frames_by_header() -> None:
    m, tap, _ = make(faults=CdcEcmFaults(no_pad_merge=False))
    bring_up(m)
    frames = [ip_frame(512), ip_frame(1024), ip_frame(60)]
    write(m, frames[0], "none")
    write(m, frames[1], "pad")
    write(m, frames[2], "zlp")
    assert tap.sent == frames and m.stats["merged_transfers"] == 0


def test_out_pad_ambiguity() -> None:
    m, tap, _ = make()
    bring_up(m)
    genuine = ip_frame(513)  # its IPv4 total length claims the last byte
    write(m, genuine)
    write(m, raw_frame(512), "pad")  # unknown EtherType: the lone byte is taken as a pad
    write(m, raw_frame(1514) + b"\x00", "none")  # one beyond wMaxSegmentSize: a pad
    assert tap.sent == [genuine, raw_frame(512), raw_frame(1514)]
    assert m.stats["pad_bytes_stripped"] == 2


def test_out_runts_oversize_babble_stray_zlp() -> None:
    m, tap, _ = make(speed="full")
    bring_up(m)
    m.out_packet(BULK_OUT, b"short")
    m.out_packet(BULK_OUT, b"")
    for _ in range(30):
        m.out_packet(BULK_OUT, bytes(64))
    m.out_packet(BULK_OUT, b"end")
    with pytest.raises(Stall):
        m.out_packet(BULK_OUT, bytes(65))
    s = m.stats
    assert tap.sent == [] and (s["runt_frames"], s["stray_zlps"], s["oversize_frames"]) == (1, 1, 1)


def test_out_without_wire_collects_and_closed_wire_counts() -> None:
    m = CdcEcmModel(wire=None, clock=ManualClock(), options=CdcEcmOptions(mac=MAC))
    bring_up(m)
    write(m, ip_frame(70))
    assert m.sent == [ip_frame(70)]
    m2, tap, _ = make()
    bring_up(m2)
    tap.close()
    write(m2, ip_frame(70))
    assert m2.stats["wire_send_failed"] == 1


@settings(max_examples=60, deadline=None)
@given(speed=st.sampled_from(["full", "high"]), lenient=st.booleans(),
       plan=st.lists(st.tuples(st.one_of(st.integers(34, 1514),
                                         st.sampled_from([64, 128, 512, 1024, 1472])),
                               st.sampled_from(["zlp", "pad"]), st.integers(0, 2**16)),
                     min_size=1, max_size=12))
def test_out_framing_corpus(speed: str, lenient: bool,
                            plan: list[tuple[int, str, int]]) -> None:
    """Any sequence of frames, exact multiples ended by a ZLP or a pad, comes out whole."""
    m, tap, _ = make(speed=speed, faults=CdcEcmFaults(no_pad_merge=not lenient))
    bring_up(m)
    frames = [ip_frame(n, rng=random.Random(seed)) for n, _, seed in plan]
    for frame, (_, term, _) in zip(frames, plan, strict=True):
        write(m, frame, term)
    assert tap.sent == frames
    assert m.stats["merged_transfers"] == m.stats["oversize_frames"] == 0


# -- bulk IN -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("speed", "mp"), [("full", 64), ("high", 512)])
def test_in_frames_and_zlp(speed: str, mp: int) -> None:
    m, _, net = make(speed=speed)
    bring_up(m)
    frames = [ip_frame(mp), ip_frame(100), ip_frame(1514), ip_frame(2 * mp)]
    for f in frames:
        net.send(f)
    got = [read_frame(m) for _ in frames]
    assert [g[0] for g in got if g] == frames
    first = got[0]
    assert first is not None and first[1] == [mp, 0]  # an exact multiple ends with a ZLP
    assert read_frame(m) is None  # NAK: nothing more
    s = m.stats
    assert (s["to_host_frames"], s["zlps_sent"]) == (4, 2)
    assert s["to_host_bytes"] == sum(map(len, frames))


def test_in_drops_runts_and_oversize_from_wire() -> None:
    m, _, net = make()
    bring_up(m)
    net.send(b"tiny")
    net.send(ip_frame(1514) + b"xx")
    assert read_all(m) == []
    assert (m.stats["wire_runt_drops"], m.stats["wire_oversize_drops"]) == (1, 1)


def test_rx_queue_overflow_counted() -> None:
    m, _, net = make(faults=CdcEcmFaults(rx_queue_frames=4))
    bring_up(m)
    frames = [ip_frame(60 + i) for i in range(6)]
    for f in frames:
        net.send(f)
    assert read_all(m) == frames[:4]
    assert m.stats["queue_full_drops"] == 2


def test_inject_without_wire() -> None:
    m = CdcEcmModel(wire=None, clock=ManualClock(), options=CdcEcmOptions(mac=MAC))
    assert not m.inject(ip_frame(60))  # data path off
    bring_up(m)
    assert m.inject(ip_frame(60))
    assert read_all(m) == [ip_frame(60)]
    assert m.stats["data_off_drops"] == 1


# -- packet filter and class requests ---------------------------------------------------------

OTHER = bytes.fromhex("02000000abcd")
BCAST = b"\xff" * 6
MCAST_IN = bytes.fromhex("01005e000001")
MCAST_OUT = bytes.fromhex("333300000001")


@pytest.mark.parametrize(("bits", "passes"), [
    (0, set()),
    (p.PACKET_TYPE_DIRECTED, {"us"}),
    (p.PACKET_TYPE_BROADCAST, {"bcast"}),
    (p.PACKET_TYPE_MULTICAST, {"mcast_in"}),
    (p.PACKET_TYPE_ALL_MULTICAST, {"mcast_in", "mcast_out"}),
    (p.PACKET_TYPE_PROMISCUOUS, {"us", "other", "bcast", "mcast_in", "mcast_out"}),
    (p.PACKET_TYPE_DIRECTED | p.PACKET_TYPE_BROADCAST, {"us", "bcast"}),
])
def test_packet_filter_bits(bits: int, passes: set[str]) -> None:
    m, _, net = make()
    bring_up(m)
    set_filter(m, bits)
    ctl(m, p.SET_ETHERNET_MULTICAST_FILTERS, 1, MCAST_IN)
    dsts = {"us": MAC_B, "other": OTHER, "bcast": BCAST, "mcast_in": MCAST_IN,
            "mcast_out": MCAST_OUT}
    for dst in dsts.values():
        net.send(ip_frame(60, dst))
    got = {f[:6] for f in read_all(m)}
    assert got == {dsts[k] for k in passes}
    assert m.stats["filtered_frames"] == 5 - len(passes)
    assert m.stats["packet_filter"] == bits == m.packet_filter


def test_filter_reset_value_and_alt0_resets() -> None:
    m, _, _ = make()
    bring_up(m)
    assert m.packet_filter == p.PACKET_TYPE_DIRECTED | p.PACKET_TYPE_BROADCAST
    set_filter(m, p.PACKET_TYPE_PROMISCUOUS)
    ctl(m, p.SET_ETHERNET_MULTICAST_FILTERS, 1, MCAST_IN)
    m.set_interface(1, 0)
    assert m.packet_filter == 0x0C and m.multicast_filters == frozenset()


def test_multicast_list_and_stalls() -> None:
    m, _, _ = make()
    bring_up(m)
    addrs = [bytes([1, 0, 0x5E, 0, 0, i]) for i in range(16)]
    ctl(m, p.SET_ETHERNET_MULTICAST_FILTERS, 16, b"".join(addrs))
    assert m.multicast_filters == frozenset(addrs)
    with pytest.raises(Stall):  # more than wNumberMCFilters
        ctl(m, p.SET_ETHERNET_MULTICAST_FILTERS, 17, b"".join(addrs) + addrs[0])
    with pytest.raises(Stall):  # data length does not match wValue
        ctl(m, p.SET_ETHERNET_MULTICAST_FILTERS, 2, addrs[0])
    ctl(m, p.SET_ETHERNET_MULTICAST_FILTERS, 0)
    assert m.multicast_filters == frozenset()
    with pytest.raises(Stall):  # bmEthernetStatistics is 0
        ctl(m, p.GET_ETHERNET_STATISTIC, 1, rtype=p.REQ_TYPE_CLASS_IFACE_IN)
    with pytest.raises(Stall):
        ctl(m, 0x41, 0)
    with pytest.raises(Stall):  # not the control interface
        set_filter_at(m, index=1)
    unconfigured, _, _ = make()
    with pytest.raises(Stall):
        set_filter(unconfigured, 0x0C)


def set_filter_at(m: CdcEcmModel, *, index: int) -> None:
    ctl(m, p.SET_ETHERNET_PACKET_FILTER, 0x0C, index=index)


# -- data interface alternate settings -------------------------------------------------------


def test_alt0_stops_and_flushes() -> None:
    m, _, net = make()
    bring_up(m)
    for n in (600, 61, 62):
        net.send(ip_frame(n))
    assert m.in_packet(BULK_IN, 512) is not None  # one frame now in flight
    m.set_interface(1, 0)
    assert m.stats["flushed_frames"] == 3
    with pytest.raises(Stall):
        m.in_packet(BULK_IN, 512)
    with pytest.raises(Stall):
        m.out_packet(BULK_OUT, b"x")
    net.send(ip_frame(60))
    m.set_interface(1, 1)
    assert read_all(m) == []  # what came while stopped is gone
    assert m.stats["data_off_drops"] == 1
    m.bus_reset()
    assert m.configuration == 0 and not m.data_on


def test_unconfigured_endpoints_stall() -> None:
    m, _, _ = make()
    with pytest.raises(Stall):
        m.in_packet(BULK_IN, 512)
    with pytest.raises(Stall):
        m.in_packet(NOTIFY_IN, 16)
    with pytest.raises(Stall):
        m.out_packet(BULK_OUT, b"")


# -- notifications ---------------------------------------------------------------------------


def test_notifications_on_bring_up_and_carrier() -> None:
    m, tap, _ = make(speed="full")
    bring_up(m)
    rate = struct.pack("<II", 12_000_000, 12_000_000)
    assert notifications(m) == [(p.CONNECTION_SPEED_CHANGE, 0, rate),
                                (p.NETWORK_CONNECTION, 1, b"")]
    tap.up = False
    assert notifications(m) == [(p.NETWORK_CONNECTION, 0, b"")]
    tap.up = True
    assert notifications(m) == [(p.NETWORK_CONNECTION, 1, b"")]
    s = m.stats
    assert (s["notifications_sent"], s["carrier_changes"]) == (4, 2)


def test_notification_carrier_down_at_bring_up_and_high_speed_rate() -> None:
    m, _, _ = make(up=False)
    bring_up(m)
    rate = struct.pack("<II", 480_000_000, 480_000_000)
    assert notifications(m) == [(p.CONNECTION_SPEED_CHANGE, 0, rate),
                                (p.NETWORK_CONNECTION, 0, b"")]


def test_speed_change_split_in_two_packets() -> None:
    m, _, _ = make(speed_change_split=True)
    bring_up(m)
    pkts = []
    while (pkt := m.in_packet(NOTIFY_IN, 8)) is not None:
        pkts.append(pkt)
    assert [len(x) for x in pkts] == [8, 8, 8]
    assert pkts[0] == p.notification(p.CONNECTION_SPEED_CHANGE, 0, 0, b"")[:6] + b"\x08\x00"
    assert struct.unpack("<II", pkts[1]) == (480_000_000, 480_000_000)
    assert pkts[2] == p.notification(p.NETWORK_CONNECTION, 1, 0)


def test_notification_faults() -> None:
    m, tap, _ = make(faults=CdcEcmFaults(drop_notifications=1, duplicate_notifications=2))
    bring_up(m)
    tap.up = False
    got = notifications(m)
    assert got == [(p.NETWORK_CONNECTION, 1, b"")] * 2 + [(p.NETWORK_CONNECTION, 0, b"")] * 2
    s = m.stats
    assert (s["notifications_dropped"], s["notifications_duplicated"]) == (1, 2)


def test_no_notifications_without_endpoint() -> None:
    m, tap, _ = make(notifications=False)
    bring_up(m)
    tap.up = False
    with pytest.raises(Stall):
        m.in_packet(NOTIFY_IN, 16)
    assert m.stats["carrier_changes"] == 1 and m.stats["notifications_sent"] == 0


# -- waiting ----------------------------------------------------------------------------------


def test_wait_returns_on_wake_frame_and_carrier() -> None:
    m, tap, net = make()
    bring_up(m)
    notifications(m)
    t0 = time.monotonic()
    m.wait(0.05)
    assert time.monotonic() - t0 >= 0.04  # nothing happens: it times out

    def later(fn: object) -> threading.Timer:
        t = threading.Timer(0.05, fn)  # type: ignore[arg-type]
        t.start()
        return t

    for trigger in (m.wake, lambda: net.send(ip_frame(60)),
                    lambda: setattr(tap, "up", False)):
        t0 = time.monotonic()
        later(trigger)
        m.wait(5.0)
        assert time.monotonic() - t0 < 1.0
    assert read_all(m) == [ip_frame(60)]
    assert notifications(m) == [(p.NETWORK_CONNECTION, 0, b"")]


def test_wait_on_wire_descriptor() -> None:
    """A wire with a descriptor (a TAP) wakes ``wait`` through it."""
    import os

    r, w = os.pipe()

    class FdWire(WireEnd):
        def fileno(self) -> int | None:
            return r

        def poll(self, budget: int) -> list[bytes]:
            frames = super().poll(budget)
            if frames:
                os.read(r, 64)
            return frames

    tap = FdWire("tap", None, wire()[0].link_type, 1500)
    m = CdcEcmModel(wire=tap, clock=ManualClock(), options=CdcEcmOptions(mac=MAC))
    bring_up(m)
    notifications(m)

    def arrive() -> None:
        tap.rx.append(ip_frame(60))
        os.write(w, b"x")

    threading.Timer(0.05, arrive).start()
    t0 = time.monotonic()
    m.wait(5.0)
    assert time.monotonic() - t0 < 1.0
    assert read_all(m) == [ip_frame(60)]
    m.close()
    m.wait(5.0)  # closed: returns at once
    os.close(r)
    os.close(w)


def test_stats_keys_and_close_leaves_wire() -> None:
    m, tap, _ = make()
    assert set(m.stats) == set(STAT_KEYS)
    m.close()
    assert not tap.closed


def test_content_length() -> None:
    assert content_length(ip_frame(300)) == 300
    assert content_length(raw_frame(300)) is None
    arp = BCAST + PEER + b"\x08\x06" + bytes([0, 1, 8, 0, 6, 4]) + bytes(22)
    assert content_length(arp) == 42
    assert content_length(b"short") is None


# -- on the virtual bus, through pyusb -----------------------------------------------------------


def on_bus(**opts: Any) -> tuple[Any, Any, CdcEcmModel, WireEnd, WireEnd]:
    usb_core = pytest.importorskip("usb.core")
    bus_mod = pytest.importorskip("hilkit.sim.usb")
    m, tap, net = make(**opts)
    bus = bus_mod.VirtualUsbBus(9, realtime=False)
    bus.plug(m)
    dev = usb_core.find(backend=bus.backend, idVendor=0x0525, idProduct=0xA4A2)
    assert dev is not None
    return bus, dev, m, tap, net


def test_pyusb_bring_up_and_frames_both_ways() -> None:
    import usb.util  # type: ignore[import-untyped]

    bus, dev, _, tap, net = on_bus()
    try:
        d = dev
        cfg = d.get_active_configuration()
        ctrl = cfg[(0, 0)]
        fds = p.parse_functional(bytes(ctrl.extra_descriptors))
        assert [sub for sub, _ in fds] == [p.FD_HEADER, p.FD_UNION, p.FD_ETHERNET]
        i_mac = fds[2][1][3]
        assert usb.util.get_string(d, i_mac) == "0200000000EC"
        d.set_interface_altsetting(interface=1, alternate_setting=1)
        d.ctrl_transfer(0x21, p.SET_ETHERNET_PACKET_FILTER, 0x0C, 0, None)
        note = bytes(d.read(NOTIFY_IN, 16, 1000))
        assert p.parse_notification(note)[0] == p.CONNECTION_SPEED_CHANGE
        note = bytes(d.read(NOTIFY_IN, 16, 1000))
        assert p.parse_notification(note)[:2] == (p.NETWORK_CONNECTION, 1)
        out = ip_frame(512)
        d.write(BULK_OUT, out, 1000)
        d.write(BULK_OUT, b"", 1000)
        assert tap.sent == [out]
        for f in (ip_frame(1024), ip_frame(77)):
            net.send(f)
        assert bytes(d.read(BULK_IN, 1536, 1000)) == ip_frame(1024)
        assert bytes(d.read(BULK_IN, 1536, 1000)) == ip_frame(77)
    finally:
        usb.util.dispose_resources(dev)
        bus.close()


def test_pyusb_read_waits_for_the_wire_and_kernel_driver() -> None:
    import usb.util

    bus, dev, m, _, net = on_bus(kernel_driver_bound=True)
    try:
        d = dev
        assert d.is_kernel_driver_active(0)
        d.detach_kernel_driver(0)
        d.detach_kernel_driver(1)
        d.set_interface_altsetting(interface=1, alternate_setting=1)
        threading.Timer(0.05, lambda: net.send(ip_frame(300))).start()
        t0 = time.monotonic()
        assert bytes(d.read(BULK_IN, 1536, 2000)) == ip_frame(300)
        assert time.monotonic() - t0 < 1.0
        d.set_interface_altsetting(interface=1, alternate_setting=0)
        assert not m.data_on
    finally:
        usb.util.dispose_resources(dev)
        bus.close()
