"""The webhooks service for the API fuzzer, kept off the name resolver.

The fuzzer registers endpoints with made-up host names, and registering one resolves its host (the SSRF
check). Here a name other than localhost is unknown without asking DNS, so a fuzzing run sends no query
off this machine; addresses written as numbers resolve as usual (no lookup). Everything else is the
real service: `kasse_webhooks.main.run`.
"""

from __future__ import annotations

import socket
from typing import Any

_getaddrinfo = socket.getaddrinfo


def local_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is None or name == "localhost":
        return _getaddrinfo(host, port, *args, **kwargs)
    try:
        return _getaddrinfo(host, port, *args, **{**kwargs, "flags": kwargs.get("flags", 0) | socket.AI_NUMERICHOST})
    except socket.gaierror:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (offline test run)") from None


if __name__ == "__main__":
    socket.getaddrinfo = local_getaddrinfo
    from kasse_webhooks.main import run

    run()
