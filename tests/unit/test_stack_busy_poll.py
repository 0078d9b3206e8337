"""The busy-poll window (``StackConfig.busy_poll_us``): after traffic the loop keeps
polling instead of sleeping, for that long only; without it, it sleeps at once."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from hilkit.port import DeviceCounters, LinkType
from hilkit.stack import Stack, StackConfig


class OneFrame:
    """A RAW_IP device that gives one frame at its first poll, then nothing; its
    descriptor (a pipe nobody writes) never wakes the loop. Counts polls."""

    link_type = LinkType.RAW_IP
    mac = None
    mtu = 1500
    link_up = True

    def __init__(self) -> None:
        self.name = "one0"
        self.counters = DeviceCounters()
        self.polls = 0
        self._r, self._w = os.pipe()

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        return True

    def poll(self, budget: int) -> list[bytes]:
        self.polls += 1
        return [b"\x45" + bytes(19)] if self.polls == 1 else []

    def fileno(self) -> int | None:
        return self._r

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


@pytest.fixture
def dev() -> Iterator[OneFrame]:
    d = OneFrame()
    yield d
    d.close()


def run_after_a_frame(dev: OneFrame, busy_us: float, seconds: float) -> tuple[int, float]:
    """(polls, CPU seconds of this thread) over ``run(timeout=seconds)`` from the frame."""
    stack = Stack(config=StackConfig(busy_poll_us=busy_us))
    stack.add_device(dev)
    c0 = time.thread_time()
    stack.run(timeout=seconds)
    return dev.polls, time.thread_time() - c0


def test_without_the_window_the_loop_sleeps_after_traffic(dev: OneFrame) -> None:
    polls, _ = run_after_a_frame(dev, 0.0, 0.2)
    assert polls < 10, polls  # the frame's tick, then sleeps until the timeout


def test_the_window_keeps_the_loop_polling_then_it_sleeps(dev: OneFrame) -> None:
    polls, cpu = run_after_a_frame(dev, 20_000.0, 0.5)  # 20 ms of polling, then sleep
    assert polls > 50, polls
    assert cpu < 0.2, f"{cpu:.3f} s of CPU: the loop went on polling past the window"
