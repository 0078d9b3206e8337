"""Check capture files with tshark, Wireshark's command-line dissector.

Used by tests that leave a pcapng file: ``assert_capture_clean`` fails if
tshark cannot read the file, or flags a frame as malformed or with an expert
info of severity error; it returns the number of frames, so a test can check
that too. ``tshark_fields`` returns decoded fields, one row per frame.

Useful fields (Wireshark 4.0):

- ``frame.interface_id``, ``frame.interface_name``: the pcapng interface.
- ``frame.encap_type``: Wireshark's encapsulation number for the frame's
  interface, not the pcap LINKTYPE: 1 for Ethernet (LINKTYPE_ETHERNET),
  7 for raw IP (LINKTYPE_RAW, 101). See ``ENCAP_ETHERNET``/``ENCAP_RAW_IP``.
- ``frame.packet_flags_direction``: bits 0-1 of the EPB's epb_flags, printed
  in hex (``0x00000001`` inbound, ``0x00000002`` outbound); parse with
  ``int(value, 0)``. ``frame.p2p_dir`` is derived from it (1 received,
  0 sent).
- ``frame.time_epoch``: seconds since the epoch with nine decimals; parse
  with ``decimal.Decimal`` to compare microseconds exactly.

tshark runs with an empty private configuration directory, so a user's
Wireshark preferences (disabled protocols, custom columns) cannot change the
verdict, and without name resolution (``-n``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

TSHARK = shutil.which("tshark")

requires_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

# Wireshark's wiretap encapsulation numbers, as frame.encap_type shows them.
ENCAP_ETHERNET = 1
ENCAP_RAW_IP = 7

# frame.packet_flags_direction values (pcapng epb_flags bits 0-1).
DIRECTION_UNKNOWN = 0
DIRECTION_INBOUND = 1
DIRECTION_OUTBOUND = 2

# A frame matching this is not clean: a dissector hit bad or truncated data
# (malformed, which includes dissector bugs), or raised an error-level expert
# info (e.g. a bad checksum, when checksum validation is on).
BAD_FRAME_FILTER = "_ws.malformed || _ws.expert.severity >= error"

# Wireshark does not validate IP/TCP/UDP checksums by default; turn it on so
# a wrong checksum is an error-level expert info. (ICMP is always checked.)
CHECKSUM_PREFS = (
    "-o",
    "ip.check_checksum:TRUE",
    "-o",
    "tcp.check_checksum:TRUE",
    "-o",
    "udp.check_checksum:TRUE",
)

# tshark prints this to stderr whenever it runs as root; it is not a problem
# with the file.
_BENIGN_STDERR = ('Running as user "root"',)

_config_dir: str | None = None


def _env() -> dict[str, str]:
    global _config_dir
    if _config_dir is None:
        _config_dir = tempfile.mkdtemp(prefix="hilkit-wireshark-")
    env = dict(os.environ)
    env["WIRESHARK_CONFIG_DIR"] = _config_dir
    return env


def run_tshark(args: Sequence[str], *, timeout: float = 60.0) -> str:
    """Run tshark with ``args`` and return its stdout.

    Raises AssertionError if tshark is missing, exits non-zero (unreadable,
    truncated or corrupt file, bad filter or field), or writes anything to
    stderr besides the running-as-root notice.
    """
    if TSHARK is None:
        raise AssertionError("tshark is not installed")
    argv = [TSHARK, "-n", *args]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=_env(), check=False
    )
    errors = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and not line.startswith(_BENIGN_STDERR)
    ]
    if proc.returncode != 0 or errors:
        raise AssertionError(
            f"tshark failed (exit {proc.returncode}): {' '.join(argv)}\n"
            + "\n".join(errors or proc.stderr.splitlines())
        )
    return proc.stdout


def _rows(stdout: str) -> list[list[str]]:
    # One line per frame; split on "\n" only, as values may hold other breaks.
    lines = stdout.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.split("\t") for line in lines]


def tshark_fields(
    path: str | os.PathLike[str],
    fields: Sequence[str],
    display_filter: str | None = None,
    *,
    check_checksums: bool = False,
) -> list[list[str]]:
    """Decoded ``fields`` of every frame (matching ``display_filter``).

    One row per frame, one string per field, "" where a frame lacks the
    field; several occurrences of a field in one frame are joined with ",".
    """
    if not fields:
        raise ValueError("name at least one field")
    args = ["-r", os.fspath(path), "-T", "fields", "-E", "header=n", "-E", "occurrence=a"]
    args += ["-E", "aggregator=,", "-E", "separator=/t"]
    if check_checksums:
        args += CHECKSUM_PREFS
    if display_filter is not None:
        args += ["-Y", display_filter]
    for field in fields:
        args += ["-e", field]
    return _rows(run_tshark(args))


def capture_frame_count(path: str | os.PathLike[str]) -> int:
    return len(tshark_fields(path, ["frame.number"]))


def assert_capture_clean(path: str | os.PathLike[str], *, check_checksums: bool = True) -> int:
    """Assert tshark reads ``path`` without malformed frames or errors.

    Returns the number of frames in the file. With ``check_checksums`` (the
    default) IP, TCP and UDP checksums are verified too.
    """
    if not Path(path).is_file():
        raise AssertionError(f"no capture file at {path}")
    bad = tshark_fields(
        path,
        ["frame.number", "frame.protocols", "_ws.expert.message"],
        BAD_FRAME_FILTER,
        check_checksums=check_checksums,
    )
    if bad:
        report = "\n".join(
            f"  frame {num} ({protocols}): {messages or 'malformed'}"
            for num, protocols, messages in bad
        )
        raise AssertionError(f"{path}: tshark reports {len(bad)} bad frame(s):\n{report}")
    return capture_frame_count(path)
