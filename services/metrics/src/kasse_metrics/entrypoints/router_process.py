"""The router stage in a process of its own (`KASSE_METRICS_ROUTER_PROCESS`, on by default).

A Python process computes on one core at a time (the GIL). The router (decode, re-key, produce) and the
state stage (apply, checkpoint, publish, serve) shared one event loop and each took about half of its
core; with the router in a child process each stage has a core (bench (c), 1M events on two cores:
33,000 → 54,000 events/s). The router holds no state (it commits its source offsets to Kafka once the
broker acknowledged the routed facts), so only settings, commands and counters cross the boundary:

- the service starts the child and hands it the settings as the first line on its stdin (secrets
  included; not in its arguments or environment, which `ps` and /proc show);
- the child reports its progress every `STATUS_INTERVAL_S` as a JSON line on a pipe of its own (records
  routed, dead letters, positions, lag, "caught up"), which `RouterProcess` mirrors for /readyz, /metrics
  and the tests; the child's logs go where the service's go;
- the pause switch goes down the child's stdin ("pause", "resume"), each acknowledged once done;
- the child stops when its stdin closes or a report finds no reader: when the service stops, and when it
  is killed (the kernel closes a killed process's pipes), so a router never outlives its service (both
  ways are tested: test_router_process.py). A child that dies is
  started again; what it had routed but not committed is routed again, and the state stage skips those
  facts by event id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

from kasse_common.logs import configure_logging
from kasse_common.messaging import EventPublisher, create_broker
from kasse_common.telemetry import setup_telemetry
from kasse_metrics.entrypoints.partition_loop import PartitionLoop
from kasse_metrics.settings import MetricsSettings

log = logging.getLogger(__name__)

#: How often the child reports its progress (the lag /readyz and /metrics show is at most this old).
STATUS_INTERVAL_S = 0.1
#: A child that ended is started again after this long (a bad setting or an absent broker is not a hot loop).
RESTART_DELAY_S = 2.0
#: How long a stopping service waits for its child to commit and leave the group before killing it (the
#: runtime gives a background job 2 s to finish once cancelled).
STOP_TIMEOUT_S = 1.5
#: How long `pause` and `resume` wait for the child's acknowledgement.
COMMAND_TIMEOUT_S = 30.0
_MODULE = "kasse_metrics.entrypoints.router_process"


class RouterProcess(PartitionLoop):
    """The service's side of the child router: starts it (again when it ends), forwards the pause switch,
    and mirrors what the child reports, so it reads like an in-process `RouterConsumer`."""

    label = "router"

    def __init__(self, settings: MetricsSettings) -> None:
        super().__init__()
        self.settings = settings
        self.routed_records_total = 0
        self.dead_lettered = 0
        self.starts = 0  # children started (more than one: a child ended and was replaced)
        self.pid: int | None = None
        self._lag: dict[tuple[str, int], int] = {}
        self._reported = self._named("catching up: its process is starting")
        self._stdin: asyncio.StreamWriter | None = None
        self._acks: dict[str, list[asyncio.Future[None]]] = {}
        # Counts of the current child, which starts from zero: the totals above add what each child adds.
        self._child_counts = (0, 0, 0, 0)

    # -- what the service reads ----------------------------------------------------------------------------

    def caught_up(self) -> str:
        """ "ok" once the child reported its partitions read up to their ends as of assignment; sticky, as the
        in-process router's is (a replaced child catches up again without making the service unready)."""
        if not self._caught_up and self._reported == "ok":
            self._caught_up = True
            log.info("router caught up with its partitions")
        return "ok" if self._caught_up else self._reported

    def lag(self) -> dict[tuple[str, int], int]:
        return dict(self._lag)

    # -- the pause switch ----------------------------------------------------------------------------------

    async def pause(self) -> None:
        """Returns once the child finished the batch in hand and stopped polling (a child started while
        paused starts paused)."""
        self._unpaused.clear()  # the switch's state (PartitionLoop's), told to every child started later
        await self._command("pause")

    async def resume(self) -> None:
        self._unpaused.set()
        await self._command("resume")

    async def _command(self, command: str) -> None:
        stdin = self._stdin
        if stdin is None:
            return  # no child now: the next one is told at its start
        done = asyncio.get_running_loop().create_future()
        self._acks.setdefault(command, []).append(done)
        stdin.write(command.encode() + b"\n")
        await stdin.drain()
        await asyncio.wait_for(done, COMMAND_TIMEOUT_S)

    # -- the child's lifetime ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep a child running until cancelled."""
        while True:
            try:
                await self._run_child()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("router process failed")
            await asyncio.sleep(RESTART_DELAY_S)

    async def _run_child(self) -> None:
        loop = asyncio.get_running_loop()
        status_read, status_write = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                _MODULE,
                str(status_write),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(status_write,),
            )
        except BaseException:
            os.close(status_read)
            raise
        finally:
            os.close(status_write)  # the child's copy is the only writer: its end closes the pipe
        reports = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reports), os.fdopen(status_read, "rb", buffering=0)
        )
        self.starts += 1
        self.pid = process.pid
        self._child_counts = (0, 0, 0, 0)
        assert process.stdin is not None
        try:
            first = {"settings": self.settings.revealed(), "paused": not self._unpaused.is_set()}
            process.stdin.write(json.dumps(first).encode() + b"\n")
            await process.stdin.drain()
            self._stdin = process.stdin
            log.info("router process started", extra={"pid": process.pid})
            while line := await reports.readline():
                self._on_report(json.loads(line))
            code = await process.wait()
            log.error("router process ended (exit code %s); starting another", code, extra={"pid": process.pid})
        finally:
            self._stdin = None
            transport.close()
            for waiting in self._acks.values():
                for done in waiting:
                    if not done.done():
                        done.set_result(None)  # the next child starts in the state the switch asks for
            self._acks.clear()
            # The lag stays as last reported until the next child reports (the restarts counter says why it
            # does not move), rather than vanishing from /metrics while no router runs.
            if process.returncode is None:
                await asyncio.shield(_stop(process))

    def _on_report(self, report: dict[str, Any]) -> None:
        ack = report.get("ack")
        if ack is not None:
            waiting = self._acks.get(ack)
            if waiting:
                done = waiting.pop(0)
                if not done.done():
                    done.set_result(None)
            return
        counts = (report["records"], report["facts"], report["routed_records"], report["dead_lettered"])
        before, self._child_counts = self._child_counts, counts
        records, facts, routed, dead = (now - then for now, then in zip(counts, before, strict=True))
        self.records_total += records
        self.facts_total += facts
        self.routed_records_total += routed
        self.dead_lettered += dead
        if records:
            self._count(records)
        self.next_offsets = {(t, p): o for t, p, o in report["next_offsets"]}
        self._lag = {(t, p): n for t, p, n in report["lag"]}
        self._reported = report["caught_up"]


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Close its stdin (it commits what it routed and leaves the group), then kill it if it is still there."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        log.warning("router process did not stop in time; killed", extra={"pid": process.pid})
        process.kill()
        await process.wait()


