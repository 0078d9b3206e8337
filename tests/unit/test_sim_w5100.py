"""The W5100 model against docs/hardware/w5100.md, over raw 4-byte SPI frames.

Addresses and values are written out here from the document, not taken from the
model's constants, so a wrong constant in the model fails a test.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import deque

import pytest

from hilkit.drivers.w5100.model import W5100Faults, W5100Model, W5100Timing, memory_split
from hilkit.port import (
    BusCounters,
    DeviceClosed,
    DeviceCounters,
    Edge,
    LinkType,
    ManualClock,
    Pin,
    SpiBus,
)
from hilkit.sim import SimPin

# -- addresses from w5100 §2, §3, §4 --- ---------------------------------------------

MR, GAR, SUBR, SHAR, SIPR = 0x0000, 0x0001, 0x0005, 0x0009, 0x000F
IR, IMR, RTR, RCR, RMSR, TMSR = 0x0015, 0x0016, 0x0017, 0x0019, 0x001A, 0x001B
PATR, PTIMER, PMAGIC, UIPR, UPORT = 0x001C, 0x0028, 0x0029, 0x002A, 0x002E
S0 = 0x0400
MR_, CR, IR_, SR, PORT, DHAR, DIPR, DPORT, MSSR, PROTO, TOS, TTL = (
    0x00, 0x01, 0x02, 0x03, 0x04, 0x06, 0x0C, 0x10, 0x12, 0x14, 0x15, 0x16,
)  # fmt: skip
TX_FSR, TX_RD, TX_WR, RX_RSR, RX_RD, RX_WR = 0x20, 0x22, 0x24, 0x26, 0x28, 0x2A
TX_MEM, RX_MEM = 0x4000, 0x6000

OPEN, CLOSE, SEND, RECV = 0x01, 0x10, 0x20, 0x40
SEND_OK, RECV_INT = 0x10, 0x04
MACRAW, MF = 0x04, 0x40

MAC = bytes.fromhex("020000000001")
OTHER = bytes.fromhex("020000000099")
WRITE_ECHO = b"\x00\x01\x02\x03"


# -- raw SPI helpers (no driver) -----------------------------------------------------------


def wframe(addr: int, value: int) -> bytes:
    return bytes((0xF0, addr >> 8 & 0xFF, addr & 0xFF, value))


def rframe(addr: int) -> bytes:
    return bytes((0x0F, addr >> 8 & 0xFF, addr & 0xFF, 0x00))


def wr(m: SpiBus, addr: int, value: int) -> None:
    assert m.transfer(wframe(addr, value)) == WRITE_ECHO


def rd(m: SpiBus, addr: int) -> int:
    out = m.transfer(rframe(addr))
    assert out[:3] == b"\x00\x01\x02"
    return out[3]


def readable(fd: int) -> bool:
    """Would ``select`` return at once (timeout 0)?"""
    return bool(select.select([fd], [], [], 0)[0])


def wr16(m: SpiBus, addr: int, value: int) -> None:
    wr(m, addr, value >> 8)
    wr(m, addr + 1, value & 0xFF)


def rd16(m: SpiBus, addr: int) -> int:
    return rd(m, addr) << 8 | rd(m, addr + 1)


def wr_block(m: SpiBus, addr: int, data: bytes) -> None:
    replies = m.transfer_batch([wframe(addr + i, b) for i, b in enumerate(data)])
    assert all(r == WRITE_ECHO for r in replies)


def rd_block(m: SpiBus, addr: int, n: int) -> bytes:
    return bytes(r[3] for r in m.transfer_batch([rframe(addr + i) for i in range(n)]))


def command(m: SpiBus, c: int, sock: int = 0) -> None:
    base = S0 + sock * 0x100
    wr(m, base + CR, c)
    assert rd(m, base + CR) == 0  # taken at once


def open_macraw(m: SpiBus, mr: int = MACRAW | MF, mac: bytes = MAC, msr: int | None = None) -> None:
    wr_block(m, SHAR, mac)
    if msr is not None:
        wr(m, RMSR, msr)
        wr(m, TMSR, msr)
    wr(m, S0 + MR_, mr)
    command(m, OPEN)
    assert rd(m, S0 + SR) == 0x42


def send_frame(m: SpiBus, frame: bytes, size: int = 0x800) -> None:
    """Facts §9: copy at TX_WR with wrap, advance TX_WR, SEND, wait SEND_OK, clear it."""
    assert rd16(m, S0 + TX_FSR) >= len(frame)
    ptr = rd16(m, S0 + TX_WR)
    off = ptr & (size - 1)
    first = min(len(frame), size - off)
    wr_block(m, TX_MEM + off, frame[:first])
    if first < len(frame):
        wr_block(m, TX_MEM, frame[first:])
    wr16(m, S0 + TX_WR, (ptr + len(frame)) & 0xFFFF)
    command(m, SEND)
    assert rd(m, S0 + IR_) & SEND_OK
    wr(m, S0 + IR_, SEND_OK)


def read_ring(m: SpiBus, ptr: int, n: int, size: int = 0x800) -> bytes:
    off = ptr & (size - 1)
    first = min(n, size - off)
    data = rd_block(m, RX_MEM + off, first)
    if first < n:
        data += rd_block(m, RX_MEM, n - first)
    return data


def recv_frame(m: SpiBus, size: int = 0x800) -> bytes | None:
    """Facts §8: header (length incl. itself), frame, advance RX_RD, RECV."""
    if rd16(m, S0 + RX_RSR) == 0:
        return None
    ptr = rd16(m, S0 + RX_RD)
    length = int.from_bytes(read_ring(m, ptr, 2, size), "big")
    frame = read_ring(m, ptr + 2, length - 2, size)
    wr16(m, S0 + RX_RD, (ptr + length) & 0xFFFF)
    command(m, RECV)
    wr(m, S0 + IR_, RECV_INT)
    return frame


def eth(dst: bytes, n: int = 60, fill: int = 0, src: bytes = OTHER) -> bytes:
    body = bytes((fill + i) & 0xFF for i in range(n - 14))
    return dst + src + b"\x88\xb5" + body


class FakeWire:
    """A Device on the far side of the chip's PHY; optional pipe so it has a descriptor."""

    def __init__(self, with_fd: bool = False) -> None:
        self.name = "fakewire"
        self.link_type = LinkType.ETHERNET
        self.mac: bytes | None = OTHER
        self.mtu = 1500
        self.counters = DeviceCounters()
        self.rx: deque[bytes] = deque()
        self.sent: list[bytes] = []
        self.polls = 0
        self.closed = False
        self._pipe = os.pipe() if with_fd else None

    def push(self, frame: bytes) -> None:
        self.rx.append(frame)
        if self._pipe is not None:
            os.write(self._pipe[1], b"x")

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        if self.closed:
            raise DeviceClosed(self.name)
        self.sent.append(bytes(frame))
        return True

    def poll(self, budget: int) -> list[bytes]:
        if self.closed:
            raise DeviceClosed(self.name)
        self.polls += 1
        out: list[bytes] = []
        while self.rx and len(out) < budget:
            out.append(self.rx.popleft())
            if self._pipe is not None:
                os.read(self._pipe[0], 1)
        return out

    @property
    def link_up(self) -> bool:
        return True

    def fileno(self) -> int | None:
        return self._pipe[0] if self._pipe is not None else None

    def close(self) -> None:
        self.closed = True
        if self._pipe is not None:
            os.close(self._pipe[0])
            os.close(self._pipe[1])
            self._pipe = None


