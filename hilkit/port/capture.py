"""Packet capture: tap any Device into a pcapng file.

Written from the pcapng specification (draft-ietf-opsawg-pcapng); section
numbers below refer to it. A file is one section: a Section Header Block
(4.1), then an Interface Description Block (4.2) per interface, then an
Enhanced Packet Block (4.3) per frame. IDBs may come later than packets of
other interfaces: the spec only asks that an interface's IDB precede the
blocks that refer to it (4.2), so interfaces can be added at any time.

Numbers are written in the host's byte order, as the spec describes
(3.6.1); readers learn it from the byte-order magic in the SHB.

Timestamps are microseconds since 1970-01-01 UTC (``if_tsresol`` = 6): pcap
timestamps are absolute, so they come from the wall clock, not from a
monotonic ``Clock``.

A capture is an observer and must never break the link it watches: when
the file stops taking writes (disk full, I/O error), the writer logs one
error line, stops recording and counts what it could not record; traffic
goes on.

Not thread-safe: one writer is shared by the devices of one single-threaded
stack. Typical use::

    writer, (eth0, ppp0) = capture_devices([tap, ppp], "run.pcapng")
    ...
    for dev in (eth0, ppp0):
        dev.close()
    writer.close()
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import BinaryIO

from hilkit.port.device import ETH_HEADER_LEN, Device, LinkType
from hilkit.port.middleware import DeviceMiddleware
from hilkit.port.offload import wire_frames

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_RAW",
    "CaptureDevice",
    "PcapngWriter",
    "capture_devices",
    "linktype_for",
]

# --- Block types (3.1 general block structure; 10.1 registry) ---------------
BT_SHB = 0x0A0D0D0A  # Section Header Block, 4.1 ("\n\r\r\n", palindromic)
BT_IDB = 0x00000001  # Interface Description Block, 4.2
BT_EPB = 0x00000006  # Enhanced Packet Block, 4.3

BYTE_ORDER_MAGIC = 0x1A2B3C4D  # 4.1
VERSION_MAJOR = 1  # 4.1: writers MUST write 1.0
VERSION_MINOR = 0
SECTION_LENGTH_UNSPECIFIED = -1  # 4.1: section length not given

# --- Options (3.5; codes per block in 4.1, 4.2, 4.3) ------------------------
OPT_ENDOFOPT = 0  # 3.5: writers MUST end every option list with it
OPT_COMMENT = 1  # 3.5
SHB_HARDWARE = 2  # 4.1
SHB_OS = 3  # 4.1
SHB_USERAPPL = 4  # 4.1
IF_NAME = 2  # 4.2
IF_DESCRIPTION = 3  # 4.2
IF_MACADDR = 6  # 4.2, 6 octets
IF_TSRESOL = 9  # 4.2, 1 octet: MSB 0 -> negative power of 10
EPB_FLAGS = 2  # 4.3, 4 octets; layout in 4.3.1

# 4.3.1 epb_flags bits 0-1: 00 not available, 01 inbound, 10 outbound.
EPB_FLAG_INBOUND = 0b01
EPB_FLAG_OUTBOUND = 0b10

TSRESOL_MICROSECONDS = 6  # 4.2: 10^-6 s per timestamp unit

# --- Link types (draft-ietf-opsawg-pcaplinktype) -----------------------------
LINKTYPE_ETHERNET = 1  # IEEE 802.3 Ethernet II, no FCS here
LINKTYPE_RAW = 101  # raw IP: the packet starts with an IPv4 or IPv6 header

_LINKTYPES: dict[LinkType, int] = {
    LinkType.ETHERNET: LINKTYPE_ETHERNET,
    LinkType.RAW_IP: LINKTYPE_RAW,
}

# Fixed parts, host byte order ("=": native order, standard sizes, no padding).
_BLOCK_HEAD = struct.Struct("=II")  # block type, block total length (3.1)
_U32 = struct.Struct("=I")  # the trailing block total length (3.1)
_OPT_HEAD = struct.Struct("=HH")  # option code, option length (3.5)
_SHB_BODY = struct.Struct("=IHHq")  # magic, major, minor, section length (4.1)
_IDB_BODY = struct.Struct("=HHI")  # link type, reserved, snaplen (4.2)
# EPB up to the packet data: type, total length, interface id, timestamp
# upper and lower 32 bits, captured length, original length (4.3).
_EPB_HEAD = struct.Struct("=7I")
# EPB after the padded packet data: epb_flags option (code, length, value),
# opt_endofopt (code, length), trailing block total length.
_EPB_TAIL = struct.Struct("=HHIHHI")
_EPB_OVERHEAD = _EPB_HEAD.size + _EPB_TAIL.size  # 28 + 16 bytes

_BUFFER_SIZE = 1 << 16

log = logging.getLogger(__name__)


def linktype_for(link_type: LinkType) -> int:
    """The pcap LINKTYPE_* number for a device's link type."""
    return _LINKTYPES[link_type]


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _option(code: int, value: bytes) -> bytes:
    """One option TLV, value padded with zeros to 32 bits (3.5, 3.6.2)."""
    if len(value) > 0xFFFF:
        raise ValueError(f"option {code} value too long ({len(value)} octets)")
    return _OPT_HEAD.pack(code, len(value)) + value + bytes(_pad4(len(value)) - len(value))


