"""deploy/tools/bootstrap.sh decides what a bare machine lacks for `make up` / `make test`.

Each test runs the real script with a PATH made here: the few system commands it uses (bash, awk, sed, ...)
plus stand-ins for the tools under test (java, go, uv, apt-get, id, sudo) that say a version or record
how they were called. Nothing is installed: either --dry-run, or the stand-in apt-get only records.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "tools" / "bootstrap.sh"
SYSTEM_COMMANDS = ("bash", "env", "dirname", "awk", "sed", "cat", "rm", "mkdir", "ln")
ALL_TOOLS = ("java", "mvn", "go", "npm", "chromium")


def _stand_in(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


class Machine:
    """A PATH with only the listed tools, as root unless told otherwise."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for name in SYSTEM_COMMANDS:
            real = shutil.which(name)
            assert real, name
            (self.bin / name).symlink_to(real)
        python = shutil.which("python3")
        assert python
        (self.bin / "python3").symlink_to(python)
        self.apt_log = tmp_path / "apt.log"
        _stand_in(self.bin, "apt-get", f'echo "$*" >> {self.apt_log}')
        self.uid(0)

    def uid(self, uid: int) -> None:
        _stand_in(self.bin, "id", f"echo {uid}")

    def tools(self, *names: str, go_version: str = "go1.26.0") -> None:
        for name in names:
            body = f'[ "$1" = env ] && echo {go_version}; exit 0' if name == "go" else "exit 0"
            _stand_in(self.bin, name, body)

    def uv(self, version: str) -> None:
        _stand_in(self.bin, "uv", f'echo "uv {version} (stand-in)"')

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environment = {
            "PATH": str(self.bin),
            "HOME": str(self.root),
            "KASSE_BIN": str(self.root / "kasse-bin"),
            "KASSE_TOOLS": str(self.root / "kasse-tools"),
            **env,
        }
        return subprocess.run(
            [str(self.bin / "bash"), str(SCRIPT), *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def apt_calls(self) -> list[str]:
        return self.apt_log.read_text().splitlines() if self.apt_log.exists() else []


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def test_without_uv_on_path_the_pinned_uv_goes_into_a_repo_local_virtualenv(machine: Machine) -> None:
    machine.tools(*ALL_TOOLS)
    out = machine.run("--dry-run")
    assert out.returncode == 0, out.stderr
    tools = machine.root / "kasse-tools" / "uv"
    assert f"would install uv 0.13.9 into {tools}" in out.stdout
    assert "apt-get" not in out.stdout
    assert not (machine.root / "kasse-tools").exists(), "a dry run changes nothing"


def test_a_uv_of_another_version_is_not_taken_and_the_pinned_one_is(machine: Machine) -> None:
    machine.tools(*ALL_TOOLS)
    machine.uv("0.5.1")
    assert "would install uv 0.13.9" in machine.run("--dry-run").stdout
    machine.uv("0.13.9")
    assert machine.run("--dry-run").stdout.strip() == "bootstrap: nothing to install for 'test'"


def test_missing_tools_are_installed_from_debian_as_root(machine: Machine) -> None:
    machine.tools("java", "mvn", "go")
    machine.uv("0.13.9")
    dry = machine.run("--dry-run")
    assert "would run: apt-get update && apt-get install -y npm chromium" in dry.stdout
    assert machine.apt_calls() == []

    out = machine.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert machine.apt_calls() == ["update -qq", "install -y -qq npm chromium"]


def test_make_up_needs_no_browser_and_no_npm(machine: Machine) -> None:
    machine.tools("java", "mvn", "go")
    machine.uv("0.13.9")
    assert machine.run("--for", "up", "--dry-run").stdout.strip() == "bootstrap: nothing to install for 'up'"
    (machine.bin / "mvn").unlink()
    out = machine.run("--for", "up", "--dry-run")
    assert "apt-get install -y maven" in out.stdout


def test_without_root_and_without_sudo_it_prints_the_command_and_stops(machine: Machine) -> None:
    machine.tools("java", "mvn", "go", "npm")
    machine.uv("0.13.9")
    machine.uid(1000)
    out = machine.run()
    assert out.returncode == 1
    assert "  apt-get update && apt-get install -y chromium" in out.stdout
    assert machine.apt_calls() == []


def test_without_root_a_passwordless_sudo_is_used(machine: Machine) -> None:
    machine.tools("java", "mvn", "go", "npm")
    machine.uv("0.13.9")
    machine.uid(1000)
    sudo_log = machine.root / "sudo.log"
    _stand_in(machine.bin, "sudo", f'echo "$*" >> {sudo_log}; [ "$1" = -n ] && exit 0; exec "$@"')
    assert "would run: sudo apt-get update && sudo apt-get install -y chromium" in machine.run("--dry-run").stdout
    out = machine.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert machine.apt_calls() == ["update -qq", "install -y -qq chromium"]
    assert "env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium" in sudo_log.read_text()


def test_a_python_that_cannot_make_a_virtualenv_gets_debians_python3_venv(machine: Machine) -> None:
    machine.tools(*ALL_TOOLS)
    _stand_in(machine.bin, "python-without-venv", "exit 1")
    out = machine.run("--for", "uv", "--dry-run", PYTHON=str(machine.bin / "python-without-venv"))
    assert "apt-get install -y python3-venv" in out.stdout
    assert "would install uv 0.13.9" in out.stdout


def test_a_go_too_old_to_fetch_its_toolchain_is_refused_with_the_way_out(machine: Machine) -> None:
    machine.tools(*ALL_TOOLS, go_version="go1.19.8")
    machine.uv("0.13.9")
    out = machine.run("--for", "up")
    assert out.returncode == 1
    assert "Go >= 1.21 is needed, found go1.19.8" in out.stdout
    assert "bookworm-backports" in out.stdout


def test_not_on_debian_it_names_what_is_missing(machine: Machine) -> None:
    machine.tools("java", "mvn", "go", "npm")
    machine.uv("0.13.9")
    (machine.bin / "apt-get").unlink()
    out = machine.run()
    assert out.returncode == 1
    assert "missing: chromium" in out.stdout


@pytest.mark.parametrize("args", [("--for", "everything"), ("--bogus",)])
def test_bad_arguments_are_refused(machine: Machine, args: tuple[str, ...]) -> None:
    assert machine.run(*args).returncode == 2


def test_the_script_is_executable_for_make() -> None:
    assert os.access(SCRIPT, os.X_OK)