@pytest.fixture
def m() -> W5100Model:
    return W5100Model()


# -- contract ------------------------------------------------------------------------------


def test_model_speaks_the_port_contracts(m: W5100Model) -> None:
    assert isinstance(m, SpiBus)
    assert isinstance(m.counters, BusCounters)
    assert isinstance(m.int_pin, Pin) and isinstance(m.reset_pin, Pin)
    fd = m.int_pin.fileno()  # no wire: still /INT's edge events, quiet while none is queued
    assert fd is not None and not readable(fd)


def test_spi_echo_bytes(m: W5100Model) -> None:
    assert m.transfer(wframe(GAR, 0xAB)) == b"\x00\x01\x02\x03"
    assert m.transfer(rframe(GAR)) == b"\x00\x01\x02\xab"
    assert m.transfer(bytes((0x0F, 0x00, GAR, 0x5A))) == b"\x00\x01\x02\xab"  # dummy is ignored


# -- reset values (w5100 §3, §4) ---------------------------------------------------------------


def test_common_register_reset_values(m: W5100Model) -> None:
    want = {MR: 0, IR: 0, IMR: 0, RCR: 0x08, RMSR: 0x55, TMSR: 0x55, PTIMER: 0x28, PMAGIC: 0}
    for addr, value in want.items():
        assert rd(m, addr) == value, hex(addr)
    assert rd16(m, RTR) == 0x07D0
    for start, n in ((GAR, 4), (SUBR, 4), (SHAR, 6), (SIPR, 4), (PATR, 2), (UIPR, 4), (UPORT, 2)):
        assert rd_block(m, start, n) == bytes(n), hex(start)


def test_socket_register_reset_values(m: W5100Model) -> None:
    for sock in range(4):
        b = S0 + 0x100 * sock
        for off in (MR_, CR, IR_, SR, PROTO, TOS):
            assert rd(m, b + off) == 0, (sock, hex(off))
        assert rd(m, b + TTL) == 0x80
        assert rd_block(m, b + DHAR, 6) == b"\xff" * 6
        for off in (PORT, DPORT, MSSR, TX_RD, TX_WR, RX_RSR, RX_RD, RX_WR):
            assert rd16(m, b + off) == 0, (sock, hex(off))
        assert rd_block(m, b + DIPR, 4) == bytes(4)
        assert rd16(m, b + TX_FSR) == 0x0800  # 2 KB with RMSR/TMSR = 0x55


# -- read-only, reserved, address bit 15 ---------------------------------------------------------


def test_read_only_registers_ignore_writes(m: W5100Model) -> None:
    open_macraw(m)
    m.inject(eth(MAC))
    before = {a: rd(m, a) for a in range(S0 + TX_FSR, S0 + 0x2C)}
    sr = rd(m, S0 + SR)
    ro = [S0 + SR, *before, *range(PATR, PATR + 2), *range(UIPR, UIPR + 6)]
    ro = [a for a in ro if a not in (S0 + TX_WR, S0 + TX_WR + 1, S0 + RX_RD, S0 + RX_RD + 1)]
    for addr in ro:
        wr(m, addr, 0x5A)
    assert rd(m, S0 + SR) == sr
    assert {a: rd(m, a) for a in before} == before
    assert rd_block(m, PATR, 2) == bytes(2) and rd_block(m, UIPR, 6) == bytes(6)
    assert m.stats["ro_writes"] == len(ro)
    assert m.stats["reserved_access"] == 0


