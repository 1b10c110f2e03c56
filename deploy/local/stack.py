#!/usr/bin/env python3
"""Kasse local stack: Kafka, a MongoDB-protocol store and stripe-mock as plain processes, no Docker.

Usage (stdlib only, Python 3.11+)::

    python3 deploy/local/stack.py start [PART ...] [--quiet]   # provision what is missing, start, wait
    python3 deploy/local/stack.py status [--json]              # exit 0 if every part answers, 3 otherwise
    python3 deploy/local/stack.py logs [PART] [-n N] [-f]
    python3 deploy/local/stack.py stop [PART ...] [--purge]    # --purge also deletes the data dirs
    python3 deploy/local/stack.py provision [PART ...]         # download/build only
    eval "$(python3 deploy/local/stack.py env)"                # KASSE_KAFKA_BOOTSTRAP, KASSE_MONGO_URI, ...

PART is ``kafka``, ``ferretdb`` (alias ``mongo``) or ``stripe-mock`` (alias ``stripe``).

From Python (the test harness)::

    spec = importlib.util.spec_from_file_location("kasse_stack", "deploy/local/stack.py")
    stack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stack)               # works without a sys.modules entry (hence no
                                                 # `from __future__ import annotations` in this file)
    env = stack.start(quiet=True)                # {"KASSE_KAFKA_BOOTSTRAP": "127.0.0.1:19092", ...}
    stack.status()                               # {"kafka": PartStatus(...), ...}
    stack.stop()

Everything listens on 127.0.0.1 only. Everything downloaded, built or written lives under ``$KASSE_HOME``,
else ``<repo>/.kasse/`` (git-ignored)::

    bin/ferretdb  bin/stripe-mock        built Go binaries
    kafka/lib/*.jar                      the broker's classpath, from Maven Central
    kafka/{pom.xml,log4j2.properties,server.properties}   rendered from deploy/local/kafka/
    kafka/data/                          KRaft metadata + topic logs (formatted once)
    ferretdb/data/  ferretdb/state/      SQLite files, FerretDB's state.json
    logs/<part>.log  logs/provision.log  run/<part>.pid  stamps/<part>

Ports (all overridable by environment variable)::

    KASSE_STACK_KAFKA_PORT              19092  Kafka PLAINTEXT listener (the bootstrap address)
    KASSE_STACK_KAFKA_CONTROLLER_PORT   19093  KRaft controller listener
    KASSE_STACK_FERRETDB_PORT           37017  MongoDB wire protocol
    KASSE_STACK_FERRETDB_DEBUG_PORT     unset  FerretDB's metrics/pprof HTTP listener; off unless set
    KASSE_STACK_STRIPE_PORT             12111  stripe-mock HTTP
    KASSE_STACK_STRIPE_HTTPS_PORT       12112  stripe-mock HTTPS
    KASSE_STACK_KAFKA_HEAP              1g     broker -Xmx
    KASSE_STACK_START_TIMEOUT           90     seconds to wait for each part to answer

How each part is obtained, and why this way
-------------------------------------------
* Kafka 4.1.1: no tarball download is possible here (only package registries are reachable), so the broker
  is assembled from Maven Central: ``mvn dependency:copy-dependencies`` on ``kafka/pom.xml`` copies
  ``kafka_2.13`` and its runtime dependencies into ``kafka/lib``, plus log4j2 as the logging backend. The
  POM pins ``slf4j-api`` 2.0.x because Kafka's own POM brings slf4j 1.7, which ``log4j-slf4j2-impl`` cannot
  bind to. The data dir is formatted once (``kafka.tools.StorageTool format`` when it has no
  ``meta.properties``) with a cluster id made here the way Kafka's ``Uuid.randomUuid`` makes them, then
  ``java -cp 'lib/*' kafka.Kafka server.properties`` runs a combined broker+controller (KRaft, one node).
  Ready means: the broker logged "Kafka Server started" and answers a real ApiVersions request.
* FerretDB v1.24.2 (SQLite backend) stands in for MongoDB. ``go install ...@v1.24.2`` does NOT work here:
  go install asks the proxy for the module's ``@v/list`` (deprecation/retraction check) and that request is
  refused. Building straight from the read-only module cache does not work either: the binary then panics
  at start with "Invalid build/version/version.txt", because FerretDB embeds ``build/version/*.txt`` and
  only ``mongodb.txt`` is in the released module. So: ``go mod download -json`` gives the module's ``Dir``,
  it is copied to a writable dir under the cache, ``build/version/version.txt`` gets the version, and
  ``go build -trimpath ./cmd/ferretdb`` builds it (about 70 s cold). Its debug HTTP listener (which would
  default to 127.0.0.1:8088 and clash between two stacks) is off (``--debug-addr=-``) unless asked for.
  Ready means: it answers a MongoDB ``hello`` (OP_MSG) with ok: 1.
* stripe-mock v0.203.0: ``GOBIN=<cache>/bin go install github.com/stripe/stripe-mock@v0.203.0`` works.
  Ready means: ``GET /v1/customers`` with ``Authorization: Bearer sk_test_123`` returns 200.

The Go caches (GOPATH, GOMODCACHE, GOCACHE) are left where ``go env`` has them, so modules and compiled
packages are shared with the rest of the machine.

Processes are started detached (own session), their pids kept in ``run/``; ``stop`` only signals a pid whose
``/proc/<pid>/cmdline`` is still the command this script launched. A port already answering the right protocol
from a process this script did not start (another copy of the stack) is used as is and reported as external;
a port held by anything else is an error naming the process.
"""

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import string
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
TEMPLATES = HERE / "kafka"

