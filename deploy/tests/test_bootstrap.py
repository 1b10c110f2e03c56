"""deploy/tools/bootstrap.sh decides what a bare machine lacks for `make up` / `make test`.

Each test runs the real script with a PATH made here: the few system commands it uses (bash, awk, sed, ...)
plus stand-ins for the tools under test (java, go, uv, apt-get, id, sudo) that say a version or record
how they were called. Nothing is installed: either --dry-run, or the stand-in apt-get only records.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "tools" / "bootstrap.sh"
SYSTEM_COMMANDS = ("bash", "env", "dirname", "awk", "sed", "cat", "rm", "mkdir", "ln", "uname")
ALL_TOOLS = ("java", "mvn", "go", "npm", "chromium")
GO_PINNED = "1.24.13"
GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
GO_ZIP = f"golang.org/toolchain/@v/v0.0.1-go{GO_PINNED}.linux-{GO_ARCH}.zip"


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


def _go_stand_in(path: Path, version: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/bash\n[ "$1" = env ] && echo {version}; exit 0\n')
    path.chmod(0o755)


@pytest.mark.skipif(GO_ARCH not in ("amd64", "arm64"), reason="checksums are pinned for linux-amd64/arm64")
def test_go_decision_debians_too_old_go_is_replaced_by_the_pinned_toolchain_from_the_module_proxy(
    machine: Machine,
) -> None:
    machine.tools("java", "mvn", "npm", "chromium")
    machine.uv("0.13.9")
    plan = f"would install Go {GO_PINNED} from https://proxy.golang.org/{GO_ZIP}"
    # No Go at all, or Debian 12's 1.19: the pinned one; never Debian's golang-go.
    out = machine.run("--for", "up", "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert plan in out.stdout
    assert "golang-go" not in out.stdout and "apt-get" not in out.stdout
    machine.tools("go", go_version="go1.19.8")
    assert plan in machine.run("--for", "up", "--dry-run").stdout
    # A Go >= 1.21 on PATH fetches FerretDB's toolchain itself: kept.
    machine.tools("go", go_version="go1.22.2")
    assert machine.run("--for", "up", "--dry-run").stdout.strip() == "bootstrap: nothing to install for 'up'"
    # The repo-local one decides when present: the pinned version is kept, another one is replaced.
    machine.tools("go", go_version="go1.19.8")
    _go_stand_in(machine.root / "kasse-bin" / "go", f"go{GO_PINNED}")
    assert machine.run("--for", "up", "--dry-run").stdout.strip() == "bootstrap: nothing to install for 'up'"
    _go_stand_in(machine.root / "kasse-bin" / "go", "go1.23.0")
    assert plan in machine.run("--for", "up", "--dry-run").stdout
    # The first URL of GOPROXY is the proxy; uv only needs no Go.
    (machine.root / "kasse-bin" / "go").unlink()
    mirror = machine.run("--for", "up", "--dry-run", GOPROXY="https://mirror.example/go/,direct").stdout
    assert f"from https://mirror.example/go/{GO_ZIP}" in mirror
    assert "Go" not in machine.run("--for", "uv", "--dry-run").stdout


def test_go_install_checks_the_pinned_sha256_and_unpacks_the_toolchain(machine: Machine) -> None:
    machine.tools("java", "mvn", "npm", "chromium", "go", go_version="go1.19.8")
    machine.uv("0.13.9")
    proxy = machine.root / "proxy"
    archive = proxy / GO_ZIP
    archive.parent.mkdir(parents=True)
    prefix = f"golang.org/toolchain@v0.0.1-go{GO_PINNED}.linux-{GO_ARCH}/"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("bin/go", "bin/gofmt"):
            info = zipfile.ZipInfo(prefix + name)
            info.external_attr = 0o100755 << 16
            zf.writestr(info, f'#!/bin/bash\n[ "$1" = env ] && echo go{GO_PINNED}; exit 0\n')
        zf.writestr(prefix + "VERSION", f"go{GO_PINNED}\n")
    tools, bin_ = machine.root / "kasse-tools", machine.root / "kasse-bin"

    # The pinned checksum is the real toolchain's: this zip is refused and nothing is installed.
    out = machine.run("--for", "up", GOPROXY=f"file://{proxy}", GO_SHA256=hashlib.sha256(b"other").hexdigest())
    assert out.returncode == 1
    assert "expected" in out.stderr and "not installed" in out.stderr
    assert not (tools / "go").exists() and not (bin_ / "go").exists()
    if GO_ARCH in ("amd64", "arm64"):
        out = machine.run("--for", "up", GOPROXY=f"file://{proxy}")
        assert out.returncode == 1 and "not installed" in out.stderr

    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    out = machine.run("--for", "up", GOPROXY=f"file://{proxy}", GO_SHA256=sha)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (bin_ / "go").resolve() == tools / "go" / "bin" / "go"
    assert os.access(bin_ / "go", os.X_OK) and os.access(bin_ / "gofmt", os.X_OK)
    assert (tools / "go" / "VERSION").read_text() == f"go{GO_PINNED}\n"
    assert machine.apt_calls() == []
    # Installed once: the next run has nothing to do.
    assert machine.run("--for", "up", "--dry-run").stdout.strip() == "bootstrap: nothing to install for 'up'"


def test_a_go_version_without_a_pinned_checksum_is_refused(machine: Machine) -> None:
    machine.tools("java", "mvn", "npm", "chromium")
    machine.uv("0.13.9")
    out = machine.run("--for", "up", "--dry-run", GO_VERSION="1.99.0")
    assert out.returncode == 1
    assert "no checksum is pinned for go1.99.0" in out.stdout


def test_a_machine_without_the_ca_bundle_gets_debians_ca_certificates(machine: Machine) -> None:
    machine.tools(*ALL_TOOLS)
    machine.uv("0.13.9")
    out = machine.run("--for", "uv", "--dry-run", KASSE_CA_BUNDLE=str(machine.root / "no-such-bundle.crt"))
    assert "would run: apt-get update && apt-get install -y ca-certificates" in out.stdout


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
