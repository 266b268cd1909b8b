"""Free TCP ports on 127.0.0.1 for the local services."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the kernel just handed out; the caller binds it soon after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
