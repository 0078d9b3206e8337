"""udp: echo both ways -- hilkit to a kernel echo socket, the kernel to hilkit's echo
service (``hilkit.services``, port 7) -- at sizes up to fragmented datagrams."""

from __future__ import annotations

import threading

import pytest

from hilkit.hil.plugin import (
    BuiltRigLike,
    FigureFn,
    HilSession,
    Kernel,
    require_kernel_interface,
    suite_params_of,
)
from hilkit.hil.suites._common import pattern
from hilkit.services import ECHO_PORT, start_udp_services
from hilkit.stack import Stack

TRIES = 3  # a datagram may be lost on a real wire: resend, and count it as a figure


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "size" in metafunc.fixturenames:
        sizes = suite_params_of(metafunc.config, "udp").integers("sizes")
        metafunc.parametrize("size", sizes, ids=[str(s) for s in sizes])


def _wait_s(hil: HilSession) -> float:
    return hil.params("udp").number("timeout_s")


def test_hilkit_to_kernel_echo(rig: BuiltRigLike, stack: Stack, kernel: Kernel, size: int,
                               hil: HilSession, figure: FigureFn) -> None:
    ks = kernel.udp(hil.params("udp").integer("port"))
    ks.settimeout(0.2)
    port = ks.getsockname()[1]
    stop = threading.Event()

    def echo() -> int:
        n = 0
        while not stop.is_set():
            try:
                data, addr = ks.recvfrom(65535)
            except TimeoutError:
                continue
            ks.sendto(data, addr)
            n += 1
        return n

    th = kernel.start(stack, echo, "kernel-udp-echo")
    us = stack.udp_socket()
    payload = pattern(size, size)
    reply: list[bytes] = []
    tries = 0
    try:
        while not reply and tries < TRIES:
            tries += 1
            us.sendto(payload, (rig.kernel_ip, port))

            def got() -> bool:
                item = us.recvfrom()
                if item is not None and item[1] == (rig.kernel_ip, port):
                    reply.append(item[0])
                return bool(reply)

            stack.run(until=got, timeout=_wait_s(hil))
    finally:
        stop.set()
        th.wait(5)
        us.close()
    figure(f"udp_tries_{size}", tries, "")
    assert reply, f"no echo of a {size}-byte datagram from {rig.kernel_ip}:{port} " \
                  f"after {tries} tries"
    assert reply[0] == payload, f"echo differs: {len(reply[0])} bytes back for {size}"


def test_kernel_to_hilkit_echo(rig: BuiltRigLike, stack: Stack, kernel: Kernel, size: int,
                               hil: HilSession, figure: FigureFn) -> None:
    socks = start_udp_services(stack)
    payload = pattern(size, 7000 + size)
    ks = kernel.udp_client()
    ks.settimeout(_wait_s(hil))
    hilkit = kernel.to_hilkit(ECHO_PORT, "udp")

    def client() -> tuple[int, bytes | None]:
        for attempt in range(1, TRIES + 1):
            ks.sendto(payload, hilkit)
            try:
                data, addr = ks.recvfrom(65535)
            except TimeoutError:
                continue
            if addr == hilkit:
                return attempt, data
        return TRIES, None

    try:
        tries, data = kernel.start(stack, client, "kernel-udp-client").wait(
            TRIES * _wait_s(hil) + 10)
    finally:
        for s in socks:
            s.close()
    figure(f"udp_tries_{size}", tries, "")
    assert data is not None, f"hilkit's echo service did not answer a {size}-byte datagram"
    assert data == payload, f"echo differs: {len(data)} bytes back for {size}"


def test_port_unreachable(rig: BuiltRigLike, stack: Stack, kernel: Kernel,
                          hil: HilSession) -> None:
    """A datagram to a closed hilkit port gets ICMP port unreachable, as from any host."""
    require_kernel_interface(rig, "the kernel see hilkit's ICMP port unreachable",
                             "slirp relays UDP through its own sockets and drops ICMP errors")
    ks = kernel.udp()
    ks.connect((rig.dut_ip, 9999))
    ks.settimeout(_wait_s(hil))

    def client() -> str:
        for _ in range(TRIES):
            ks.send(b"anyone there?")
            try:
                ks.recv(100)
            except ConnectionRefusedError:
                return "refused"
            except TimeoutError:
                continue
        return "no answer"

    outcome = kernel.start(stack, client, "kernel-udp-closed").wait(TRIES * _wait_s(hil) + 10)
    assert outcome == "refused", f"UDP to closed port 9999: {outcome}"
