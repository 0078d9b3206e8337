#!/usr/bin/env python3
"""picoTCP's README ping example, in hilkit.

Prepare the wire as that README does (inside a network namespace: `invoke
demo` does all of it):

    ip tuntap add dev tap0 mode tap
    ip addr add 192.168.5.5/24 dev tap0
    ip link set tap0 up

then run this; hilkit takes 192.168.5.4 and pings the kernel ten times.
"""

import sys

from hilkit.drivers.tap import TapDevice
from hilkit.stack import PingStats, Stack

NUM_PING = 10

finished = False
failed = False


def cb_ping(s: PingStats) -> None:
    """Called once per echo request, as picoTCP's ``cb_ping``."""
    global finished, failed
    if finished:  # several results can arrive in one tick; stop at the first error
        return
    if s.err == 0:
        print(f"{s.size} bytes from {s.dst}: icmp_req={s.seq} ttl={s.ttl} time={s.time:.3f} ms")
        if s.seq >= NUM_PING:
            finished = True
    else:
        print(f"PING {s.seq} to {s.dst}: Error {int(s.err)}")
        finished = failed = True


def main() -> int:
    stack = Stack()  # pico_stack_init()
    dev = stack.add_device(TapDevice("tap0", create=False))  # pico_tap_create("tap0")
    stack.link_add(dev, "192.168.5.4", "255.255.255.0")  # pico_ipv4_link_add()

    print("starting ping")
    stack.ping("192.168.5.5", NUM_PING, 1000, 10000, 64, cb_ping)  # pico_icmp4_ping()

    # picoTCP's loop is `while (!finished) { usleep(1000); pico_stack_tick(); }`;
    # run() ticks too, but sleeps on the TAP's descriptor until a frame or a timer is due.
    stack.run(until=lambda: finished)
    print("finished !")
    stack.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
