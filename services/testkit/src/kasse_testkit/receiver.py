"""A webhook receiver on 127.0.0.1 whose behaviour a test sets: answer 2xx, 500, 503 with Retry-After,
hang (time out), close the connection, answer slowly. Minimal HTTP/1.1 on asyncio streams, so that
"close the connection without answering" is really that. Verifies Standard Webhooks signatures with
the `standardwebhooks` library when given the secret(s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int | None  # the status we answered, None when we hung or closed
    received_at: float  # time.time()
    verified: bool | None = None  # against the receiver's secrets; None when it has none

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    mode: str = "ok"  # ok | error | unavailable | redirect | hang | close | slow
    slow_s: float = 0.5
    retry_after: str = "120"
    secrets: list[str] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _hung: list[asyncio.StreamWriter] = field(default_factory=list)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/kasse"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        for writer in self._hung:
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    def delivered(self) -> list[Received]:
        """The requests we answered with 2xx, in arrival order."""
        return [r for r in self.requests if r.answered is not None and 200 <= r.answered < 300]

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                return True
            except WebhookVerificationError:
                continue
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._answer(headers, body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if writer not in self._hung:
                writer.close()

    async def _answer(self, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
        mode = self.mode
        verified = self.verify(headers, body) if self.secrets else None
        status = {"ok": 200, "slow": 200, "error": 500, "unavailable": 503, "redirect": 302}.get(mode)
        self.requests.append(Received(headers, body, status, time.time(), verified))
        if mode == "hang":
            self._hung.append(writer)
            await self._release.wait()
            return False
        if mode == "close":
            writer.transport.abort()
            return False
        if mode == "slow":
            await asyncio.sleep(self.slow_s)  # the receiver's behaviour under test, not a test waiting
        text = {200: "OK", 302: "Found", 500: "Internal Server Error", 503: "Service Unavailable"}[status or 200]
        payload = b'{"received": true}' if status == 200 else b"x" * 5000  # a long error page
        extra = f"Retry-After: {self.retry_after}\r\n" if status == 503 else ""
        if status == 302:
            extra = f"Location: http://127.0.0.1:{self.port}/elsewhere\r\n"
        head = f"HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\nContent-Length: {len(payload)}\r\n{extra}\r\n"
        writer.write(head.encode() + payload)
        await writer.drain()
        return True