def test_ir_socket_bits_are_read_only(m: W5100Model) -> None:
    open_macraw(m)
    m.inject(eth(MAC))
    assert rd(m, IR) == 0x01
    wr(m, IR, 0x01)  # writing IR does not clear a socket bit: Sn_IR does
    assert rd(m, IR) == 0x01
    wr(m, S0 + IR_, RECV_INT)
    assert rd(m, IR) == 0x00


def test_reserved_addresses(m: W5100Model) -> None:
    reserved = [0x0013, 0x0014, 0x001E, 0x0027, 0x0030, 0x00FF, 0x03FF, S0 + 0x17, S0 + 0x2C]
    reserved += [S0 + 0xFF, 0x0800, 0x1234, 0x3FFF]
    for addr in reserved:
        wr(m, addr, 0xA5)
        assert rd(m, addr) == 0x00, hex(addr)
    assert m.stats["reserved_access"] == 2 * len(reserved)
    assert rd(m, MR) == 0 and rd(m, RMSR) == 0x55  # nothing mirrored onto real registers


def test_address_bit_15_is_ignored(m: W5100Model) -> None:
    wr_block(m, 0x8000 | SHAR, MAC)
    assert rd_block(m, SHAR, 6) == MAC
    assert rd_block(m, 0x8000 | SHAR, 6) == MAC
    wr(m, 0x8000 | TX_MEM, 0x77)
    assert rd(m, TX_MEM) == 0x77


# -- MR and soft reset (w5100 §3) ---------------------------------------------------------------


def test_mr_stores_bits_and_detection_sequence(m: W5100Model) -> None:
    for value in (0x10, 0x12, 0x00, 0x13):  # Arduino's W5100 detection, Linux's indirect MR
        wr(m, MR, value)
        assert rd(m, MR) == value
    wr(m, MR, 0x60 | 0x10)  # bits 6..5 reserved
    assert rd(m, MR) == 0x10


def test_soft_reset_self_clears_and_restores_registers(m: W5100Model) -> None:
    open_macraw(m, msr=0x03)
    wr(m, MR, 0x10)
    wr_block(m, SIPR, bytes((10, 0, 0, 2)))
    wr(m, IMR, 0x01)
    wr16(m, RTR, 1234)
    wr(m, S0 + TTL, 9)
    wr(m, TX_MEM + 5, 0xEE)
    m.inject(eth(MAC, fill=0x40))
    wr(m, MR, 0x80)
    assert rd(m, MR) == 0x00  # RST reads back 0 when done
    assert rd_block(m, SHAR, 6) == bytes(6) and rd_block(m, SIPR, 4) == bytes(4)
    assert rd(m, IMR) == 0 and rd16(m, RTR) == 0x07D0 and rd(m, RMSR) == 0x55
    assert rd(m, S0 + SR) == 0 and rd(m, S0 + MR_) == 0 and rd(m, S0 + TTL) == 0x80
    assert rd(m, S0 + IR_) == 0 and rd16(m, S0 + RX_RSR) == 0 and rd16(m, S0 + TX_FSR) == 0x800
    assert rd(m, TX_MEM + 5) == 0xEE  # buffer RAM is not cleared
    assert rd_block(m, RX_MEM + 2, 6) == MAC
    assert m.stats["resets"] == m.stats["soft_resets"] == 1


def test_soft_reset_takes_time_when_asked() -> None:
    clock = ManualClock()
    m = W5100Model(clock=clock, timing=W5100Timing(soft_reset_ms=1.0))
    wr(m, MR, 0x80)
    assert rd(m, MR) == 0x80  # still resetting: poll until it reads 0
    wr(m, GAR, 1)  # ignored while resetting
    clock.advance(1.0)
    assert rd(m, MR) == 0x00
    assert rd(m, GAR) == 0
    assert m.stats["access_in_reset"] == 2


# -- memory split (w5100 §3, §7) ---------------------------------------------------------------


def test_memory_split_values() -> None:
    assert memory_split(0x55) == ((0, 2048), (2048, 2048), (4096, 2048), (6144, 2048))
    assert memory_split(0x03) == ((0, 8192), (8192, 0), (8192, 0), (8192, 0))
    assert memory_split(0x00) == ((0, 1024), (1024, 1024), (2048, 1024), (3072, 1024))
    assert memory_split(0x1A) == ((0, 4096), (4096, 4096), (8192, 0), (8192, 0))


def test_tmsr_sets_tx_free_size_per_socket(m: W5100Model) -> None:
    for tmsr, sizes in ((0x03, (8192, 0, 0, 0)), (0x00, (1024,) * 4), (0x55, (2048,) * 4)):
        wr(m, TMSR, tmsr)
        assert [rd16(m, S0 + 0x100 * s + TX_FSR) for s in range(4)] == list(sizes)


def test_rmsr_8k_gives_socket0_the_whole_rx_memory(m: W5100Model) -> None:
    open_macraw(m, msr=0x03)
    frame = eth(MAC, 1000)
    stored = sum(m.inject(frame) for _ in range(9))
    assert stored == 8  # 8 x 1002 bytes fit in 8192, a 9th does not
    assert rd16(m, S0 + RX_RSR) == 8 * 1002
    assert m.stats["rx_dropped_full"] == 1