def _options(opts: Iterable[tuple[int, bytes]]) -> bytes:
    body = b"".join(_option(code, value) for code, value in opts)
    return body + _OPT_HEAD.pack(OPT_ENDOFOPT, 0)


def _block(block_type: int, body: bytes) -> bytes:
    """General block structure (3.1): type, total length, body, total length."""
    total = 12 + len(body)  # body is already a multiple of 4
    return _BLOCK_HEAD.pack(block_type, total) + body + _U32.pack(total)


def _wall_clock_us() -> int:
    return time.time_ns() // 1000


class PcapngWriter:
    """Writes one pcapng section: SHB, IDBs, and an EPB per frame.

    ``path_or_file`` is a path (the writer opens, buffers and owns the file)
    or a binary file object opened for writing (the writer flushes but never
    closes it). ``now_us`` supplies default timestamps, in microseconds
    since the Unix epoch.

    Opening a path may raise ``OSError``; after that no method raises for a
    file that fails. The first failed write or flush sets ``error``, is
    logged once, and ends the recording (frames still in the buffer then may
    be missing from the file); ``frames_not_captured`` counts the frames
    offered after it.
    """

    def __init__(
        self,
        path_or_file: str | os.PathLike[str] | BinaryIO,
        *,
        userappl: str = "hilkit",
        now_us: Callable[[], int] = _wall_clock_us,
    ) -> None:
        self.path: str | None
        if isinstance(path_or_file, (str, os.PathLike)):
            self.path = os.fspath(path_or_file)
            self._file: BinaryIO = open(self.path, "wb", buffering=_BUFFER_SIZE)  # noqa: SIM115
            self._owns_file = True
        else:
            self.path = getattr(path_or_file, "name", None)
            if not isinstance(self.path, str):
                self.path = None
            self._file = path_or_file
            self._owns_file = False
        self._write = self._file.write
        self._now_us = now_us
        self._closed = False
        self._snaplens: list[int] = []  # per interface id, 0 = no limit
        self.interface_names: list[str] = []
        self.frames_written = 0  # handed to the file
        self.frames_not_captured = 0  # offered after the file failed
        self.write_errors = 0  # failed writes and flushes: 1 at most, recording stops there
        self.error: OSError | None = None
        shb_body = _SHB_BODY.pack(
            BYTE_ORDER_MAGIC, VERSION_MAJOR, VERSION_MINOR, SECTION_LENGTH_UNSPECIFIED
        ) + _options([(SHB_USERAPPL, userappl.encode())])
        self._emit(_block(BT_SHB, shb_body))

    # -- interfaces -------------------------------------------------------
    def add_interface(
        self,
        name: str,
        link_type: LinkType,
        snaplen: int = 0,
        *,
        mac: bytes | None = None,
        description: str | None = None,
    ) -> int:
        """Write an IDB; return the interface id that ``write`` takes.

        ``snaplen`` 0 means no limit (4.2); longer frames are truncated to it
        in the file, with their original length kept.
        """
        self._check_open()
        if not 0 <= snaplen <= 0xFFFFFFFF:
            raise ValueError(f"snaplen out of range: {snaplen}")
        opts: list[tuple[int, bytes]] = [
            (IF_NAME, name.encode()),
            (IF_TSRESOL, bytes([TSRESOL_MICROSECONDS])),
        ]
        if description is not None:
            opts.append((IF_DESCRIPTION, description.encode()))
        if mac is not None:
            if len(mac) != 6:
                raise ValueError("if_MACaddr must be 6 octets")
            opts.append((IF_MACADDR, bytes(mac)))
        body = _IDB_BODY.pack(linktype_for(link_type), 0, snaplen) + _options(opts)
        self._emit(_block(BT_IDB, body))
        self._snaplens.append(snaplen)
        self.interface_names.append(name)
        return len(self._snaplens) - 1

    # -- packets ----------------------------------------------------------
    def write(
        self,
        iface_id: int,
        frame: bytes | bytearray | memoryview,
        inbound: bool,
        ts_us: int | None = None,
    ) -> None:
        """Append one frame as an EPB with its direction in epb_flags (4.3.1)."""
        if self._closed:
            raise ValueError("write to a closed capture")
        if not 0 <= iface_id < len(self._snaplens):
            raise ValueError(f"unknown interface id {iface_id}")
        if self.error is not None:
            self.frames_not_captured += 1
            return
        if ts_us is None:
            ts_us = self._now_us()
        orig_len = len(frame)
        snaplen = self._snaplens[iface_id]
        cap_len = snaplen if 0 < snaplen < orig_len else orig_len
        data_end = _EPB_HEAD.size + cap_len
        tail_at = _EPB_HEAD.size + _pad4(cap_len)
        total = tail_at + _EPB_TAIL.size
        # One buffer per block, zero-filled, so the padding is zeros (3.6.2).
        buf = bytearray(total)
        _EPB_HEAD.pack_into(
            buf, 0, BT_EPB, total, iface_id, ts_us >> 32, ts_us & 0xFFFFFFFF, cap_len, orig_len
        )
        buf[_EPB_HEAD.size : data_end] = frame if cap_len == orig_len else frame[:cap_len]
        _EPB_TAIL.pack_into(
            buf,
            tail_at,
            EPB_FLAGS,
            4,
            EPB_FLAG_INBOUND if inbound else EPB_FLAG_OUTBOUND,
            OPT_ENDOFOPT,
            0,
            total,
        )
        if self._emit(buf):
            self.frames_written += 1
        else:
            self.frames_not_captured += 1

    # -- lifetime ---------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def counters(self) -> dict[str, int]:
        return {"frames_written": self.frames_written,
                "frames_not_captured": self.frames_not_captured,
                "write_errors": self.write_errors}

    def flush(self) -> None:
        if not self._closed and self.error is None:
            try:
                self._file.flush()
            except OSError as e:
                self._fail(e)

    def close(self) -> None:
        """Flush, and close the file if the writer opened it; idempotent."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._release()

    def _emit(self, data: bytes | bytearray) -> bool:
        """Write ``data``; False, once the file has failed."""
        if self.error is not None:
            return False
        try:
            self._write(data)
        except OSError as e:
            self._fail(e)
            return False
        return True

    def _fail(self, e: OSError) -> None:
        self._note_failure(e)
        self._release()

    def _note_failure(self, e: OSError) -> None:
        self.write_errors += 1
        self.error = e
        log.error("capture %s: %s; capture stopped after %d frames, traffic goes on",
                  self.path or "file", e, self.frames_written)

    def _release(self) -> None:
        """Close a file the writer opened; a failure is noted unless one already was."""
        if self._owns_file and not self._file.closed:
            try:
                self._file.close()
            except OSError as e:  # after a failure: the same buffer failing again
                if self.error is None:
                    self._note_failure(e)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("capture is closed")

    def __enter__(self) -> PcapngWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.frames_written} frames"
        return f"<PcapngWriter {self.path or self._file!r}: {state}>"


class CaptureDevice(DeviceMiddleware):
    """A Device that records what passes through another into a pcapng file.

    Frames ``send`` accepted are recorded as outbound (a refused frame never
    went out, so it is not recorded); frames ``poll`` returns as inbound.
    Everything else is the inner device's. ``close`` closes the inner device,
    never the writer, which belongs to whoever made it and may be shared.
    Once the writer is closed, or its file has failed, traffic still flows
    but is no longer recorded: a capture is an observer and must not break
    the link it watches.

    Behind a device that offloads (``Offloads``), what passes is not what a wire
    carries: long TCP segments and partial checksums are recorded as the frames a
    wire of the device's MTU would carry (``hilkit.port.offload.wire_frames``).
    """

    def __init__(
        self,
        inner: Device,
        writer: PcapngWriter,
        *,
        iface_name: str | None = None,
        snaplen: int = 0,
    ) -> None:
        super().__init__(inner)
        self.writer = writer
        self.iface_id = writer.add_interface(
            inner.name if iface_name is None else iface_name,
            inner.link_type,
            snaplen,
            mac=inner.mac,
        )
        off = self.offloads
        self._offloaded = off.rx_checksum or off.tx_checksum or off.tso > 0
        self._l3 = ETH_HEADER_LEN if inner.link_type is LinkType.ETHERNET else 0

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        ok = self.inner.send(frame)
        if ok and not self.writer.closed:
            if self._offloaded:
                self._write_wire(bytes(frame), False)
            else:
                self.writer.write(self.iface_id, frame, False)
        return ok

    def poll(self, budget: int) -> list[bytes]:
        frames = self.inner.poll(budget)
        if frames and not self.writer.closed:
            write, iface = self.writer.write, self.iface_id
            for frame in frames:
                if self._offloaded:
                    self._write_wire(frame, True)
                else:
                    write(iface, frame, True)
        return frames

    def _write_wire(self, frame: bytes, inbound: bool) -> None:
        l3 = self._l3
        if l3 and frame[12:14] != b"\x08\x00":
            l3 = -1  # not IPv4: nothing was offloaded
        for f in wire_frames(frame, l3, self.inner.mtu):
            self.writer.write(self.iface_id, f, inbound)

    def __repr__(self) -> str:
        return f"<CaptureDevice {self.inner!r} -> interface {self.iface_id}>"


def capture_devices(
    devices: Iterable[Device],
    path: str | os.PathLike[str],
    *,
    snaplen: int = 0,
) -> tuple[PcapngWriter, list[CaptureDevice]]:
    """Open one capture file and tap every device into it, in order.

    Interface ids follow the order of ``devices``. The caller closes the
    devices and then the writer.
    """
    writer = PcapngWriter(path)
    try:
        wrapped = [CaptureDevice(dev, writer, snaplen=snaplen) for dev in devices]
    except BaseException:
        writer.close()
        raise
    return writer, wrapped
