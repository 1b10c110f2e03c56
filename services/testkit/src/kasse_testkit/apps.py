"""Run a service in-process (its FastAPI lifespan and an httpx client, or served over HTTP on a free
port for a browser or another process) or as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI

from kasse_testkit.waiting import wait_until


@asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan (broker, relay, consumers) and yield a client bound to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def served(
    app: Any, *, lifespan: Literal["auto", "on", "off"] = "on", start_timeout: float = 90
) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn in this event loop on a free 127.0.0.1 port; yields its base URL.
    For a client that must reach it over the network (a browser, a service process); a test's own calls
    need only `running_app`. The start timeout is generous: a loaded machine starts a lifespan slowly."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning", lifespan=lifespan)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), timeout=start_timeout, message="uvicorn started")
        if not server.started:
            await task  # raises what stopped it
            raise RuntimeError("uvicorn stopped before it started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


class ServiceProcess:
    """A service (or any command) as a separate OS process, ready when /readyz answers 200."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        port: int | None = None,
        log_path: Path | None = None,
        ready_path: str = "/readyz",
    ) -> None:
        self.args = list(args)
        # The harness runs services in the development profile unless a test says otherwise (`env`).
        # Abuse limits off too (every test client is 127.0.0.1) unless the test sets them.
        self.env = {**os.environ, "KASSE_PROFILE": "development", "KASSE_RATE_LIMITS_ENABLED": "false", **env}
        self.port = port
        self.ready_path = ready_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 60.0) -> ServiceProcess:
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if self.port is not None:
            await wait_until(self._ready, timeout=timeout, interval=0.2, message=self._why_not_ready)
        return self

    async def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"process exited with {self.process.returncode}: {self._why_not_ready()}")
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                r = await client.get(self.base_url + self.ready_path)
                return r.status_code == 200
        except httpx.HTTPError:
            return False

    def _why_not_ready(self) -> str:
        if self.log_path and self.log_path.exists():
            return f"{self.args[-1]} log tail:\n" + self.log_path.read_text(errors="replace")[-3000:]
        return f"{self.args} not ready"

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed, nothing committed."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM: the graceful path."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        return self.process.returncode

    async def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, timeout)


def python_module_args(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