# -- socket commands (w5100 §5, §6) ------------------------------------------------------------


def test_open_macraw_close_and_cr_reads_zero(m: W5100Model) -> None:
    wr(m, S0 + MR_, MACRAW)
    wr(m, S0 + CR, OPEN)
    assert rd(m, S0 + CR) == 0
    assert rd(m, S0 + SR) == 0x42
    assert rd16(m, S0 + MSSR) == 1514  # 0 becomes the MACRAW maximum on OPEN
    wr(m, S0 + CR, CLOSE)
    assert rd(m, S0 + CR) == 0
    assert rd(m, S0 + SR) == 0x00


def test_macraw_only_on_socket_0_and_other_modes(m: W5100Model) -> None:
    s1 = S0 + 0x100
    wr(m, s1 + MR_, MACRAW)
    command(m, OPEN, 1)
    assert rd(m, s1 + SR) == 0x00
    wr(m, s1 + MR_, 0x02)  # UDP
    command(m, OPEN, 1)
    assert rd(m, s1 + SR) == 0x22
    command(m, CLOSE, 1)
    assert rd(m, s1 + SR) == 0x00


def test_bad_and_inapplicable_commands(m: W5100Model) -> None:
    wr(m, S0 + CR, 0x03)  # not a command
    assert rd(m, S0 + CR) == 0
    command(m, SEND)  # socket closed
    command(m, RECV)
    open_macraw(m)
    command(m, 0x02)  # LISTEN means nothing in MACRAW
    assert m.stats["bad_commands"] == 1
    assert m.stats["cmd_ignored"] == 3
    assert m.sent == []


def test_command_latency_is_visible_in_cr() -> None:
    clock = ManualClock()
    m = W5100Model(clock=clock, timing=W5100Timing(cmd_ms=0.5))
    wr(m, S0 + MR_, MACRAW)
    wr(m, S0 + CR, OPEN)
    assert rd(m, S0 + CR) == OPEN and rd(m, S0 + SR) == 0
    wr(m, S0 + CR, CLOSE)  # written while busy: lost
    clock.advance(0.5)
    assert rd(m, S0 + CR) == 0 and rd(m, S0 + SR) == 0x42
    assert m.stats["cmd_while_busy"] == 1


# -- transmit (w5100 §7, §9) -------------------------------------------------------------------


def test_send_puts_the_frame_on_the_wire(m: W5100Model) -> None:
    open_macraw(m)
    frame = eth(OTHER, 100, src=MAC)
    send_frame(m, frame)
    assert m.sent == [frame]
    assert rd16(m, S0 + TX_RD) == 100 == rd16(m, S0 + TX_WR)
    assert rd16(m, S0 + TX_FSR) == 0x800
    assert rd(m, S0 + IR_) == 0 and rd(m, IR) == 0  # SEND_OK cleared by writing 1
    assert m.stats["frames_out"] == 1 and m.stats["bytes_out"] == 100


def test_send_ok_sets_and_clears_with_write_one(m: W5100Model) -> None:
    open_macraw(m)
    wr_block(m, TX_MEM, eth(OTHER))
    wr16(m, S0 + TX_WR, 60)
    command(m, SEND)
    assert rd(m, S0 + IR_) == SEND_OK and rd(m, IR) == 0x01
    wr(m, S0 + IR_, 0x00)  # writing 0 clears nothing
    assert rd(m, S0 + IR_) == SEND_OK
    wr(m, S0 + IR_, SEND_OK)
    assert rd(m, S0 + IR_) == 0 and rd(m, IR) == 0


def test_tx_data_wraps_across_the_buffer_end(m: W5100Model) -> None:
    open_macraw(m)
    frames = [eth(OTHER, 1000, fill=1), eth(OTHER, 1000, fill=2), eth(OTHER, 300, fill=3)]
    for f in frames:
        send_frame(m, f)
    assert m.sent == frames  # the third starts at offset 2000 and wraps at 2048
    assert rd(m, TX_MEM + 0x7FF) == frames[2][47]
    assert rd(m, TX_MEM) == frames[2][48]
    assert rd16(m, S0 + TX_RD) == 2300


def test_tx_pointers_wrap_at_16_bits(m: W5100Model) -> None:
    open_macraw(m, msr=0x03)
    frames = [eth(OTHER, 1514, fill=i) for i in range(44)]  # 44 x 1514 > 0x10000
    for f in frames:
        send_frame(m, f, size=0x2000)
    assert m.sent == frames
    assert rd16(m, S0 + TX_WR) == (44 * 1514) & 0xFFFF == rd16(m, S0 + TX_RD)


def test_tx_wr_is_latched_until_send(m: W5100Model) -> None:
    open_macraw(m)
    wr_block(m, TX_MEM, eth(OTHER))
    wr16(m, S0 + TX_WR, 60)
    assert rd16(m, S0 + TX_WR) == 0 and rd16(m, S0 + TX_FSR) == 0x800
    command(m, SEND)
    assert rd16(m, S0 + TX_WR) == 60


