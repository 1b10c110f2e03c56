#!/usr/bin/env bash
# Build the pinned Helm from the Go module proxy into <repo>/.kasse/bin/helm (no prebuilt download).
# Idempotent: does nothing when that binary is already the pinned version.
#
#   deploy/tools/install-helm.sh            # then: .kasse/bin/helm version
#
# Needs Go (>= 1.24). About 3 minutes on 2 cores with a cold module cache, seconds when cached.
# Environment: HELM_VERSION (default v3.19.0), KASSE_BIN (default <repo>/.kasse/bin).
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.19.0}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${KASSE_BIN:-$REPO/.kasse/bin}"
MODULE="helm.sh/helm/v3"
LDFLAGS="-s -w -X ${MODULE}/internal/version.version=${HELM_VERSION}"

command -v go >/dev/null || { echo "install-helm: Go is needed (apt-get install golang, or see go.dev)" >&2; exit 1; }

# The binary records the module version it was built from: that is what we compare.
if [ -x "$BIN/helm" ] && go version -m "$BIN/helm" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+${MODULE}[[:space:]]+${HELM_VERSION}([[:space:]]|$)"; then
    echo "install-helm: $BIN/helm is already ${HELM_VERSION}"
    exit 0
fi

mkdir -p "$BIN"
start=$SECONDS
echo "install-helm: building helm ${HELM_VERSION} from the Go module proxy into $BIN ..."
if ! GOBIN="$BIN" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install -trimpath -ldflags "$LDFLAGS" "${MODULE}/cmd/helm@${HELM_VERSION}"; then
    # Fallback for proxies that refuse `go install pkg@version`: fetch the module, build inside it.
    echo "install-helm: go install failed; building from the downloaded module instead" >&2
    dir="$(go mod download -json "${MODULE}@${HELM_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [ -n "$dir" ] || { echo "install-helm: go mod download ${MODULE}@${HELM_VERSION} failed" >&2; exit 1; }
    work="$(mktemp -d)"
    trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
    cp -r "$dir/." "$work/"
    chmod -R u+w "$work"
    (cd "$work" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod" go build -trimpath -ldflags "$LDFLAGS" -o "$BIN/helm" ./cmd/helm)
fi
"$BIN/helm" version --short
echo "install-helm: done in $((SECONDS - start))s"
