"""Out-of-order data a TCP receiver keeps, and the SACK blocks that report it.

RFC 9293 §3.10.7.4 lets a receiver keep segments that arrive beyond a hole;
RFC 2018 §4 says how to report them. The peer chooses the order segments come
in, so the cost of one segment must not depend on what is already queued:
each costs a few bisections on sorted lists (O(log n)) plus one slice edit of
them, and copying its own bytes; nothing re-sorts or walks the whole queue.

- pieces: the stored bytes, disjoint, sorted by offset. A segment that
  continues the piece before it is appended to it (a sender filling a hole in
  order makes one piece, not many); otherwise it becomes a new piece, at most
  ``max_pieces`` of them. Pieces a segment covers whole are replaced by it.
- blocks: the same data as maximal contiguous ranges, what SACK reports; a
  new segment merges only with the blocks it touches.
- recent: where the first SACK block of the last few ACKs lay, newest first
  (RFC 2018 §4: the block holding the newest segment first, then the most
  recently reported others).

Offsets count from ``base``, a sequence number at or before RCV.NXT, so the
lists stay sorted across the wrap of sequence space.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

from hilkit.stack.tcp import seq_add, seq_diff

_REBASE = 1 << 30  # move ``base`` up once RCV.NXT is this far past it
_RECENT = 8  # first blocks remembered, more than one ACK can carry (4)


class OutOfOrder:
    def __init__(self, max_pieces: int) -> None:
        self.max_pieces = max_pieces
        self.base = 0
        self.p_start: list[int] = []
        self.p_end: list[int] = []
        self.p_data: list[bytearray] = []
        self.b_start: list[int] = []
        self.b_end: list[int] = []
        self.recent: list[int] = []
        self.last: int | None = None  # offset of the newest segment's first byte
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.p_start)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """(sequence number, bytes) of each piece, in order."""
        for s, d in zip(self.p_start, self.p_data, strict=True):
            yield seq_add(self.base, s), bytes(d)

    def clear(self) -> None:
        self.p_start, self.p_end, self.p_data = [], [], []
        self.b_start, self.b_end = [], []
        self.recent = []
        self.last = None
        self.nbytes = 0

    def add(self, seq: int, data: memoryview, rcv_nxt: int) -> bool:
        """Keep ``data`` (all of it beyond RCV.NXT); False if it would take a piece too many."""
        if not self.p_start:
            self.base = rcv_nxt
        s = seq_diff(seq, self.base)
        e = s + len(data)
        first = s
        i = bisect_right(self.p_start, s)  # pieces [0, i) start at or before s
        if i and self.p_end[i - 1] > s:  # the piece before overlaps our start: skip that part
            cut = min(self.p_end[i - 1], e) - s
            data, s = data[cut:], s + cut
            if s >= e:
                self.last = first
                return True  # a duplicate: nothing new
        j = bisect_left(self.p_start, e, lo=i)  # pieces [i, j) start inside [s, e)
        if j > i and self.p_end[j - 1] > e:  # the last of them runs past our end: stop before it
            j -= 1
            e = self.p_start[j]
            data = data[:e - s]
        append = i > 0 and self.p_end[i - 1] == s
        if j == i and not append and len(self.p_start) >= self.max_pieces:
            return False
        self.last = first
        if j > i:  # pieces inside [s, e) hold the same sequence space: ours replace them
            freed = sum(self.p_end[i:j]) - sum(self.p_start[i:j])
            del self.p_start[i:j], self.p_end[i:j], self.p_data[i:j]
            self.nbytes -= freed
        if append:
            self.p_data[i - 1] += data
            self.p_end[i - 1] = e
        else:
            self.p_start.insert(i, s)
            self.p_end.insert(i, e)
            self.p_data.insert(i, bytearray(data))
        self.nbytes += e - s
        # blocks: merge [s, e) with the ones it touches or overlaps
        bi = bisect_left(self.b_end, s)
        bj = bisect_right(self.b_start, e)
        if bi < bj:
            s, e = min(s, self.b_start[bi]), max(e, self.b_end[bj - 1])
        self.b_start[bi:bj] = [s]
        self.b_end[bi:bj] = [e]
        return True

    def drain(self, rcv_nxt: int, into: bytearray) -> int:
        """Append what now continues RCV.NXT to ``into``; returns the new RCV.NXT."""
        nxt = seq_diff(rcv_nxt, self.base)
        k = 0
        n = len(self.p_start)
        while k < n and self.p_start[k] <= nxt:  # each piece is moved once: O(1) a segment
            if self.p_end[k] > nxt:
                into += memoryview(self.p_data[k])[nxt - self.p_start[k]:]
                nxt = self.p_end[k]
            k += 1
        if k:
            self.nbytes -= sum(self.p_end[:k]) - sum(self.p_start[:k])
            del self.p_start[:k], self.p_end[:k], self.p_data[:k]
            m = bisect_right(self.b_end, nxt)
            del self.b_start[:m], self.b_end[:m]
        out = seq_add(self.base, nxt)
        if not self.p_start:
            self.clear()
        elif nxt > _REBASE:  # rare (once per GiB received with a hole always open)
            self._rebase(nxt)
        return out

    def _rebase(self, d: int) -> None:
        self.base = seq_add(self.base, d)
        self.p_start = [x - d for x in self.p_start]
        self.p_end = [x - d for x in self.p_end]
        self.b_start = [x - d for x in self.b_start]
        self.b_end = [x - d for x in self.b_end]
        self.recent = [x - d for x in self.recent]
        self.last = None if self.last is None else self.last - d

    def sack_blocks(self, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` SACK blocks as (left, right) sequence numbers, in RFC 2018 §4 order."""
        b_start, b_end = self.b_start, self.b_end
        if not b_start:
            return []
        recent = self.recent
        if self.last is not None and (not recent or recent[0] != self.last):
            recent.insert(0, self.last)
            del recent[_RECENT:]
        picked: list[int] = []
        for off in recent:
            i = bisect_right(b_start, off) - 1
            if i >= 0 and off < b_end[i] and i not in picked:
                picked.append(i)
                if len(picked) == n:
                    break
        i = len(b_start) - 1  # room left: the highest blocks not reported yet
        while len(picked) < n and i >= 0:
            if i not in picked:
                picked.append(i)
            i -= 1
        base = self.base
        return [((base + b_start[i]) & 0xFFFFFFFF, (base + b_end[i]) & 0xFFFFFFFF)
                for i in picked]
