#!/usr/bin/env bash
# Install what `make up` / `make test` need and the machine lacks, on a Debian machine that has only
# Python 3.11+ and make — or print the one command that does it. The Makefile runs it before every
# target that needs the tools, and .ci/run runs it too: this is the one place the toolchain is decided.
#
#   deploy/tools/bootstrap.sh [--for uv|up|test] [--dry-run]
#
#   --for uv    only the pinned uv
#   --for up    uv, and the local stack's builders: a JDK and Maven (Kafka from Maven Central), Go (FerretDB,
#               stripe-mock, helm)
#   --for test  (default) also npm (the Compose schema, axe-core) and Chromium (the browser tests)
#   --dry-run   say what would be installed, change nothing; exits 1 where a real run would stop (the unit
#               test drives the decisions with it)
#
# uv: the pinned version (UV_VERSION, default 0.13.9) when `uv` on PATH is another version or absent goes
# into a repo-local virtualenv (<repo>/.kasse/tools/uv) with a link in <repo>/.kasse/bin, which the Makefile
# puts first on PATH. A virtualenv, not `pip install --user`: Debian's Python is externally managed (PEP 668).
# Go: a Go >= 1.21 on PATH is used (it fetches the toolchain FerretDB asks for itself). Otherwise (none, or
# Debian 12's 1.19) the pinned Go (GO_VERSION) comes from the Go module proxy, which serves toolchains as the
# module golang.org/toolchain: the zip is checked against the sha256 pinned here, unpacked into
# <repo>/.kasse/tools/go and linked as <repo>/.kasse/bin/go.
# System packages come from Debian (apt-get) as root, or through sudo when it needs no password; otherwise the
# script prints the exact apt-get command and stops.
# Environment: UV_VERSION, GO_VERSION, GO_SHA256 (with a GO_VERSION not pinned here), GOPROXY (its first URL),
# KASSE_BIN (default <repo>/.kasse/bin), KASSE_TOOLS (default <repo>/.kasse/tools), KASSE_CA_BUNDLE.
set -euo pipefail

UV_VERSION="${UV_VERSION:-0.13.9}"
GO_MIN_MINOR=21 # FerretDB asks for Go 1.24, which Go >= 1.21 fetches by itself (GOTOOLCHAIN=auto)
GO_VERSION="${GO_VERSION:-1.24.13}"
# sha256 of https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go<version>.linux-<arch>.zip
declare -A GO_SHA256_OF=(
    [1.24.13-amd64]=d2b048367a3d1a748b87f756fa06df12ce3b419e1d5f2a3612acb8950d615f9f
    [1.24.13-arm64]=50c7b3e59fa87479d8edf3e9ad81daa477c050fb580f2661cb3b8adaf70af86c
)
# Python's urllib, pip and uv, Maven and Go check TLS against Debian's bundle; a minimal Debian lacks it.
CA_BUNDLE="${KASSE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${KASSE_BIN:-$REPO/.kasse/bin}"
TOOLS="${KASSE_TOOLS:-$REPO/.kasse/tools}"
PYTHON="${PYTHON:-python3}"

target="test"
dry_run=0
while (($#)); do
    case "$1" in
    --for)
        target="${2:?--for needs uv, up or test}"
        shift 2
        ;;
    --for=*)
        target="${1#--for=}"
        shift
        ;;
    --dry-run)
        dry_run=1
        shift
        ;;
    -h | --help)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "bootstrap: unknown argument $1 (see --help)" >&2
        exit 2
        ;;
    esac
done
case "$target" in uv | up | test) ;; *)
    echo "bootstrap: --for takes uv, up or test, not $target" >&2
    exit 2
    ;;
esac

say() { printf 'bootstrap: %s\n' "$*"; }

# --- what is missing --------------------------------------------------------------------------------------
# The commands each target needs, and the Debian package that brings each one.
# Go is not among them: it comes from the Go module proxy (below) unless the machine has a new enough one.
declare -A package_of=([java]=default-jdk-headless [mvn]=maven [npm]=npm [chromium]=chromium)
needed=()
case "$target" in
up) needed=(java mvn) ;;
test) needed=(java mvn npm chromium) ;;
esac
packages=()
[ -s "$CA_BUNDLE" ] || packages+=(ca-certificates)
for tool in "${needed[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || packages+=("${package_of[$tool]}")
done

# Go: the repo-local pinned one, else a Go >= 1.21 on PATH, else the pinned one is installed.
go_version_of() { "$1" env GOVERSION 2>/dev/null; }
need_go=0
if [ "$target" != uv ]; then
    need_go=1
    if [ -e "$BIN/go" ]; then
        [ "$(go_version_of "$BIN/go")" = "go$GO_VERSION" ] && need_go=0
    elif command -v go >/dev/null 2>&1; then
        minor="$(go_version_of "$(command -v go)" | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
        [ -n "$minor" ] && ((minor >= GO_MIN_MINOR)) && need_go=0
    fi
fi
if ((need_go)); then
    case "$(uname -m)" in
    x86_64 | amd64) go_arch=amd64 ;;
    aarch64 | arm64) go_arch=arm64 ;;
    *) go_arch="$(uname -m)" ;;
    esac
    go_sha256="${GO_SHA256:-${GO_SHA256_OF[$GO_VERSION-$go_arch]:-}}"
    if [ -z "$go_sha256" ]; then
        say "Go >= 1.$GO_MIN_MINOR is needed and no checksum is pinned for go$GO_VERSION on linux-$go_arch:"
        say "  install Go from go.dev/dl, or set GO_VERSION and GO_SHA256 for a toolchain the Go module proxy serves"
        exit 1
    fi