def test_send_oversize_empty_and_short(m: W5100Model) -> None:
    open_macraw(m, msr=0x03)
    command(m, SEND)  # nothing to send
    assert rd(m, S0 + IR_) == SEND_OK
    wr16(m, S0 + TX_WR, 1515)  # longer than MSSR 1514: dropped, SEND_OK still
    command(m, SEND)
    assert rd16(m, S0 + TX_RD) == 1515
    wr_block(m, TX_MEM + 1515, eth(OTHER)[:42])
    wr16(m, S0 + TX_WR, 1515 + 42)
    command(m, SEND)
    assert [len(f) for f in m.sent] == [42]
    s = m.stats
    assert (s["tx_empty"], s["tx_oversize"], s["tx_short"], s["frames_out"]) == (1, 1, 1, 1)


# -- receive (w5100 §7, §8) --------------------------------------------------------------------


def test_rx_header_length_includes_itself(m: W5100Model) -> None:
    open_macraw(m)
    frame = eth(MAC, 100)
    assert m.inject(frame)
    assert rd16(m, S0 + RX_RSR) == 102
    assert rd16(m, S0 + RX_WR) == 102
    assert rd_block(m, RX_MEM, 2) == b"\x00\x66"
    assert rd_block(m, RX_MEM + 2, 100) == frame
    assert rd(m, S0 + IR_) == RECV_INT and rd(m, IR) == 0x01


def test_rx_read_recv_frees_space_and_re_raises(m: W5100Model) -> None:
    open_macraw(m)
    frames = [eth(MAC, 80, fill=1), eth(MAC, 90, fill=2)]
    for f in frames:
        m.inject(f)
    assert rd16(m, S0 + RX_RSR) == 82 + 92
    ptr = rd16(m, S0 + RX_RD)
    wr16(m, S0 + RX_RD, ptr + 82)
    assert rd16(m, S0 + RX_RSR) == 174  # latched until RECV
    wr(m, S0 + IR_, RECV_INT)
    command(m, RECV)
    assert rd16(m, S0 + RX_RSR) == 92
    assert rd(m, S0 + IR_) == RECV_INT  # data still queued: RECV raised again
    assert recv_frame(m) == frames[1]
    assert rd16(m, S0 + RX_RSR) == 0 and rd(m, S0 + IR_) == 0
    assert m.stats["rx_misaligned"] == 0 and m.stats["pointer_errors"] == 0


def test_rx_wraps_across_the_buffer_end(m: W5100Model) -> None:
    open_macraw(m)
    frames = [eth(MAC, 1000, fill=1), eth(MAC, 1000, fill=2), eth(MAC, 300, fill=3)]
    assert m.inject(frames[0]) and m.inject(frames[1])
    assert recv_frame(m) == frames[0]
    assert m.inject(frames[2])  # header at 2004, frame wraps at 2048
    assert recv_frame(m) == frames[1]
    assert rd_block(m, RX_MEM + 2004, 2) == (302).to_bytes(2, "big")
    assert rd_block(m, RX_MEM, 10) == frames[2][42:52]
    assert recv_frame(m) == frames[2]
    assert rd16(m, S0 + RX_RD) == 1002 + 1002 + 302


def test_rx_header_itself_wraps(m: W5100Model) -> None:
    open_macraw(m)
    assert m.inject(eth(MAC, 1000)) and m.inject(eth(MAC, 1043))  # ends at 2047
    assert recv_frame(m) and recv_frame(m)
    frame = eth(MAC, 77, fill=9)
    assert m.inject(frame)
    assert rd(m, RX_MEM + 0x7FF) == 0x00 and rd(m, RX_MEM) == 79
    assert recv_frame(m) == frame


def test_rx_full_drops_and_recovers(m: W5100Model) -> None:
    open_macraw(m)
    frame = eth(MAC, 500)
    assert [m.inject(frame) for _ in range(5)] == [True, True, True, True, False]
    assert m.stats["rx_dropped_full"] == 1 and m.stats["frames_in"] == 4
    assert rd16(m, S0 + RX_RSR) == 4 * 502
    assert recv_frame(m) == frame
    assert m.inject(frame)


def test_rx_misaligned_rx_rd_is_counted(m: W5100Model) -> None:
    open_macraw(m)
    m.inject(eth(MAC, 100))
    m.inject(eth(MAC, 100))
    wr16(m, S0 + RX_RD, 100)  # forgot the 2 header bytes
    command(m, RECV)
    assert m.stats["rx_misaligned"] == 1
    wr16(m, S0 + RX_RD, 0x1000)  # past RX_WR
    command(m, RECV)
    assert m.stats["pointer_errors"] == 1


def test_rx_padding_runts_and_oversize(m: W5100Model) -> None:
    open_macraw(m)
    short = eth(MAC, 42)
    assert m.inject(short)
    assert recv_frame(m) == short + bytes(18)  # padded to 60 as a real wire would
    assert not m.inject(MAC + OTHER[:4])
    assert not m.inject(eth(MAC, 1515))
    assert m.inject(eth(MAC, 1514))
    assert (m.stats["rx_runts"], m.stats["rx_oversize"]) == (1, 1)
    unpadded = W5100Model(pad_rx=False)
    open_macraw(unpadded)
    unpadded.inject(short)
    assert recv_frame(unpadded) == short


def test_rx_while_closed_is_lost(m: W5100Model) -> None:
    assert not m.inject(eth(MAC))
    open_macraw(m)
    command(m, CLOSE)
    assert not m.inject(eth(MAC))
    assert m.stats["rx_not_open"] == 2


