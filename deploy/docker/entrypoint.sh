#!/bin/sh
# Kasse image entrypoint.
#
#   kasse-entrypoint serve          run the image's service (kasse-$KASSE_IMAGE_SERVICE, uvicorn)
#   kasse-entrypoint topics         create the contract topics + dead-letter topics (idempotent)
#   kasse-entrypoint healthcheck    GET /healthz on the service's port (Docker HEALTHCHECK)
#   kasse-entrypoint <cmd> [args]   run anything else (e.g. python -c ...)
#
# Everything is exec'd, so the Python process is PID 1 and receives SIGTERM directly.
set -eu

service="${KASSE_IMAGE_SERVICE:?KASSE_IMAGE_SERVICE is not set (the image sets it at build time)}"

default_port() {
    case "$1" in
        catalog) echo 8001 ;;
        cart) echo 8002 ;;
        payment) echo 8003 ;;
        shipping) echo 8004 ;;
        metrics) echo 8005 ;;
        storefront) echo 8000 ;;
        webhooks) echo 8006 ;;
        *) echo 8000 ;;
    esac
}

# The port the service listens on: KASSE_<SERVICE>_HTTP_PORT, else KASSE_HTTP_PORT, else its default.
port() {
    upper=$(echo "$service" | tr '[:lower:]' '[:upper:]')
    eval "p=\${KASSE_${upper}_HTTP_PORT:-}"
    # shellcheck disable=SC2154 # p is set by the eval above
    echo "${p:-${KASSE_HTTP_PORT:-$(default_port "$service")}}"
}

cmd="${1:-serve}"
case "$cmd" in
    serve)
        [ "$#" -gt 0 ] && shift
        exec "kasse-${service}" "$@"
        ;;
    topics)
        shift
        exec python -m kasse_common.topics_admin "$@"
        ;;
    healthcheck)
        exec python -c "import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$(port)/healthz', timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)"
        ;;
    *)
        exec "$@"
        ;;
esac