fi

uv_version_of() { "$1" --version 2>/dev/null | awk '{print $2}'; }
uv_ok() { [ -x "$1" ] && [ "$(uv_version_of "$1")" = "$UV_VERSION" ]; }
# The Makefile puts $BIN first on PATH, so a repo-local uv of another version is replaced, not skipped.
need_uv=1
if [ -e "$BIN/uv" ]; then
    uv_ok "$BIN/uv" && need_uv=0
elif command -v uv >/dev/null 2>&1 && uv_ok "$(command -v uv)"; then
    need_uv=0
fi
# A virtualenv with pip needs ensurepip's wheels; Debian ships them in python3-venv, not with python3.
python_can_venv() { "$PYTHON" -c 'import ensurepip, sys, venv; sys.exit(0 if ensurepip.version() else 1)' >/dev/null 2>&1; }
if ((need_uv)) && ! python_can_venv; then
    packages+=(python3-venv)
fi

# --- system packages ---------------------------------------------------------------------------------------
if ((${#packages[@]})); then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing: ${packages[*]} (Debian package names); this is not a Debian machine: install them with its package manager"
        exit 1
    fi
    if [ "$(id -u)" = 0 ]; then
        runner=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        runner=(sudo)
    else
        say "missing: ${packages[*]}. Installing them needs root: run this once as root, then the make target again:"
        say "  apt-get update && apt-get install -y ${packages[*]}"
        exit 1
    fi
    if ((dry_run)); then
        sudo="${runner[*]:+sudo }"
        say "would run: ${sudo}apt-get update && ${sudo}apt-get install -y ${packages[*]}"
    else
        say "installing from Debian: ${packages[*]}"
        "${runner[@]}" apt-get update -qq
        "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
    fi
fi

# --- Go (pinned, from the Go module proxy) ------------------------------------------------------------------
if ((need_go)); then
    proxy="${GOPROXY:-https://proxy.golang.org}"
    proxy="${proxy%%[,|]*}"
    case "$proxy" in off | direct | "") proxy=https://proxy.golang.org ;; esac
    go_zip_url="${proxy%/}/golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-$go_arch.zip"
    if ((dry_run)); then
        say "would install Go $GO_VERSION from $go_zip_url into $TOOLS/go (linked as $BIN/go)"
    else
        say "installing Go $GO_VERSION from $go_zip_url into $TOOLS/go (linked as $BIN/go)"
        mkdir -p "$TOOLS" "$BIN"
        # Python, not curl/unzip (a minimal Debian has neither): download, check, unpack with the file modes.
        "$PYTHON" - "$go_zip_url" "$go_sha256" "$TOOLS/go" <<'PY' || exit 1
import hashlib, os, shutil, sys, tempfile, urllib.request, zipfile

url, sha256, dest = sys.argv[1:]
with tempfile.TemporaryFile() as tmp:
    with urllib.request.urlopen(url, timeout=120) as response:
        shutil.copyfileobj(response, tmp)
    tmp.seek(0)
    h = hashlib.sha256()
    for block in iter(lambda: tmp.read(1 << 20), b""):
        h.update(block)
    if h.hexdigest() != sha256:
        sys.exit(f"bootstrap: {url} has sha256 {h.hexdigest()}, expected {sha256}: not installed")
    tmp.seek(0)
    staging = tempfile.mkdtemp(prefix=".go-", dir=os.path.dirname(dest))
    with zipfile.ZipFile(tmp) as archive:
        for info in archive.infolist():
            # Every entry is golang.org/toolchain@<version>/<path>: the toolchain's GOROOT is below that.
            name = info.filename.split("/", 2)[2] if info.filename.count("/") >= 2 else ""
            if not name or name.endswith("/") or ".." in name.split("/"):
                continue
            target = os.path.join(staging, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            os.chmod(target, (info.external_attr >> 16) & 0o777 or 0o644)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(staging, dest)
PY
        ln -sf "$TOOLS/go/bin/go" "$BIN/go"
        ln -sf "$TOOLS/go/bin/gofmt" "$BIN/gofmt"
        [ "$(go_version_of "$BIN/go")" = "go$GO_VERSION" ] || {
            say "Go $GO_VERSION did not install into $TOOLS/go"
            exit 1
        }
    fi
fi

# --- uv (pinned) -------------------------------------------------------------------------------------------
if ((need_uv)); then
    if ((dry_run)); then
        say "would install uv $UV_VERSION into $TOOLS/uv (linked as $BIN/uv)"
    else
        say "installing uv $UV_VERSION into $TOOLS/uv (linked as $BIN/uv)"
        rm -rf "$TOOLS/uv"
        mkdir -p "$TOOLS" "$BIN"
        "$PYTHON" -m venv "$TOOLS/uv"
        "$TOOLS/uv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
        ln -sf "$TOOLS/uv/bin/uv" "$BIN/uv"
        uv_ok "$BIN/uv" || {
            say "uv $UV_VERSION did not install into $TOOLS/uv"
            exit 1
        }
    fi
fi

if ((dry_run)); then
    ((${#packages[@]} + need_uv + need_go)) || say "nothing to install for '$target'"
fi
exit 0