def test_mac_filter(m: W5100Model) -> None:
    open_macraw(m, MACRAW | MF)
    assert m.inject(eth(MAC))
    assert m.inject(eth(b"\xff" * 6))
    assert not m.inject(eth(OTHER))
    assert not m.inject(eth(bytes.fromhex("01005e000001")))  # multicast: w5100 §13, assume not
    assert m.stats["rx_filtered"] == 2
    wr(m, S0 + MR_, MACRAW)  # MF off only takes effect at the next OPEN
    assert not m.inject(eth(OTHER))
    command(m, OPEN)
    assert m.inject(eth(OTHER)) and m.inject(eth(bytes.fromhex("01005e000001")))


def test_mac_filter_multicast_option() -> None:
    m = W5100Model(mf_passes_multicast=True)
    open_macraw(m, MACRAW | MF)
    assert m.inject(eth(bytes.fromhex("333300000001")))
    assert not m.inject(eth(OTHER))


# -- interrupts (w5100 §3, §11) ----------------------------------------------------------------


def test_int_pin_follows_ir_and_imr(m: W5100Model) -> None:
    open_macraw(m)
    assert m.int_pin.get() is True
    m.inject(eth(MAC))
    assert m.int_pin.get() is True  # masked
    wr(m, IMR, 0x01)
    assert m.int_pin.get() is False  # active low
    assert m.int_pin.wait_edge(Edge.FALLING, 0) is True
    assert m.int_pin.wait_edge(Edge.FALLING, 0) is False  # no new edge while it stays low
    wr(m, S0 + IR_, RECV_INT)
    assert m.int_pin.get() is True
    assert m.int_pin.wait_edge(Edge.RISING, 0) is True
    assert m.stats["int_asserts"] == 1


def test_int_edges_inside_one_batch(m: W5100Model) -> None:
    open_macraw(m)
    wr(m, IMR, 0x01)
    m.inject(eth(MAC))
    m.inject(eth(MAC))
    m.int_pin.wait_edge(Edge.FALLING, 0)
    # Clear RECV, advance RX_RD over one frame, RECV: the chip raises RECV again.
    m.transfer_batch(
        [wframe(S0 + IR_, RECV_INT), wframe(S0 + RX_RD + 1, 62), wframe(S0 + CR, RECV)]
    )
    assert m.int_pin.get() is False
    assert m.int_pin.wait_edge(Edge.FALLING, 0) is True  # high then low again


def test_ir_high_bits_write_one_to_clear(m: W5100Model) -> None:
    wr(m, IMR, 0xFF)
    assert rd(m, IMR) == 0xEF  # bit 4 reserved
    m.raise_interrupt(0xE0)
    assert rd(m, IR) == 0xE0 and m.int_pin.get() is False
    wr(m, IR, 0x40)
    assert rd(m, IR) == 0xA0
    wr(m, IR, 0xA0)
    assert rd(m, IR) == 0x00 and m.int_pin.get() is True


def test_int_pin_is_an_input(m: W5100Model) -> None:
    with pytest.raises(OSError):
        m.int_pin.set(False)


# -- counters ----------------------------------------------------------------------------------


def test_bus_counters(m: W5100Model) -> None:
    wr(m, GAR, 1)
    rd(m, GAR)
    assert (m.counters.bytes, m.counters.transactions, m.counters.calls) == (8, 2, 2)
    rd_block(m, GAR, 10)
    assert (m.counters.bytes, m.counters.transactions, m.counters.calls) == (48, 12, 3)
    m.transfer(b"\x0f\x00")
    assert (m.counters.bytes, m.counters.transactions, m.counters.calls) == (50, 13, 4)


# -- bad frames --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data,reply",
    [
        (b"", b""),
        (b"\xf0\x00\x01", b"\x00\x01\x02"),
        (b"\xf0\x00\x01\x55\x66", b"\x00\x01\x02\x00\x00"),
        (b"\x0f\x00\x01\x00\x00\x00", b"\x00\x01\x02\x00\x00\x00"),
        (b"\xaa\x00\x01\x55", b"\x00\x01\x02\x00"),
        (b"\x00\x00\x01\x55", b"\x00\x01\x02\x00"),
    ],
)
def test_bad_frames_change_nothing(m: W5100Model, data: bytes, reply: bytes) -> None:
    assert m.transfer(data) == reply
    assert rd(m, GAR) == 0
    assert m.stats["bad_frames"] == 1
    assert m.counters.transactions == 2 and m.counters.bytes == len(data) + 4


def test_bad_frame_inside_a_batch(m: W5100Model) -> None:
    out = m.transfer_batch([wframe(GAR, 7), b"\xf0\x00\x02\x08\x00", wframe(GAR + 2, 9)])
    assert out == [WRITE_ECHO, b"\x00\x01\x02\x00\x00", WRITE_ECHO]
    assert rd_block(m, GAR, 3) == b"\x07\x00\x09"
    assert m.stats["bad_frames"] == 1


# -- faults ------------------------------------------------------------------------------------


def test_bit_errors_are_seeded_and_counted() -> None:
    def run(seed: int) -> tuple[list[bytes], int]:
        m = W5100Model(seed=seed, faults=W5100Faults(bit_error_rate=0.01))
        out = m.transfer_batch([rframe(RTR)] * 1000)
        return out, m.stats["bit_errors"]

    out_a, errors_a = run(1)
    out_b, errors_b = run(1)
    assert out_a == out_b and errors_a == errors_b
    flipped = sum(bin(int.from_bytes(r) ^ 0x000102_07).count("1") for r in out_a)
    assert flipped == errors_a
    assert 200 < errors_a < 450  # 32000 bits at 1 %
    assert run(2)[0] != out_a