# -- the child -------------------------------------------------------------------------------------------------


async def _child(status_fd: int) -> None:
    from kasse_metrics.entrypoints.router import build_router_consumer

    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    first = await commands.readline()
    if not first:
        return  # the service went away before it said anything
    start = json.loads(first)
    settings = MetricsSettings(**start["settings"])
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    telemetry = setup_telemetry(settings.service_name)
    broker = create_broker(settings, telemetry.tracer_provider, telemetry.meter(f"kasse.{settings.service_name}"))
    router = build_router_consumer(settings, EventPublisher(broker, settings), telemetry.tracer("kasse.metrics"))
    if start["paused"]:
        await router.pause()  # no consumer yet: the loop waits before its first poll

    def send(report: dict[str, Any]) -> None:
        os.write(status_fd, json.dumps(report).encode() + b"\n")

    async def report_progress() -> None:
        while True:
            send(
                {
                    "records": router.records_total,
                    "facts": router.facts_total,
                    "routed_records": router.routed_records_total,
                    "dead_lettered": router.dead_lettered,
                    "next_offsets": [[t, p, o] for (t, p), o in router.next_offsets.items()],
                    "lag": [[t, p, n] for (t, p), n in router.lag().items()],
                    "caught_up": router.caught_up(),
                }
            )
            await asyncio.sleep(STATUS_INTERVAL_S)

    async def obey() -> None:
        """The switch's commands, until stdin closes (the service stopped or died)."""
        while line := await commands.readline():
            command = line.strip().decode()
            if command == "pause":
                await router.pause()
            elif command == "resume":
                await router.resume()
            else:
                log.error("router process: unknown command %r", command[:100])
                continue
            send({"ack": command})

    await broker.start()
    routing = asyncio.create_task(router.run(), name="router")
    reporting = asyncio.create_task(report_progress(), name="router-progress")
    obeying = asyncio.create_task(obey(), name="router-commands")
    terminated = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, terminated.set)
    loop.add_signal_handler(signal.SIGINT, terminated.set)
    stop_waiting = asyncio.create_task(terminated.wait())
    try:
        await asyncio.wait({obeying, routing, reporting, stop_waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (obeying, reporting, stop_waiting, routing):
            task.cancel()
        # The router commits what was acknowledged and leaves the group (bounded: the service kills a child
        # that takes longer than STOP_TIMEOUT_S).
        await asyncio.gather(routing, reporting, obeying, stop_waiting, return_exceptions=True)
        for task in (routing, reporting, obeying):
            if not task.cancelled() and task.exception() is not None:
                log.error("router process: %s ended", task.get_name(), exc_info=task.exception())
        await broker.stop()
        telemetry.tracer_provider.force_flush()


def main() -> None:
    status_fd = int(sys.argv[1])
    try:
        asyncio.run(_child(status_fd))
    except BrokenPipeError:
        pass  # the service is gone: nobody to report to


if __name__ == "__main__":
    main()
