"""The UDP layer (RFC 768): ports, demultiplexing to sockets, output, errors."""

from __future__ import annotations

import errno
import random
from collections import Counter

from hilkit.stack import icmp4, ipv4, udp
from hilkit.stack.addr import ANY, BROADCAST, int_to_ip, is_multicast
from hilkit.stack.events import SocketEvent
from hilkit.stack.faults import Callbacks
from hilkit.stack.icmp_layer import IcmpLayer
from hilkit.stack.ip_layer import Ipv4Layer
from hilkit.stack.netif import Buffer
from hilkit.stack.udp_socket import UdpSocket


class UdpLayer:
    def __init__(self, ip: Ipv4Layer, icmp: IcmpLayer, stats: Counter[str],
                 drops: Counter[str], callbacks: Callbacks, rng: random.Random) -> None:
        self.ip = ip
        self.ports: dict[int, list[UdpSocket]] = {}  # bound sockets by local port
        self._icmp = icmp
        self._stats = stats
        self._drops = drops
        self._callbacks = callbacks
        self._rng = rng
        ip.register(ipv4.PROTO_UDP, self.input, self._error)

    # -- ports ---------------------------------------------------------------------
    def bind(self, sock: UdpSocket, addr: int, port: int) -> None:
        if addr not in (ANY, BROADCAST) and not self.ip.is_local(addr):
            raise OSError(errno.EADDRNOTAVAIL, f"{int_to_ip(addr)} is not a local address")
        if port == 0:
            port = self._ephemeral_port()
        if not 0 < port <= 0xFFFF:
            raise OSError(errno.EINVAL, f"bad port {port}")
        for other in self.ports.get(port, []):
            if other.local and (other.local[0] in (ANY, addr) or addr == ANY):
                raise OSError(errno.EADDRINUSE, f"UDP port {port} is in use")
        sock.local = (addr, port)
        self.ports.setdefault(port, []).append(sock)

    def unbind(self, sock: UdpSocket) -> None:
        if sock.local is None:
            return
        socks = self.ports.get(sock.local[1], [])
        if sock in socks:
            socks.remove(sock)
        if not socks:
            self.ports.pop(sock.local[1], None)

    def _ephemeral_port(self) -> int:
        """A random free port from the dynamic range (RFC 6056 §3.3.1)."""
        span = udp.EPHEMERAL_LAST - udp.EPHEMERAL_FIRST + 1
        start = self._rng.randrange(span)
        for i in range(span):
            port = udp.EPHEMERAL_FIRST + (start + i) % span
            if port not in self.ports:
                return port
        raise OSError(errno.EADDRNOTAVAIL, "no free UDP port")

    def close_all(self) -> None:
        """Close every socket (``Stack.close``)."""
        for s in [s for socks in self.ports.values() for s in socks]:
            s.close()

    # -- output --------------------------------------------------------------------
    def output(self, laddr: int, lport: int, dst: int, dport: int, data: Buffer) -> None:
        if dst == ANY:  # "this host" as a source only (RFC 1122 §3.2.1.3): never on a wire
            raise OSError(errno.EINVAL, "cannot send to 0.0.0.0")
        routed = self.ip.source_for(dst)
        if routed[0] is None:
            raise OSError(errno.ENETUNREACH, f"no route to {int_to_ip(dst)}")
        src = laddr if laddr not in (ANY, BROADCAST) else routed[1]
        hdr = udp.header(src, lport, dst, dport, data)
        err = self.ip.output(dst, ipv4.PROTO_UDP, [hdr, data], src=src, routed=routed)
        if err:
            raise OSError(err, f"cannot send to {int_to_ip(dst)}")

    # -- input ---------------------------------------------------------------------
    def lookup(self, dst: int, dport: int, src: int, sport: int) -> UdpSocket | None:
        """The socket a datagram goes to: the most specific match (address, then peer)."""
        best, best_score = None, -1
        for s in self.ports.get(dport, []):
            assert s.local is not None
            if s.local[0] not in (ANY, dst):
                continue
            score = 1 if s.local[0] == dst else 0
            if s.remote is not None:
                if s.remote != (src, sport):
                    continue
                score += 2
            if score > best_score:
                best, best_score = s, score
        return best

    def input(self, h: ipv4.Header, hbytes: Buffer, seg: memoryview, bcast: bool) -> None:
        r = udp.parse(seg, h.src, h.dst, h.csum_checked)
        if isinstance(r, str):
            self._drops[r] += 1
            return
        sport, dport, payload = r
        sock = self.lookup(h.dst, dport, h.src, sport)
        if sock is None:
            self._stats["udp.no_socket"] += 1
            self._icmp.error(h, hbytes, seg, bcast, icmp4.TYPE_DEST_UNREACH,
                             icmp4.CODE_PORT_UNREACH)
        elif not sock.deliver(payload, h.src, sport, h.dst, bcast or is_multicast(h.dst)):
            self._drops["udp.rcvbuf_full"] += 1
        else:
            self._stats["udp.datagrams_in"] += 1
            self._callbacks.notify(sock, SocketEvent.RD)

    def _error(self, err: int, src: int, dst: int, transport: memoryview) -> None:
        sport = int.from_bytes(transport[0:2], "big")
        dport = int.from_bytes(transport[2:4], "big")
        for s in self.ports.get(sport, []):
            if s.remote == (dst, dport):  # only connected sockets hear errors, as on Linux
                s.error = err
                self._callbacks.notify(s, SocketEvent.ERR)
                return
        self._stats["udp.error_for_unconnected"] += 1