def test_bit_errors_leave_the_chip_state_alone() -> None:
    m = W5100Model(faults=W5100Faults(bit_error_rate=1.0))
    assert m.transfer(wframe(GAR, 0x12)) == b"\xff\xfe\xfd\xfc"
    m.faults.bit_error_rate = 0.0
    assert rd(m, GAR) == 0x12
    assert m.stats["bit_errors"] == 32


def test_soft_reset_between_batches(m: W5100Model) -> None:
    open_macraw(m)
    wr_block(m, TX_MEM, eth(OTHER))
    m.soft_reset()
    wr16(m, S0 + TX_WR, 60)
    command(m, SEND)  # socket closed now: nothing goes out
    assert m.sent == [] and rd(m, S0 + SR) == 0
    assert m.stats["soft_resets"] == 1 and m.stats["cmd_ignored"] == 1


def test_scheduled_reset_inside_a_batch(m: W5100Model) -> None:
    wr_block(m, GAR, b"\x01\x02\x03\x04")
    m.schedule_reset(2)
    wr_block(m, SUBR, b"\xff\xff\xff\x00")
    assert rd_block(m, SUBR, 4) == b"\x00\x00\xff\x00"  # two writes, reset, two writes
    assert rd_block(m, GAR, 4) == bytes(4)
    assert m.stats["resets"] == 1


def test_hard_reset_through_the_pin() -> None:
    clock = ManualClock()
    m = W5100Model(clock=clock, timing=W5100Timing(pll_lock_ms=10.0))
    open_macraw(m)
    wr(m, TX_MEM, 0x42)
    m.reset_pin.set(False)
    assert m.transfer(rframe(RTR)) == bytes(4)  # chip held in reset: nothing answers
    m.reset_pin.set(True)
    assert m.transfer(rframe(RTR)) == bytes(4)  # PLL still locking
    clock.advance(10.0)
    assert rd16(m, RTR) == 0x07D0
    assert rd(m, S0 + SR) == 0 and rd_block(m, SHAR, 6) == bytes(6)
    assert rd(m, TX_MEM) == 0x42  # what this model does: RAM keeps its contents
    assert m.stats["hard_resets"] == 1 and m.stats["access_in_reset"] == 2


def test_hard_reset_method(m: W5100Model) -> None:
    open_macraw(m)
    m.hard_reset()
    assert rd(m, S0 + SR) == 0 and rd(m, RMSR) == 0x55
    assert m.stats["hard_resets"] == 1 and m.stats["resets"] == 1
    assert m.reset_pin.get() is True


def test_fill_rx_and_rx_full_flag(m: W5100Model) -> None:
    assert m.fill_rx() == 0  # socket closed
    open_macraw(m)
    assert m.fill_rx() == 2048 // 62
    assert not m.inject(eth(MAC))
    assert m.stats["rx_dropped_full"] == 1 and m.stats["rx_fill_frames"] == 33
    while recv_frame(m) is not None:
        pass
    m.faults.rx_full = True
    assert not m.inject(eth(MAC))
    m.faults.rx_full = False
    assert m.inject(eth(MAC))
    assert m.stats["rx_dropped_full"] == 2


def test_stall_send(m: W5100Model) -> None:
    open_macraw(m)
    m.faults.stall_send = True
    wr_block(m, TX_MEM, eth(OTHER))
    wr16(m, S0 + TX_WR, 60)
    command(m, SEND)
    assert rd(m, S0 + IR_) & SEND_OK == 0
    assert rd16(m, S0 + TX_RD) == 0 and rd16(m, S0 + TX_FSR) == 0x800 - 60
    m.faults.stall_send = False
    command(m, SEND)  # still stuck: the chip is hung until CLOSE/OPEN or a reset
    assert m.sent == [] and rd(m, S0 + IR_) == 0
    assert m.stats["tx_stalled"] == 1 and m.stats["send_while_busy"] == 1
    command(m, OPEN)
    send_frame(m, eth(OTHER))
    assert len(m.sent) == 1


def test_send_takes_time_when_asked() -> None:
    clock = ManualClock()
    m = W5100Model(clock=clock, timing=W5100Timing(send_ms=2.0))
    open_macraw(m)
    wr_block(m, TX_MEM, eth(OTHER))
    wr16(m, S0 + TX_WR, 60)
    command(m, SEND)
    assert rd(m, S0 + IR_) == 0 and m.sent == [] and rd16(m, S0 + TX_FSR) == 0x800 - 60
    clock.advance(2.0)
    assert rd(m, S0 + IR_) == SEND_OK and len(m.sent) == 1 and rd16(m, S0 + TX_RD) == 60


# -- the wire ----------------------------------------------------------------------------------


def test_wire_send_and_poll_on_every_call() -> None:
    wire = FakeWire()
    m = W5100Model(wire)
    open_macraw(m)
    frame = eth(OTHER, 70, src=MAC)
    send_frame(m, frame)
    assert wire.sent == [frame] and m.sent == []
    polls = wire.polls
    rd(m, GAR)
    m.transfer_batch([rframe(GAR)] * 5)
    assert wire.polls == polls + 2  # once per call, not per frame
    wire.push(eth(MAC, 64))
    assert rd16(m, S0 + RX_RSR) == 66
    wire.push(eth(MAC, 64))
    assert m.int_pin.get() is True  # reading the pin pulls from the wire too
    assert rd16(m, S0 + RX_RSR) == 132


