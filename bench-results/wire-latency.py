#!/usr/bin/env python3
"""Small requests' latency as seen on the loopback wire, from a pcap that
bench-results/fairness-wire.sh takes with CAP=1: each request packet to the
server's port is paired with the next reply packet on the same connection.
The time between them is the server's share of the latency (reading the
request, the store, the device, the reply), without the load generator's
own scheduling delays. Connections whose requests name the flood's queue
are left out: their large replies are not captured.

    wire-latency.py <pcap> <server port>
"""
import struct
import sys


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def packets(path):
    with open(path, "rb") as f:
        header = f.read(24)
        nano = struct.unpack("<I", header[:4])[0] == 0xA1B23C4D
        link = struct.unpack("<I", header[20:24])[0]
        skip = {1: 14, 113: 16}.get(link, 0)
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, frac, incl, _ = struct.unpack("<IIII", h)
            data = f.read(incl)
            ip = data[skip:]
            if ip[0] >> 4 != 4:
                continue
            ihl = (ip[0] & 15) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            tcp = ip[ihl:]
            sport, dport = struct.unpack(">HH", tcp[:4])
            payload = tcp[(tcp[12] >> 4) * 4:total - ihl]
            if payload:
                yield sec + frac / (1e9 if nano else 1e6), sport, dport, payload


def main():
    path, port = sys.argv[1], int(sys.argv[2])
    flood, pending, by_kind = set(), {}, {}
    for t, sport, dport, payload in packets(path):
        if dport == port and b"flood" in payload[:20]:
            flood.add(sport)
        if sport in flood or dport in flood:
            continue
        if dport == port:
            pending.setdefault(sport, []).append((t, payload.split(b" ")[0].decode()))
        elif sport == port and pending.get(dport):
            t0, kind = pending[dport].pop(0)
            by_kind.setdefault(kind, []).append((t - t0) * 1000)
    every = [ms for v in by_kind.values() for ms in v]
    for kind, v in [("all", every)] + sorted(by_kind.items()):
        print(f"{kind} n {len(v)} p50 {percentile(v, .5):.2f} p99 {percentile(v, .99):.2f}"
              f" p99.9 {percentile(v, .999):.2f} max {max(v):.2f} ms")


main()
