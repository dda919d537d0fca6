#!/usr/bin/env python3
"""A learning Ethernet switch over TAP devices that delays and drops frames like tc netem.

Why: the fault harness (run.sh) impairs links with `tc netem delay 20ms loss 2%`, but some
kernels are built without sch_netem (CONFIG_NET_SCH_NETEM unset, no loadable modules). There
run.sh joins the hosts with TAP devices served by this switch instead of veth pairs on a
kernel bridge: every frame from one host to another is delayed by DELAY_MS and dropped with
probability LOSS, once, as netem on each host's egress would do.

Usage (run inside the switch's own network namespace):
    switch.py DELAY_MS LOSS TAP...
It creates one TAP device per name in the current namespace, prints `ready` on stdout once
they exist (run.sh then moves each into its host's namespace; the descriptors stay attached),
and forwards frames until stdin closes or it is signalled. Frames to a port whose link is
down (a partitioned host) are dropped. On exit it prints `stats` with frame counts.
"""

import collections
import fcntl
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_FRAME = 65536
# Frames waiting for their delay to pass, at most this many (a bound on memory: beyond it,
# frames are dropped as a full netem queue would; netem's default limit is 1000).
QUEUE_LIMIT = 10000


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: switch.py DELAY_MS LOSS TAP...")
    delay = float(sys.argv[1]) / 1000.0
    loss = float(sys.argv[2])
    if not (0.0 <= delay <= 10.0 and 0.0 <= loss < 1.0):
        sys.exit("switch.py: DELAY_MS must be 0..10000 and LOSS 0..<1")
    ports = [open_tap(name) for name in sys.argv[3:]]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("ready", flush=True)

    where = {}  # source MAC -> port index
    queue = collections.deque()  # (due, out port index, frame), due non-decreasing
    stats = collections.Counter()
    stdin = sys.stdin.fileno()
    watch = ports + [stdin]
    while not stop:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, out, frame = queue.popleft()
            try:
                os.write(ports[out], frame)
                stats["delivered"] += 1
            except OSError:
                # EIO: the port's link is down (partitioned); EAGAIN: its queue is full.
                stats["dropped_link"] += 1
        timeout = max(0.0, queue[0][0] - now) if queue else 1.0
        try:
            ready, _, _ = select.select(watch, [], [], timeout)
        except InterruptedError:
            continue
        if stdin in ready and not os.read(stdin, 4096):
            break
        now = time.monotonic()
        for fd in ready:
            if fd == stdin:
                continue
            src = ports.index(fd)
            # Drain what is there now, boundedly, so one busy port cannot starve the others.
            for _ in range(64):
                try:
                    frame = os.read(fd, MAX_FRAME)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if len(frame) < 14:
                    continue
                stats["received"] += 1
                where[frame[6:12]] = src
                if random.random() < loss:
                    stats["dropped_loss"] += 1
                    continue
                dst = where.get(frame[0:6])
                if dst is None:
                    outs = [i for i in range(len(ports)) if i != src]
                else:
                    outs = [] if dst == src else [dst]
                for out in outs:
                    if len(queue) >= QUEUE_LIMIT:
                        stats["dropped_queue"] += 1
                        continue
                    queue.append((now + delay, out, frame))
    print("stats " + " ".join(f"{k}={v}" for k, v in sorted(stats.items())), flush=True)


if __name__ == "__main__":
    main()
