#!/usr/bin/env python3
"""A learning Ethernet switch over TAP devices that delays, drops and rate-caps frames like tc.

Why: the fault harness (run.sh) impairs links with `tc netem delay 20ms loss 2%` (and caps them
with `tc tbf`), but some kernels are built without sch_netem (CONFIG_NET_SCH_NETEM unset, no
loadable modules). There run.sh joins the hosts with TAP devices served by this switch instead
of veth pairs on a kernel bridge: every frame from one host to another is delayed by DELAY_MS
and dropped with probability LOSS, once, as netem on each host's egress would do.

The TAPs take TSO frames (up to 64 KiB of TCP segments in one frame, with a virtio header in
front saying how to cut it), as the veths of the other backends do, so the switch handles a
bulk transfer 64 KiB at a time rather than one 1500-byte frame at a time: about a fifth of the
CPU per byte. As with netem on a veth, the loss then drops a whole TSO frame at once. Where the kernel
refuses TSO on TAPs, frames are plain Ethernet frames.

With --rate-mbit R, each host's link is also capped at R Mbit/s in both directions, as
`tc tbf rate R burst B latency 50ms` on both ends of its veth would cap it: frames from a host
pass a token bucket for its egress (its input port here), frames to a host one for the switch's
output port to it. Each bucket has a FIFO in front of it holding at most what the bucket lets
through in 50 ms plus its burst (tbf's `limit`); a frame that does not fit is dropped. The
burst B is 1 ms of the rate, at least 72 KiB (run.sh gives tbf the same). Frame sizes count
as tbf counts them: the Ethernet frame without preamble and FCS; a TSO frame counts as the
segments it stands for, each with its own headers.

Usage (run inside the switch's own network namespace):
    switch.py [--rate-mbit R] DELAY_MS LOSS TAP...
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
TUNSETOFFLOAD = 0x400454D0
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
# With --offload every frame starts with a struct virtio_net_hdr: flags, gso_type, hdr_len,
# gso_size, csum_start, csum_offset.
VNET_HDR = struct.Struct("=BBHHHH")
# A TSO frame: 64 KiB of IP packet, its Ethernet header and the virtio header.
MAX_FRAME = 65536 + 14 + VNET_HDR.size + 64
# Frames waiting for their delay to pass, at most this many (a bound on memory: beyond it,
# frames are dropped as a full netem queue would; netem's default limit is 1000).
QUEUE_LIMIT = 10000
# A capped link's queue holds what its rate drains in this long, plus its burst (tbf latency).
SHAPER_LATENCY_S = 0.050
# A capped link's burst: this long at its rate, at least SHAPER_MIN_BURST bytes.
SHAPER_BURST_S = 0.001
SHAPER_MIN_BURST = 73728


class Shaper:
    """A token bucket with a bounded FIFO in front of it: one direction of one capped link."""

    def __init__(self, rate_bytes_per_s):
        self.rate = rate_bytes_per_s
        self.burst = max(rate_bytes_per_s * SHAPER_BURST_S, SHAPER_MIN_BURST)
        self.limit = rate_bytes_per_s * SHAPER_LATENCY_S + self.burst
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.queue = collections.deque()  # (size, item)
        self.queued = 0

    def offer(self, size, item):
        """Queues item (size bytes on the wire); False when the queue is full (dropped)."""
        if self.queued + size > self.limit:
            return False
        self.queue.append((size, item))
        self.queued += size
        return True

    def release(self, now):
        """The items the bucket lets through by now, in order."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        out = []
        # A frame larger than the burst goes once the bucket is full.
        while self.queue and self.tokens >= min(self.queue[0][0], self.burst):
            size, item = self.queue.popleft()
            self.tokens -= size
            self.queued -= size
            out.append(item)
        return out

    def due(self):
        """When the head of the queue can go (monotonic seconds), or None when it is empty."""
        if not self.queue:
            return None
        need = min(self.queue[0][0], self.burst) - self.tokens
        return self.stamp + max(0.0, need) / self.rate


def open_tap(name, offload):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        if offload:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    except OSError:
        os.close(fd)  # the TAP goes with it
        raise
    return fd


