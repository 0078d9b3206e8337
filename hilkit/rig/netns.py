"""Private network namespaces: where every frame hilkit puts on a wire stays.

A ``Netns`` is created by its owner and deleted on exit. Interfaces are
created *inside* it (a TAP opened by a thread that has entered the namespace
is born there), so nothing is ever configured in the machine's own namespace.
Sockets made through ``socket()`` belong to the namespace for their lifetime,
which lets a test talk to the kernel peer from its own process.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000  # <linux/sched.h>
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class NetnsError(RuntimeError):
    pass


class Netns:
    """A network namespace this process created and will delete."""

    def __init__(self, prefix: str = "hk") -> None:
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self._created = False

    def __enter__(self) -> Netns:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def create(self) -> None:
        """Create it (deleted again if any step after that fails)."""
        _run(["ip", "netns", "add", self.name])
        self._created = True
        try:
            self.ip("link", "set", "lo", "up")
            # IPv6 would put router solicitations and DAD probes on every link
            # (-e: a kernel booted without IPv6 has no such keys, and needs none).
            self.exec(["sysctl", "-qew", "net.ipv6.conf.all.disable_ipv6=1"])
            self.exec(["sysctl", "-qew", "net.ipv6.conf.default.disable_ipv6=1"])
        except BaseException:
            self.delete()
            raise

    def delete(self) -> None:
        if self._created:
            subprocess.run(["ip", "netns", "delete", self.name], check=False)
            self._created = False

    @property
    def path(self) -> str:
        return os.path.join(NETNS_RUN_DIR, self.name)

    def ip(self, *args: str) -> str:
        """Run ``ip -n NAME ARGS``; raise with ip's message on failure."""
        return _run(["ip", "-n", self.name, *args])

    def mac_of(self, interface: str) -> bytes:
        """The MAC address of ``interface`` in this namespace (``ip -j link show``)."""
        info = json.loads(self.ip("-j", "link", "show", "dev", interface))
        return bytes.fromhex(info[0]["address"].replace(":", ""))

    def exec(self, argv: Sequence[str], **kw: object) -> str:
        return _run(["ip", "netns", "exec", self.name, *argv], **kw)

    def popen(self, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kw)  # type: ignore[call-overload,no-any-return]

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a thread that has entered this namespace; return its result.

        Only that thread changes namespace; file descriptors it opens (sockets,
        TAPs) stay bound to the namespace after the thread ends.
        """
        box: dict[str, object] = {}

        def body() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    _setns(fd, CLONE_NEWNET)
                finally:
                    os.close(fd)
                box["value"] = fn()
            except BaseException as e:  # handed to the caller below
                box["error"] = e

        t = threading.Thread(target=body, name=f"netns-{self.name}")
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]

    def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0
    ) -> socket.socket:
        return self.call(lambda: socket.socket(family, type, proto))


def _run(argv: Sequence[str], **kw: object) -> str:
    kw.setdefault("timeout", 30)  # an ip/sysctl call never hangs a run
    res = subprocess.run(list(argv), capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if res.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {res.stderr.strip() or res.returncode}")
    return res.stdout  # type: ignore[no-any-return]