HOST = "127.0.0.1"
KAFKA_VERSION = "4.1.1"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION = "v1.24.2"
# FerretDB v1's SQLite handler applies updates as read, modify in Go, write back, outside one
# transaction (FerretDB issues #3017 and #3040): two concurrent conditional updates of a document can
# both succeed (measured here: 50 concurrent `$inc` with a `$gte` guard on stock 10 matched 36 and left
# 3). MongoDB makes every single-document write atomic and Kasse relies on that (stock reservations,
# outbox leases), so the local build serializes FerretDB's write commands with one mutex.
FERRETDB_PATCH = Path(__file__).resolve().parent / "ferretdb" / "kasse_write_lock.go"
FERRETDB_LOCKED_COMMANDS = ("MsgUpdate", "MsgFindAndModify", "MsgDelete", "MsgInsert")
# FerretDB v1's SQLite backend narrows a query to one row only when the filter is exactly {_id: v};
# any other condition next to it ({_id, _version} of every optimistic write, the outbox's claims)
# read and decoded the whole collection, under the write lock above: every write got slower as the
# shop grew (issue 12). The local build pushes {_id: <string|ObjectId>} down whatever else the
# filter holds; the handlers still apply the whole filter in Go afterwards, so results are unchanged.
FERRETDB_ID_PUSHDOWN = ("if params.Filter.Len() == 1 {", "if params.Filter.Len() >= 1 {")
# ... and that one row was still found by reading the whole table: every collection has a unique index
# on `_ferretdb_sjson->"_id"`, but the pushed-down query, update and delete compare
# `_ferretdb_sjson->'$._id'`, a different expression to SQLite's planner (EXPLAIN QUERY PLAN: SCAN, not
# SEARCH ... USING INDEX), so each decoded the JSON of every document. In the metrics bench FerretDB spent
# ~70 % of its CPU there and took ~120 ms per update of a 4,000-document collection. `->'_id'` is the same
# value (SQLite reads a label without `$` as `$.label`) and matches the index.
FERRETDB_ID_INDEX = ("IDColumn = DefaultColumn + \"->'$._id'\"", "IDColumn = DefaultColumn + \"->'_id'\"")
STRIPE_MOCK_MODULE = "github.com/stripe/stripe-mock"
STRIPE_MOCK_VERSION = "v0.203.0"
STRIPE_TEST_KEY = "sk_test_123"

PARTS: tuple[str, ...] = ("kafka", "ferretdb", "stripe-mock")
ALIASES = {"mongo": "ferretdb", "mongodb": "ferretdb", "ferret": "ferretdb", "stripe": "stripe-mock"}

EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3

INSTALL_HINTS = {
    "java": "install a Java 17+ runtime, e.g. `apt-get install openjdk-17-jre-headless`",
    "mvn": "install Maven, e.g. `apt-get install maven` (it also needs a JDK/JRE)",
    "go": (
        "install Go >= 1.21: `deploy/tools/bootstrap.sh --for up` puts the pinned one in .kasse/bin (add it to "
        "PATH; make does); FerretDB asks for Go 1.24, which Go >= 1.21 fetches by itself (GOTOOLCHAIN=auto)"
    ),
}
ALL_TOOLS_HINT = "`apt-get install openjdk-17-jre-headless maven golang`"


def _patch_ferretdb_write_lock(src: Path) -> None:
    handler = src / "internal" / "handler"
    shutil.copyfile(FERRETDB_PATCH, handler / FERRETDB_PATCH.name)
    for command in FERRETDB_LOCKED_COMMANDS:
        path = handler / f"msg_{command[3:].lower()}.go"
        text = path.read_text()
        signature = f"func (h *Handler) {command}("
        start = text.find(signature)
        if start < 0:
            raise StackError(f"ferretdb: cannot patch {path.name}: {signature} not found")
        body = text.index("{\n", start) + 2
        path.write_text(text[:body] + "\tkasseWriteMu.Lock()\n\tdefer kasseWriteMu.Unlock()\n\n" + text[body:])


def _patch_ferretdb_id_pushdown(src: Path) -> None:
    path = src / "internal" / "backends" / "sqlite" / "collection.go"
    old, new = FERRETDB_ID_PUSHDOWN
    text = path.read_text()
    if text.count(old) != 2:  # Query and Explain
        raise StackError(f"ferretdb: cannot patch {path.name}: {old!r} not found twice")
    path.write_text(text.replace(old, new))


def _patch_ferretdb_id_index(src: Path) -> None:
    path = src / "internal" / "backends" / "sqlite" / "metadata" / "metadata.go"
    old, new = FERRETDB_ID_INDEX
    text = path.read_text()
    if text.count(old) != 1:
        raise StackError(f"ferretdb: cannot patch {path.name}: {old!r} not found once")
    path.write_text(text.replace(old, new))


class StackError(RuntimeError):
    """A part could not be provisioned, started or stopped; the message says which and why."""