def open_taps(names):
    """One TAP per name, all taking TSO frames, or (where the kernel refuses) none; and how
    many bytes of virtio header start each frame."""
    ports = []
    try:
        for name in names:
            ports.append(open_tap(name, True))
        return ports, VNET_HDR.size
    except OSError:
        for fd in ports:
            os.close(fd)
    return [open_tap(name, False) for name in names], 0


def wire_size(frame, skip):
    """The bytes frame takes on the wire: with a virtio header (skip bytes) announcing TSO,
    those of every segment it stands for, each with a copy of the Ethernet, IP and TCP headers."""
    if not skip:
        return len(frame)
    _, gso_type, _, gso_size, _, _ = VNET_HDR.unpack_from(frame)
    eth = skip + 14
    if gso_type == 0 or gso_size == 0 or len(frame) < eth + 40:
        return len(frame) - skip
    if frame[eth] >> 4 == 4:
        ip_len = (frame[eth] & 0x0F) * 4
    else:
        ip_len = 40  # IPv6, no extension headers
    tcp = eth + ip_len
    if len(frame) < tcp + 20:
        return len(frame) - skip
    headers = 14 + ip_len + (frame[tcp + 12] >> 4) * 4
    payload = len(frame) - skip - headers
    segments = max(1, -(-payload // gso_size))
    return payload + segments * headers


def main():
    args = sys.argv[1:]
    rate_mbit = 0.0
    if args[:1] == ["--rate-mbit"] and len(args) >= 2:
        rate_mbit = float(args[1])
        args = args[2:]
    if len(args) < 3:
        sys.exit("usage: switch.py [--rate-mbit R] DELAY_MS LOSS TAP...")
    delay = float(args[0]) / 1000.0
    loss = float(args[1])
    if not (0.0 <= delay <= 10.0 and 0.0 <= loss < 1.0 and 0.0 <= rate_mbit <= 100000.0):
        sys.exit("switch.py: DELAY_MS must be 0..10000, LOSS 0..<1 and R 0..100000")
    ports, skip = open_taps(args[2:])
    # Per port, when capped: the host's egress (frames it sends) and its ingress (frames to it).
    rate = rate_mbit * 1e6 / 8
    egress = [Shaper(rate) for _ in ports] if rate else []
    ingress = [Shaper(rate) for _ in ports] if rate else []
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("ready", flush=True)

    where = {}  # source MAC -> port index
    queue = collections.deque()  # (due, out port index, frame), due non-decreasing
    stats = collections.Counter()
    stdin = sys.stdin.fileno()
    watch = ports + [stdin]

    def write(out, frame):
        try:
            os.write(ports[out], frame)
            stats["delivered"] += 1
        except OSError:
            # EIO: the port's link is down (partitioned); EAGAIN: its queue is full.
            stats["dropped_link"] += 1

    def delay_line(now, outs, frame):
        for out in outs:
            if len(queue) >= QUEUE_LIMIT:
                stats["dropped_queue"] += 1
                continue
            queue.append((now + delay, out, frame))

    while not stop:
        now = time.monotonic()
        for shaper in egress:
            for outs, frame in shaper.release(now):
                delay_line(now, outs, frame)
        while queue and queue[0][0] <= now:
            _, out, frame = queue.popleft()
            if not ingress:
                write(out, frame)
            elif not ingress[out].offer(wire_size(frame, skip), frame):
                stats["dropped_limit"] += 1
        for out, shaper in enumerate(ingress):
            for frame in shaper.release(now):
                write(out, frame)
        wake = [queue[0][0]] if queue else []
        wake += [t for t in (s.due() for s in egress + ingress) if t is not None]
        timeout = max(0.0, min(wake) - now) if wake else 1.0
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
                if len(frame) < skip + 14:
                    continue
                stats["received"] += 1
                where[frame[skip + 6 : skip + 12]] = src
                if random.random() < loss:
                    stats["dropped_loss"] += 1
                    continue
                dst = where.get(frame[skip : skip + 6])
                if dst is None:
                    outs = [i for i in range(len(ports)) if i != src]
                else:
                    outs = [] if dst == src else [dst]
                if not outs:
                    continue
                if not egress:
                    delay_line(now, outs, frame)
                elif not egress[src].offer(wire_size(frame, skip), (outs, frame)):
                    stats["dropped_limit"] += 1
    print("stats " + " ".join(f"{k}={v}" for k, v in sorted(stats.items())), flush=True)


if __name__ == "__main__":
    main()
