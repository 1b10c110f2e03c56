#!/usr/bin/env bash
# Install what `make up` / `make test` need and the machine lacks, on a Debian machine that has only
# Python 3.11+ and make — or print the one command that does it. The Makefile runs it before every
# target that needs the tools, and .ci/run runs it too: this is the one place the toolchain is decided.
#
#   deploy/tools/bootstrap.sh [--for uv|up|test] [--dry-run]
#
#   --for uv    only the pinned uv
#   --for up    uv, and the local stack's builders: a JDK and Maven (Kafka from Maven Central), Go (FerretDB,
#               stripe-mock)
#   --for test  (default) also npm (the Compose schema, axe-core) and Chromium (the browser tests)
#   --dry-run   say what would be installed, change nothing; exits 1 where a real run would stop (the unit
#               test drives the decisions with it)
#
# uv: the pinned version (UV_VERSION, default 0.13.9) when `uv` on PATH is another version or absent goes
# into a repo-local virtualenv (<repo>/.kasse/tools/uv) with a link in <repo>/.kasse/bin, which the Makefile
# puts first on PATH. A virtualenv, not `pip install --user`: Debian's Python is externally managed (PEP 668).
# System packages come from Debian (apt-get) as root, or through sudo when it needs no password; otherwise the
# script prints the exact apt-get command and stops.
# Environment: UV_VERSION, KASSE_BIN (default <repo>/.kasse/bin), KASSE_TOOLS (default <repo>/.kasse/tools).
set -euo pipefail

UV_VERSION="${UV_VERSION:-0.13.9}"
GO_MIN_MINOR=21 # FerretDB asks for Go 1.24, which Go >= 1.21 fetches by itself (GOTOOLCHAIN=auto)
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
declare -A package_of=([java]=default-jdk-headless [mvn]=maven [go]=golang-go [npm]=npm [chromium]=chromium)
needed=()
case "$target" in
up) needed=(java mvn go) ;;
test) needed=(java mvn go npm chromium) ;;
esac
packages=()
for tool in "${needed[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || packages+=("${package_of[$tool]}")
done

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

# Go: Debian 12's golang-go is 1.19, too old to fetch the toolchain FerretDB and helm ask for.
if ((!dry_run)) && [[ " ${needed[*]} " == *" go "* ]]; then
    minor="$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
    if [ -z "$minor" ] || ((minor < GO_MIN_MINOR)); then
        say "Go >= 1.$GO_MIN_MINOR is needed, found $(go env GOVERSION 2>/dev/null || echo none)."
        say "  On Debian 12: enable bookworm-backports and run: apt-get install -y -t bookworm-backports golang-go"
        exit 1
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
    ((${#packages[@]} + need_uv)) || say "nothing to install for '$target'"
fi
exit 0