def test_closed_wire_is_left_alone() -> None:
    wire = FakeWire()
    m = W5100Model(wire)
    wire.close()
    rd(m, GAR)
    rd(m, GAR)
    assert m.stats["wire_errors"] == 1
    fd = m.int_pin.fileno()  # /INT's edges only: the dead wire is no longer waited on
    assert fd is not None and not readable(fd)


def test_int_pin_waits_on_the_wire_descriptor() -> None:
    wire = FakeWire(with_fd=True)
    m = W5100Model(wire)
    try:
        fd = m.int_pin.fileno()
        assert fd is not None and wire.fileno() is not None and not readable(fd)
        wire.push(eth(MAC))
        assert readable(fd)  # frames wait on the wire for the chip
        rd(m, GAR)  # pulled (socket 0 not open yet: dropped), the wire is quiet again
        assert not readable(fd)
        open_macraw(m)
        wr(m, IMR, 0x01)
        t0 = time.monotonic()
        polls = wire.polls
        assert m.int_pin.wait_edge(Edge.FALLING, 50) is False
        assert 0.045 < time.monotonic() - t0 < 1.0
        assert wire.polls - polls <= 3  # slept in select, did not spin
        timer = threading.Timer(0.05, wire.push, (eth(MAC),))
        timer.start()
        t0 = time.monotonic()
        assert m.int_pin.wait_edge(Edge.FALLING, 2000) is True
        assert time.monotonic() - t0 < 1.0
        assert rd16(m, S0 + RX_RSR) == 62
        timer.join()
    finally:
        wire.close()


def test_int_descriptor_is_readable_once_a_bus_call_raises_int() -> None:
    """A bus call (here a write, as on the send path) pulls a frame off the wire and
    /INT falls: the descriptor must be readable at once, though the wire is quiet by
    then, like a GPIO line's edge events; taking the edge makes it quiet again."""
    wire = FakeWire(with_fd=True)
    m = W5100Model(wire)
    try:
        open_macraw(m)
        wr(m, IMR, 0x01)
        fd = m.int_pin.fileno()
        assert fd is not None and not readable(fd)
        wire.push(eth(MAC))
        wr(m, S0 + TX_WR, 0)  # any bus call pulls what waits on the wire
        assert m.int_pin.level is False and m.stats["int_asserts"] == 1
        assert not readable(wire.fileno() or -1)  # the frame is in the chip now
        assert readable(fd)
        assert m.int_pin.wait_edge(Edge.FALLING, 0) is True
        assert not readable(fd)  # the edge is taken; /INT is still low, no new edge
        wr(m, S0 + IR_, RECV_INT)  # cleared: /INT rises, which is no interrupt
        assert m.int_pin.level is True and not readable(fd)
        wire.push(eth(MAC))
        wr(m, GAR, 0)
        assert readable(fd)  # the next frame: a new falling edge
        m.int_pin.wait_edge(Edge.FALLING, 0)
        assert not readable(fd)
    finally:
        m.close()
        wire.close()
    assert m.int_pin.fileno() is None


def test_wait_edge_without_descriptor_naps(m: W5100Model) -> None:
    open_macraw(m)
    wr(m, IMR, 0x01)
    t0 = time.monotonic()
    assert m.int_pin.wait_edge(Edge.BOTH, 20) is False
    assert 0.015 < time.monotonic() - t0 < 1.0
    timer = threading.Timer(0.02, m.inject, (eth(MAC),))
    timer.start()
    assert m.int_pin.wait_edge(Edge.FALLING, 2000) is True
    timer.join()


def test_close(m: W5100Model) -> None:
    m.close()
    m.close()
    with pytest.raises(OSError):
        m.transfer(rframe(GAR))


# -- the chip's own stack (w5100 §14.4) ---------------------------------------------------------


def _arp_request(target_ip: bytes, sender_ip: bytes = bytes((10, 0, 0, 1))) -> bytes:
    arp = bytes.fromhex("0001080006040001") + OTHER + sender_ip + bytes(6) + target_ip
    return b"\xff" * 6 + OTHER + b"\x08\x06" + arp


def test_hardware_stack_activity_is_counted(m: W5100Model) -> None:
    ip = bytes((10, 0, 0, 2))
    open_macraw(m)
    m.inject(_arp_request(ip))
    assert m.stats["would_arp_reply"] == 0  # SIPR 0.0.0.0: the chip's stack stays quiet
    wr_block(m, SIPR, ip)
    m.inject(_arp_request(ip))
    assert m.stats["would_arp_reply"] == 1
    m.inject(_arp_request(bytes((10, 0, 0, 1)), sender_ip=ip))  # someone else claims our IP
    assert m.stats["ip_conflicts"] == 1 and rd(m, IR) & 0x80


def test_sim_pin_generic() -> None:
    seen: list[bool] = []
    pin = SimPin("x", output=True, on_set=seen.append)
    assert isinstance(pin, Pin)
    pin.set(False)
    pin.set(False)
    pin.set(True)
    assert seen == [False, True]
    assert pin.wait_edge(Edge.RISING, 0) is True  # the falling edge is passed over
    assert pin.wait_edge(Edge.BOTH, 0) is False
    pin.close()
    with pytest.raises(OSError):
        pin.get()