# --------------------------------------------------------------------------------------------- config


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a number") from None
    if not 0 < value < 65536:
        raise StackError(f"{name}={value} is not a valid TCP port")
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Where the stack lives and which ports it uses; see the module docstring for the variables."""

    home: Path
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    ferretdb_port: int = 37017
    ferretdb_debug_port: int | None = None
    stripe_port: int = 12111
    stripe_https_port: int = 12112
    kafka_heap: str = "1g"
    start_timeout: float = 90.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Config":
        env = os.environ if environ is None else environ
        home = Path(env.get("KASSE_HOME") or REPO_ROOT / ".kasse").expanduser().resolve()
        debug = env.get("KASSE_STACK_FERRETDB_DEBUG_PORT", "").strip()
        timeout = env.get("KASSE_STACK_START_TIMEOUT", "").strip()
        try:
            start_timeout = float(timeout) if timeout else 90.0
        except ValueError:
            raise StackError(f"KASSE_STACK_START_TIMEOUT={timeout!r} is not a number") from None
        return cls(
            home=home,
            kafka_port=_env_int(env, "KASSE_STACK_KAFKA_PORT", 19092),
            kafka_controller_port=_env_int(env, "KASSE_STACK_KAFKA_CONTROLLER_PORT", 19093),
            ferretdb_port=_env_int(env, "KASSE_STACK_FERRETDB_PORT", 37017),
            ferretdb_debug_port=_env_int(env, "KASSE_STACK_FERRETDB_DEBUG_PORT", 0) if debug else None,
            stripe_port=_env_int(env, "KASSE_STACK_STRIPE_PORT", 12111),
            stripe_https_port=_env_int(env, "KASSE_STACK_STRIPE_HTTPS_PORT", 12112),
            kafka_heap=env.get("KASSE_STACK_KAFKA_HEAP", "").strip() or "1g",
            start_timeout=start_timeout,
        )

    @property
    def bin_dir(self) -> Path:
        return self.home / "bin"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def stamps_dir(self) -> Path:
        return self.home / "stamps"

    def endpoints(self) -> dict[str, str]:
        """The environment the services and tests read to find the stack."""
        return {
            "KASSE_KAFKA_BOOTSTRAP": f"{HOST}:{self.kafka_port}",
            "KASSE_MONGO_URI": f"mongodb://{HOST}:{self.ferretdb_port}/",
            "KASSE_STRIPE_API_BASE": f"http://{HOST}:{self.stripe_port}",
        }


# ------------------------------------------------------------------------------------------- progress


class Reporter:
    """Prints what is happening, with the time elapsed since the command began."""

    def __init__(self, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stdout
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, part: str, message: str) -> None:
        if not self.quiet:
            print(f"[{self.elapsed():6.1f}s] {part:<11} {message}", file=self.stream, flush=True)

    def raw(self, line: str) -> None:
        if not self.quiet:
            print(f"             | {line.rstrip()}", file=self.stream, flush=True)


# ------------------------------------------------------------------------------------ process helpers


def _read_cmdline(pid: int) -> list[str] | None:
    """The argv of a live, non-zombie process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat_line = fh.read().decode(errors="replace")
        if stat_line[stat_line.rindex(")") + 2 :].startswith("Z"):
            return None
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError, ValueError, PermissionError):
        return None
    if not raw:
        return None
    return [arg.decode(errors="replace") for arg in raw.rstrip(b"\0").split(b"\0")]


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child (start() and stop() in one Python process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    _reap(pid)
    return _read_cmdline(pid) is not None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def port_owner(port: int) -> tuple[int, list[str]] | None:
    """(pid, argv) of the process listening on ``port``, if /proc lets us see it."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        cmd = _read_cmdline(int(proc.name)) or ["?"]
                        return int(proc.name), cmd
        except OSError:
            continue
    return None


def port_in_use(port: int) -> bool:
    """True if something accepts connections on, or has bound, HOST:port."""
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    if _listening_inodes(port):
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def _describe_owner(port: int) -> str:
    owner = port_owner(port)
    if owner is None:
        return "an unknown process"
    pid, argv = owner
    cmd = shlex.join(argv)
    return f"pid {pid} ({cmd[:160] + '…' if len(cmd) > 160 else cmd})"


def _tail(path: Path, lines: int = 30, since: int = 0) -> str:
    """The last ``lines`` lines of ``path``, looking only at what was written after byte ``since``."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(since, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:]) or "(log is empty)"


def _run(
    cmd: Sequence[str],
    *,
    part: str,
    log: Path,
    reporter: Reporter,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    echo: bool = True,
) -> str:
    """Run a provisioning command, streaming its output to the provision log (and to the user)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out: list[str] = []
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n==> [{time.strftime('%Y-%m-%d %H:%M:%S')}] {part}: $ {shlex.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(
                list(cmd),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except FileNotFoundError:
            hint = INSTALL_HINTS.get(Path(cmd[0]).name, f"install it ({ALL_TOOLS_HINT})")
            raise StackError(f"{part}: `{cmd[0]}` is not installed; {hint}") from None
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            out.append(line)
            if echo:
                reporter.raw(line)
        code = proc.wait()
    if code != 0:
        tail = "".join(out[-25:]).rstrip()
        raise StackError(f"{part}: `{shlex.join(cmd)}` failed with exit code {code} (full output in {log}):\n{tail}")
    return "".join(out)


def _require(tool: str, part: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        hint = INSTALL_HINTS.get(tool, f"install it ({ALL_TOOLS_HINT})")
        raise StackError(f"{part}: `{tool}` not found on PATH ({why}); {hint}")
    return path


def _chmod_writable(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath, name)
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | stat.S_IWUSR)
    root.chmod(root.stat().st_mode | stat.S_IWUSR)


def _rmtree(path: Path) -> None:
    if path.exists():
        _chmod_writable(path)
        shutil.rmtree(path)


def _go_env(config: Config) -> dict[str, str]:
    env = dict(os.environ)
    flags = env.get("GOFLAGS", "")
    if "-buildvcs" not in flags:
        env["GOFLAGS"] = f"{flags} -buildvcs=false".strip()
    env["GOWORK"] = "off"
    env["GO111MODULE"] = "on"
    env.setdefault("CGO_ENABLED", "0")
    return env


# ------------------------------------------------------------------------------------ wire-level probes


def kafka_api_versions_ok(port: int, timeout: float = 2.0) -> bool:
    """Send a Kafka ApiVersions v0 request and check for a matching, error-free response."""
    client_id = b"kasse-stack"
    correlation = 0x4B415353
    body = struct.pack(">hhih", 18, 0, correlation, len(client_id)) + client_id
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", header)
            if not 6 <= size <= 1 << 20:
                return False
            payload = _recv_exact(sock, size)
    except OSError:
        return False
    got_correlation, error_code = struct.unpack(">ih", payload[:6])
    return bool(got_correlation == correlation and error_code == 0)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


def _bson_cstring(s: str) -> bytes:
    return s.encode() + b"\0"


def mongo_hello_ok(port: int, timeout: float = 2.0) -> bool:
    """Send ``{hello: 1, $db: "admin"}`` as an OP_MSG and check the reply says ok: 1."""
    db = b"admin\0"
    elements = (
        b"\x10"
        + _bson_cstring("hello")
        + struct.pack("<i", 1)
        + b"\x02"
        + _bson_cstring("$db")
        + struct.pack("<i", len(db))
        + db
    )
    doc = struct.pack("<i", 4 + len(elements) + 1) + elements + b"\0"
    msg = struct.pack("<I", 0) + b"\0" + doc
    request_id = 0x4B41
    packet = struct.pack("<iiii", 16 + len(msg), request_id, 0, 2013) + msg
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(packet)
            length, _rid, response_to, opcode = struct.unpack("<iiii", _recv_exact(sock, 16))
            if not 21 <= length <= 1 << 24:
                return False
            payload = _recv_exact(sock, length - 16)
    except OSError:
        return False
    if opcode != 2013 or response_to != request_id or payload[4] != 0:
        return False
    return _bson_ok(payload[5:])


def _bson_ok(doc: bytes) -> bool:
    """Find the top-level ``ok`` field of a BSON document (double, int32 or int64) and check it is 1."""
    pos, end = 4, struct.unpack("<i", doc[:4])[0] - 1
    fixed = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16}
    while pos < end:
        kind = doc[pos]
        name_end = doc.index(b"\0", pos + 1)
        name = doc[pos + 1 : name_end]
        pos = name_end + 1
        if name == b"ok":
            if kind == 0x01:
                return bool(struct.unpack("<d", doc[pos : pos + 8])[0] == 1.0)
            if kind == 0x10:
                return bool(struct.unpack("<i", doc[pos : pos + 4])[0] == 1)
            if kind == 0x12:
                return bool(struct.unpack("<q", doc[pos : pos + 8])[0] == 1)
            return False
        if kind in fixed:
            pos += fixed[kind]
        elif kind in (0x02, 0x0D, 0x0E):  # string, code, symbol
            pos += 4 + struct.unpack("<i", doc[pos : pos + 4])[0]
        elif kind in (0x03, 0x04):  # document, array
            pos += struct.unpack("<i", doc[pos : pos + 4])[0]
        elif kind == 0x05:  # binary
            pos += 5 + struct.unpack("<i", doc[pos : pos + 4])[0]
        elif kind == 0x0B:  # regex: two cstrings
            pos = doc.index(b"\0", doc.index(b"\0", pos) + 1) + 1
        else:
            return False
    return False


def stripe_mock_ok(port: int, timeout: float = 2.0) -> bool:
    """GET /v1/customers with a test key; stripe-mock answers 200."""
    req = urllib.request.Request(
        f"http://{HOST}:{port}/v1/customers", headers={"Authorization": f"Bearer {STRIPE_TEST_KEY}"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


# ------------------------------------------------------------------------------------------ the parts


@dataclasses.dataclass
class PartStatus:
    """What ``status()`` knows about one part."""

    part: str
    state: str  # "running" | "external" | "unhealthy" | "stopped"
    pid: int | None
    endpoint: str
    detail: str = ""

    @property
    def up(self) -> bool:
        return self.state in ("running", "external")


class Part:
    """One process of the stack: how to provision it, launch it, recognise it and tell it is ready."""

    name: str = ""
    stop_timeout: float = 15.0

    def __init__(self, config: Config) -> None:
        self.config = config

    # --- identity
    @property
    def pid_file(self) -> Path:
        return self.config.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.config.logs_dir / f"{self.name}.log"

    @property
    def stamp(self) -> Path:
        return self.config.stamps_dir / self.name

    def ports(self) -> list[int]:
        raise NotImplementedError

    def endpoint(self) -> str:
        raise NotImplementedError

    def port_env(self) -> str:
        raise NotImplementedError

    def version_key(self) -> str:
        """What the stamp file must contain for the provisioned artefacts to count as current."""
        raise NotImplementedError

    def is_ours(self, argv: list[str]) -> bool:
        raise NotImplementedError

    # --- lifecycle
    def provisioned(self) -> bool:
        try:
            return self.stamp.read_text().strip() == self.version_key() and self._artefacts_present()
        except OSError:
            return False

    def _artefacts_present(self) -> bool:
        raise NotImplementedError

    def provision(self, reporter: Reporter) -> None:
        raise NotImplementedError

    def _mark_provisioned(self) -> None:
        self.stamp.parent.mkdir(parents=True, exist_ok=True)
        self.stamp.write_text(self.version_key() + "\n")

    def prepare(self, reporter: Reporter) -> None:
        """Per-start preparation (config files, data dirs)."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def cwd(self) -> Path:
        return self.config.home

    def probe(self) -> bool:
        """Does the service answer its protocol right now?"""
        raise NotImplementedError

    def ready(self, log_offset: int) -> bool:
        """After launching: is it ready? (``log_offset``: size of the log before this launch)"""
        return self.probe()

    def same_settings(self, argv: list[str]) -> bool:
        """Was our running process (``argv``) started with the settings in force now (ports, paths)?"""
        return argv == self.command()

    # --- pid bookkeeping
    def read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def our_pid(self) -> int | None:
        """The pid from our pid file if that process is alive and still runs our command."""
        pid = self.read_pid()
        if pid is None:
            return None
        _reap(pid)
        argv = _read_cmdline(pid)
        return pid if argv is not None and self.is_ours(argv) else None

    def status(self) -> PartStatus:
        pid = self.our_pid()
        if pid is not None:
            if self.probe():
                return PartStatus(self.name, "running", pid, self.endpoint())
            return PartStatus(self.name, "unhealthy", pid, self.endpoint(), "process alive but not answering")
        busy = [p for p in self.ports() if port_in_use(p)]
        if busy and self.probe():
            owner = port_owner(self.ports()[0])
            return PartStatus(
                self.name,
                "external",
                owner[0] if owner else None,
                self.endpoint(),
                "answering, but not started by this script (KASSE_HOME differs?)",
            )
        if busy:
            return PartStatus(
                self.name, "stopped", None, self.endpoint(), f"port {busy[0]} held by {_describe_owner(busy[0])}"
            )
        return PartStatus(self.name, "stopped", None, self.endpoint())


class Kafka(Part):
    name = "kafka"
    stop_timeout = 45.0

    @property
    def dir(self) -> Path:
        return self.config.home / "kafka"

    @property
    def lib(self) -> Path:
        return self.dir / "lib"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def server_properties(self) -> Path:
        return self.dir / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.dir / "log4j2.properties"

    def ports(self) -> list[int]:
        return [self.config.kafka_port, self.config.kafka_controller_port]

    def endpoint(self) -> str:
        return f"{HOST}:{self.config.kafka_port}"

    def port_env(self) -> str:
        return "KASSE_STACK_KAFKA_PORT / KASSE_STACK_KAFKA_CONTROLLER_PORT"

    def version_key(self) -> str:
        return f"kafka {KAFKA_VERSION} pom:{hashlib.sha256((TEMPLATES / 'pom.xml').read_bytes()).hexdigest()[:16]}"

    def _artefacts_present(self) -> bool:
        return (self.lib / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()

    def is_ours(self, argv: list[str]) -> bool:
        return "kafka.Kafka" in argv and str(self.server_properties) in argv

    def _java(self) -> str:
        java = _require("java", self.name, "Kafka runs on a Java 17+ runtime")
        try:
            out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
        except (OSError, subprocess.TimeoutExpired):
            return java
        m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
        if m:
            major = int(m.group(2) or 0) if m.group(1) == "1" else int(m.group(1))
            if major < 17:
                raise StackError(
                    f"kafka: Kafka {KAFKA_VERSION} needs Java 17+, but `{java}` is Java {major}; "
                    "install e.g. `apt-get install openjdk-17-jre-headless`"
                )
        return java

    def provision(self, reporter: Reporter) -> None:
        self._java()
        mvn = _require("mvn", self.name, "Maven fetches the Kafka jars from Maven Central")
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TEMPLATES / "pom.xml", self.dir / "pom.xml")
        staging = self.dir / "lib.partial"
        _rmtree(staging)
        reporter.say(self.name, f"downloading Kafka {KAFKA_VERSION} jars from Maven Central (mvn)…")
        _run(
            [
                mvn,
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(self.dir / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            part=self.name,
            log=self.config.logs_dir / "provision.log",
            reporter=reporter,
            cwd=self.dir,
        )
        if not (staging / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
            raise StackError(f"kafka: Maven finished but kafka_2.13-{KAFKA_VERSION}.jar is not in {staging}")
        _rmtree(self.lib)
        staging.rename(self.lib)
        jars = len(list(self.lib.glob("*.jar")))
        reporter.say(self.name, f"{jars} jars in {self.lib}")
        self._mark_provisioned()

    def _java_base(self) -> list[str]:
        return [
            shutil.which("java") or "java",
            "-cp",
            f"{self.lib}/*",
            f"-Dlog4j2.configurationFile={self.log4j_config}",
            "-Djava.awt.headless=true",
        ]

    def prepare(self, reporter: Reporter) -> None:
        self._java()
        self.data.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TEMPLATES / "log4j2.properties", self.log4j_config)
        self.server_properties.write_text(self.render_server_properties())
        if not (self.data / "meta.properties").exists():
            cluster_id = _kafka_uuid()
            reporter.say(self.name, f"formatting KRaft storage in {self.data} (cluster id {cluster_id})")
            _run(
                [
                    *self._java_base(),
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(self.server_properties),
                ],
                part=self.name,
                log=self.log_file,
                reporter=reporter,
                cwd=self.dir,
                echo=False,
            )

    def render_server_properties(self) -> str:
        template = string.Template((TEMPLATES / "server.properties").read_text())
        return template.substitute(
            host=HOST,
            port=self.config.kafka_port,
            controller_port=self.config.kafka_controller_port,
            data_dir=str(self.data),
        )

    def same_settings(self, argv: list[str]) -> bool:
        # The JVM path may differ (PATH changes); the ports live in server.properties, not in argv.
        try:
            current = self.server_properties.read_text()
        except OSError:
            return False
        return argv[1:] == self.command()[1:] and current == self.render_server_properties()

    def command(self) -> list[str]:
        base = self._java_base()
        return [
            base[0],
            f"-Xmx{self.config.kafka_heap}",
            "-XX:+ExitOnOutOfMemoryError",
            *base[1:],
            "kafka.Kafka",
            str(self.server_properties),
        ]

    def cwd(self) -> Path:
        return self.dir

    def probe(self) -> bool:
        return kafka_api_versions_ok(self.config.kafka_port)

    def ready(self, log_offset: int) -> bool:
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(log_offset)
                started = b"Kafka Server started" in fh.read()
        except OSError:
            started = False
        return started and self.probe()


def _kafka_uuid() -> str:
    """A cluster id as ``org.apache.kafka.common.Uuid.randomUuid().toString()`` makes them."""
    while True:
        raw = os.urandom(16)
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if not text.startswith("-") and raw.strip(b"\0"):
            return text


class _GoPart(Part):
    """A part that is a Go binary under ``<cache>/bin``."""

    binary_name = ""

    @property
    def binary(self) -> Path:
        return self.config.bin_dir / self.binary_name

    def _artefacts_present(self) -> bool:
        return os.access(self.binary, os.X_OK)

    def is_ours(self, argv: list[str]) -> bool:
        return bool(argv) and argv[0] == str(self.binary)

    def _go(self) -> str:
        return _require("go", self.name, f"{self.binary_name} is built from source with the Go toolchain")


class FerretDB(_GoPart):
    name = "ferretdb"
    binary_name = "ferretdb"

    @property
    def dir(self) -> Path:
        return self.config.home / "ferretdb"

    def ports(self) -> list[int]:
        extra = [self.config.ferretdb_debug_port] if self.config.ferretdb_debug_port else []
        return [self.config.ferretdb_port, *extra]

    def endpoint(self) -> str:
        return f"mongodb://{HOST}:{self.config.ferretdb_port}/"

    def port_env(self) -> str:
        return "KASSE_STACK_FERRETDB_PORT"

    def version_key(self) -> str:
        return f"ferretdb {FERRETDB_VERSION} +{FERRETDB_PATCH.name} +id-pushdown +id-index"

    def provision(self, reporter: Reporter) -> None:
        go = self._go()
        env = _go_env(self.config)
        log = self.config.logs_dir / "provision.log"
        self.dir.mkdir(parents=True, exist_ok=True)
        reporter.say(self.name, f"downloading module {FERRETDB_MODULE}@{FERRETDB_VERSION} (go mod download)…")
        out = _run(
            [go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
            part=self.name,
            log=log,
            reporter=reporter,
            cwd=self.dir,
            env=env,
            echo=False,
        )
        try:
            info: dict[str, Any] = json.loads(out[out.index("{") :])
        except ValueError:
            raise StackError(f"ferretdb: could not read `go mod download -json` output:\n{out[-2000:]}") from None
        if info.get("Error") or not info.get("Dir"):
            raise StackError(f"ferretdb: go mod download failed: {info.get('Error') or 'no Dir in output'}")
        src = self.dir / "src"
        reporter.say(self.name, f"copying module source to {src} and writing build/version/version.txt")
        _rmtree(src)
        shutil.copytree(info["Dir"], src, symlinks=True)
        _chmod_writable(src)
        (src / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
        reporter.say(self.name, f"applying {FERRETDB_PATCH.name}: single-document writes made atomic")
        _patch_ferretdb_write_lock(src)
        reporter.say(self.name, "pushing {_id: v} down even with other conditions (one row, not a table scan)")
        _patch_ferretdb_id_pushdown(src)
        reporter.say(self.name, "looking {_id: v} up by the _id index (SEARCH, not SCAN)")
        _patch_ferretdb_id_index(src)
        self.config.bin_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.binary.with_name(self.binary_name + ".partial")
        reporter.say(self.name, "building ./cmd/ferretdb with go build (about 70 s cold)…")
        _run(
            [go, "build", "-v", "-trimpath", "-o", str(tmp), "./cmd/ferretdb"],
            part=self.name,
            log=log,
            reporter=reporter,
            cwd=src,
            env=env,
        )
        tmp.replace(self.binary)
        _rmtree(src)
        version = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True, timeout=30)
        first = (version.stdout or version.stderr).strip().splitlines()
        reporter.say(self.name, f"built {self.binary} ({first[0] if first else 'version unknown'})")
        self._mark_provisioned()

    def prepare(self, reporter: Reporter) -> None:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "state").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        debug = f"{HOST}:{self.config.ferretdb_debug_port}" if self.config.ferretdb_debug_port else "-"
        return [
            str(self.binary),
            f"--listen-addr={HOST}:{self.config.ferretdb_port}",
            "--handler=sqlite",
            f"--sqlite-url=file:{self.dir / 'data'}/",
            f"--state-dir={self.dir / 'state'}",
            f"--debug-addr={debug}",
            "--telemetry=disable",
            "--log-level=warn",
        ]

    def cwd(self) -> Path:
        return self.dir

    def probe(self) -> bool:
        return mongo_hello_ok(self.config.ferretdb_port)


class StripeMock(_GoPart):
    name = "stripe-mock"
    binary_name = "stripe-mock"

    def ports(self) -> list[int]:
        return [self.config.stripe_port, self.config.stripe_https_port]

    def endpoint(self) -> str:
        return f"http://{HOST}:{self.config.stripe_port}"

    def port_env(self) -> str:
        return "KASSE_STACK_STRIPE_PORT / KASSE_STACK_STRIPE_HTTPS_PORT"

    def version_key(self) -> str:
        return f"stripe-mock {STRIPE_MOCK_VERSION}"

    def provision(self, reporter: Reporter) -> None:
        go = self._go()
        env = _go_env(self.config)
        env["GOBIN"] = str(self.config.bin_dir)
        self.config.bin_dir.mkdir(parents=True, exist_ok=True)
        reporter.say(self.name, f"building {STRIPE_MOCK_MODULE}@{STRIPE_MOCK_VERSION} (go install, ~25 s cold)…")
        _run(
            [go, "install", "-v", "-trimpath", f"{STRIPE_MOCK_MODULE}@{STRIPE_MOCK_VERSION}"],
            part=self.name,
            log=self.config.logs_dir / "provision.log",
            reporter=reporter,
            cwd=self.config.home,
            env=env,
        )
        if not self._artefacts_present():
            raise StackError(f"stripe-mock: go install finished but {self.binary} is missing")
        reporter.say(self.name, f"built {self.binary}")
        self._mark_provisioned()

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "-http-addr",
            f"{HOST}:{self.config.stripe_port}",
            "-https-addr",
            f"{HOST}:{self.config.stripe_https_port}",
        ]

    def probe(self) -> bool:
        return stripe_mock_ok(self.config.stripe_port)


PART_CLASSES: dict[str, type[Part]] = {"kafka": Kafka, "ferretdb": FerretDB, "stripe-mock": StripeMock}


# ------------------------------------------------------------------------------------------ operations


def _select(parts: Sequence[str] | None, config: Config) -> list[Part]:
    if not parts:
        return [PART_CLASSES[name](config) for name in PARTS]
    chosen: list[str] = []
    for raw in parts:
        name = ALIASES.get(raw.lower(), raw.lower())
        if name not in PART_CLASSES:
            raise StackError(f"unknown part {raw!r}; choose from {', '.join(PARTS)}")
        if name not in chosen:
            chosen.append(name)
    return [PART_CLASSES[name](config) for name in PARTS if name in chosen]


@contextlib.contextmanager
def _locked(config: Config) -> Iterator[None]:
    """Serialise start/stop/provision between processes sharing one KASSE_HOME (e.g. pytest workers)."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    with (config.run_dir / "stack.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def provision(parts: Sequence[str] | None = None, quiet: bool = False, config: Config | None = None) -> None:
    """Download/build whatever the selected parts are missing; start nothing."""
    config = config or Config.from_env()
    reporter = Reporter(quiet)
    with _locked(config):
        _provision(_select(parts, config), reporter)


def _provision(parts: Sequence[Part], reporter: Reporter) -> None:
    for part in parts:
        if part.provisioned():
            reporter.say(part.name, "already provisioned")
            continue
        t0 = time.monotonic()
        reporter.say(part.name, "provisioning…")
        part.provision(reporter)
        reporter.say(part.name, f"provisioned in {time.monotonic() - t0:.1f}s")


def start(parts: Sequence[str] | None = None, quiet: bool = False, config: Config | None = None) -> dict[str, str]:
    """Provision what is missing, start every selected part that is not answering, wait until all answer.

    Returns the endpoint environment (``KASSE_KAFKA_BOOTSTRAP`` etc.) for the selected parts.
    Raises StackError, naming the part and showing the tail of its log, if something fails or times out.
    """
    config = config or Config.from_env()
    reporter = Reporter(quiet)
    selected = _select(parts, config)
    with _locked(config):
        for d in (config.logs_dir, config.run_dir, config.bin_dir):
            d.mkdir(parents=True, exist_ok=True)
        to_launch: list[Part] = []
        waiting: list[Part] = []
        for part in selected:
            pid = part.our_pid()
            if pid is not None:
                argv = _read_cmdline(pid) or []
                if not part.same_settings(argv):
                    raise StackError(
                        f"{part.name} is already running from {config.home} (pid {pid}) with other settings "
                        f"(ports or heap) than the current environment asks for; run `stack.py stop {part.name}` "
                        "(it finds the process whatever its ports) and start again"
                    )
                if part.probe():
                    reporter.say(part.name, f"already running (pid {pid}) at {part.endpoint()}")
                else:
                    reporter.say(part.name, f"started earlier (pid {pid}), waiting for it to answer")
                    waiting.append(part)
                continue
            busy = [p for p in part.ports() if port_in_use(p)]
            if busy:
                if part.probe():
                    reporter.say(
                        part.name,
                        f"{part.endpoint()} is already served by {_describe_owner(busy[0])}, which this "
                        "script did not start; using it as is (it will not be stopped by `stop`)",
                    )
                    continue
                raise StackError(
                    f"{part.name}: port {busy[0]} on {HOST} is already taken by {_describe_owner(busy[0])}, "
                    f"which is not a {part.name} started by this script. Stop it, or pick other ports with "
                    f"{part.port_env()}."
                )
            to_launch.append(part)

        _provision(to_launch, reporter)

        offsets: dict[str, int] = {}
        for part in to_launch:
            part.prepare(reporter)
            offsets[part.name] = _launch(part, reporter)
        _wait_ready([*waiting, *to_launch], offsets, config, reporter)

    env: dict[str, str] = {}
    all_env = config.endpoints()
    keys = {"kafka": "KASSE_KAFKA_BOOTSTRAP", "ferretdb": "KASSE_MONGO_URI", "stripe-mock": "KASSE_STRIPE_API_BASE"}
    for part in selected:
        env[keys[part.name]] = all_env[keys[part.name]]
    reporter.say("stack", f"ready in {reporter.elapsed():.1f}s")
    return env


# Launches through a throwaway /bin/sh that backgrounds the command and exits at once: the service is then
# re-parented to init, so it outlives the caller, is never a zombie or a "still running" ResourceWarning of a
# harness that imported this module, and nobody but init has to reap it.
_DETACH = 'log="$1"; shift; "$@" </dev/null >>"$log" 2>&1 & echo "$!"'


def _launch(part: Part, reporter: Reporter) -> int:
    """Start ``part`` detached (own session, output appended to its log); return the log offset before it."""
    cmd = part.command()
    part.log_file.parent.mkdir(parents=True, exist_ok=True)
    with part.log_file.open("ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shlex.join(cmd)}\n".encode())
        offset = log.tell()
    try:
        out = subprocess.run(
            ["/bin/sh", "-c", _DETACH, "sh", str(part.log_file), *cmd],
            cwd=part.cwd(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            start_new_session=True,
            check=True,
            timeout=30,
        )
        pid = int(out.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise StackError(f"{part.name}: could not launch `{shlex.join(cmd)}`: {exc}") from exc
    part.pid_file.write_text(f"{pid}\n")
    reporter.say(part.name, f"started (pid {pid}), log {part.log_file}")
    return offset


def _wait_ready(parts: Sequence[Part], offsets: Mapping[str, int], config: Config, reporter: Reporter) -> None:
    """Poll until every part answers; fail fast, with its log, if one dies; fail on the start timeout."""
    pending = {part.name: part for part in parts}
    t0 = time.monotonic()
    while pending:
        for name, part in list(pending.items()):
            if part.ready(offsets[name]) if name in offsets else part.probe():
                reporter.say(name, f"answering at {part.endpoint()} ({time.monotonic() - t0:.1f}s after launch)")
                del pending[name]
            elif part.our_pid() is None:
                part.pid_file.unlink(missing_ok=True)
                tail = _tail(part.log_file, since=offsets.get(name, 0))
                raise StackError(f"{name} exited while starting; last lines of {part.log_file}:\n{tail}")
        if not pending:
            break
        if time.monotonic() - t0 > config.start_timeout:
            name, part = next(iter(pending.items()))
            raise StackError(
                f"{name} did not answer at {part.endpoint()} within {config.start_timeout:.0f}s "
                f"(raise KASSE_STACK_START_TIMEOUT?); it is still running, see `stack.py logs {name}`. "
                f"Last lines of {part.log_file}:\n{_tail(part.log_file, since=offsets.get(name, 0))}"
            )
        time.sleep(0.25)


def stop(
    parts: Sequence[str] | None = None, purge: bool = False, quiet: bool = False, config: Config | None = None
) -> None:
    """Stop the selected parts this script started (SIGTERM, then SIGKILL after a timeout).

    Processes that are not ours (pid file missing, stale, or pointing at another command) are never signalled.
    With ``purge=True`` the data dirs (Kafka logs, FerretDB's SQLite files) are deleted afterwards.
    """
    config = config or Config.from_env()
    reporter = Reporter(quiet)
    selected = _select(parts, config)
    with _locked(config):
        signalled: list[tuple[Part, int]] = []
        for part in reversed(selected):
            pid = part.read_pid()
            ours = part.our_pid()
            if ours is None:
                if pid is not None:
                    part.pid_file.unlink(missing_ok=True)
                    reporter.say(part.name, f"not running (stale pid file for {pid} removed)")
                else:
                    reporter.say(part.name, "not running")
                continue
            reporter.say(part.name, f"stopping pid {ours} (SIGTERM)")
            _signal(ours, signal.SIGTERM)
            signalled.append((part, ours))
        for part, pid in signalled:
            deadline = time.monotonic() + part.stop_timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                reporter.say(part.name, f"still alive after {part.stop_timeout:.0f}s, sending SIGKILL")
                _signal(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
            if _alive(pid):
                raise StackError(f"{part.name}: pid {pid} survived SIGKILL")
            part.pid_file.unlink(missing_ok=True)
            reporter.say(part.name, "stopped")
        if purge:
            for part in selected:
                if part.our_pid() is not None:
                    continue
                for data in _data_dirs(part):
                    if data.exists():
                        _rmtree(data)
                        reporter.say(part.name, f"purged {data}")


def _data_dirs(part: Part) -> list[Path]:
    if isinstance(part, Kafka):
        return [part.data]
    if isinstance(part, FerretDB):
        return [part.dir / "data", part.dir / "state"]
    return []


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process group we created with start_new_session (the pid leads it), else the pid."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def status(parts: Sequence[str] | None = None, config: Config | None = None) -> dict[str, PartStatus]:
    """The state of each selected part: running (ours), external, unhealthy or stopped."""
    config = config or Config.from_env()
    return {part.name: part.status() for part in _select(parts, config)}


# ---------------------------------------------------------------------------------------------- logs


def _follow(paths: Mapping[str, Path], prefix: bool) -> None:
    positions: dict[str, int] = {}
    for name, path in paths.items():
        positions[name] = path.stat().st_size if path.exists() else 0
    partial: dict[str, bytes] = {name: b"" for name in paths}
    while True:
        quiet = True
        for name, path in paths.items():
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if size < positions[name]:
                positions[name] = 0
            if size == positions[name]:
                continue
            with path.open("rb") as fh:
                fh.seek(positions[name])
                data = partial[name] + fh.read()
                positions[name] = fh.tell()
            *lines, partial[name] = data.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                print(f"{name:<11} | {text}" if prefix else text, flush=True)
            quiet = False
        if quiet:
            time.sleep(0.3)


def logs(part: str | None = None, lines: int = 50, follow: bool = False, config: Config | None = None) -> None:
    """Print the last ``lines`` lines of one part's log (or every part's), optionally following them."""
    config = config or Config.from_env()
    if part in ("provision", "provisioning"):
        paths = {"provision": config.logs_dir / "provision.log"}
    else:
        paths = {p.name: p.log_file for p in _select([part] if part else None, config)}
    for name, path in paths.items():
        if len(paths) > 1:
            print(f"==> {path} <==")
        print(_tail(path, lines) if path.exists() else f"(no log yet for {name}: {path})")
    if follow:
        with contextlib.suppress(KeyboardInterrupt):
            _follow(paths, prefix=len(paths) > 1)


# ----------------------------------------------------------------------------------------------- CLI


def _print_status(states: Mapping[str, PartStatus]) -> None:
    for st in states.values():
        pid = str(st.pid) if st.pid is not None else "-"
        detail = f"  ({st.detail})" if st.detail else ""
        print(f"{st.part:<12} {st.state:<10} pid {pid:<8} {st.endpoint}{detail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack.py",
        description="Kasse local stack (Kafka, FerretDB, stripe-mock) without Docker. "
        "Cache: $KASSE_HOME or <repo>/.kasse. See deploy/local/README.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    part_help = f"parts ({', '.join(PARTS)}; aliases: mongo, stripe); default all"
    p = sub.add_parser("start", help="provision what is missing, start, wait until every part answers")
    p.add_argument("parts", nargs="*", help=part_help)
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and the final endpoints")
    p = sub.add_parser("stop", help="stop the parts this script started")
    p.add_argument("parts", nargs="*", help=part_help)
    p.add_argument("--purge", action="store_true", help="also delete the data dirs")
    p = sub.add_parser("status", help="running/stopped, pid and endpoint of each part (exit 3 unless all up)")
    p.add_argument("parts", nargs="*", help=part_help)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("logs", help="show a part's log ('provision' for the download/build log)")
    p.add_argument("part", nargs="?")
    p.add_argument("-n", "--lines", type=int, default=50)
    p.add_argument("-f", "--follow", action="store_true")
    p = sub.add_parser("provision", help="download/build only")
    p.add_argument("parts", nargs="*", help=part_help)
    p.add_argument("-q", "--quiet", action="store_true")
    p = sub.add_parser("env", help="print shell exports of the endpoints")
    p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    try:
        config = Config.from_env()
        if args.command == "start":
            env = start(args.parts, quiet=args.quiet, config=config)
            if not args.quiet:
                print()
            for key, value in env.items():
                print(f"export {key}={shlex.quote(value)}")
        elif args.command == "stop":
            stop(args.parts, purge=args.purge, config=config)
        elif args.command == "status":
            states = status(args.parts, config=config)
            if args.json:
                print(json.dumps({k: dataclasses.asdict(v) for k, v in states.items()}, indent=2))
            else:
                _print_status(states)
            return 0 if all(st.up for st in states.values()) else EXIT_NOT_RUNNING
        elif args.command == "logs":
            logs(args.part, lines=args.lines, follow=args.follow, config=config)
        elif args.command == "provision":
            provision(args.parts, quiet=args.quiet, config=config)
        elif args.command == "env":
            env = config.endpoints()
            if args.json:
                print(json.dumps(env, indent=2))
            else:
                for key, value in env.items():
                    print(f"export {key}={shlex.quote(value)}")
    except StackError as exc:
        print(f"stack.py: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
