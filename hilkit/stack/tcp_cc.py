"""Congestion control: the window arithmetic, apart from loss detection.

The connection decides *when* (a new ACK, three duplicate ACKs, a timeout);
an algorithm here decides *how much*. NewReno (RFC 5681, RFC 6582) is the
default; another algorithm (CUBIC, RFC 9438) is one more class with the same
methods.
"""

from __future__ import annotations

from typing import Protocol


class CongestionControl(Protocol):
    cwnd: int
    ssthresh: int

    def on_ack(self, acked: int, mss: int) -> None:
        """New data acknowledged outside recovery."""
        ...

    def on_loss(self, flight: int, mss: int) -> None:
        """Fast retransmit: entering recovery."""
        ...

    def on_partial_ack(self, acked: int, mss: int) -> None: ...

    def on_dupack_in_recovery(self, mss: int) -> None: ...

    def on_recovery_end(self, flight: int, mss: int) -> None: ...

    def on_timeout(self, flight: int, mss: int) -> None: ...


def initial_window(mss: int) -> int:
    """RFC 6928: min(10*MSS, max(2*MSS, 14600))."""
    return min(10 * mss, max(2 * mss, 14600))


class NewReno:
    def __init__(self, mss: int) -> None:
        self.cwnd = initial_window(mss)
        self.ssthresh = 1 << 30  # "arbitrarily high" (RFC 5681 §3.1)
        self._acc = 0  # bytes acked towards the next +1 MSS in congestion avoidance

    def on_ack(self, acked: int, mss: int) -> None:
        if self.cwnd < self.ssthresh:
            self.cwnd += min(acked, 2 * mss)  # slow start with ABC, L=2 (RFC 3465)
        else:
            self._acc += acked
            if self._acc >= self.cwnd:  # about one MSS per RTT (RFC 5681 eq. 3)
                self._acc -= self.cwnd
                self.cwnd += mss

    def on_loss(self, flight: int, mss: int) -> None:
        self.ssthresh = max(flight // 2, 2 * mss)  # RFC 5681 eq. 4
        self.cwnd = self.ssthresh + 3 * mss

    def on_partial_ack(self, acked: int, mss: int) -> None:
        self.cwnd = max(self.cwnd - acked + mss, mss)  # RFC 6582 §3.2 step 5

    def on_dupack_in_recovery(self, mss: int) -> None:
        self.cwnd += mss

    def on_recovery_end(self, flight: int, mss: int) -> None:
        self.cwnd = min(self.ssthresh, max(flight, mss) + mss)  # RFC 6582 §3.2 step 6, option 1

    def on_timeout(self, flight: int, mss: int) -> None:
        self.ssthresh = max(flight // 2, 2 * mss)
        self.cwnd = mss  # loss window (RFC 5681 §3.1)
        self._acc = 0
