"""Free loopback ports for the control plane, chosen outside the kernel's ephemeral range.

Why not ``bind(0)``: the kernel hands out ports from the ephemeral range, the same range it
uses for outgoing connections, so between "pick" and "the server binds it" a client socket
(e.g. the API server's own connections to etcd) can take the port. Picking below that range
makes such a race practically impossible, and the pick is checked by binding before use.
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

DEFAULT_RANGE = (20000, 32767)


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux default when unreadable)."""
    try:
        low, high = (int(x) for x in path.read_text().split()[:2])
    except (OSError, ValueError):
        return (32768, 60999)
    return (low, high)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could bind *port* now (SO_REUSEADDR, as Go servers do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_is_listening(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on *port*."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def pick_ports(
    count: int,
    *,
    port_range: tuple[int, int] = DEFAULT_RANGE,
    avoid: Iterable[int] = (),
    rng: random.Random | None = None,
    is_free: Callable[[int], bool] = port_is_free,
) -> list[int]:
    """*count* distinct free ports from *port_range*, skipping the ephemeral range and *avoid*."""
    low, high = port_range
    eph_low, eph_high = ephemeral_range()
    excluded = set(avoid)
    candidates = [p for p in range(low, high + 1) if not eph_low <= p <= eph_high and p not in excluded]
    (rng or random.Random()).shuffle(candidates)
    picked: list[int] = []
    for port in candidates:
        if is_free(port):
            picked.append(port)
            if len(picked) == count:
                return picked
    raise RuntimeError(f"could not find {count} free ports in {low}-{high}")
