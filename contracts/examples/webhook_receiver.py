"""Receive Kasse's webhooks and verify them with the Standard Webhooks library only — no Kasse code.

    pip install standardwebhooks
    KASSE_WEBHOOK_SECRET=whsec_... python webhook_receiver.py --port 9000

Register http(s)://<this host>:9000/ with Kasse's webhooks service (POST /v1/admin/endpoints); put the
`secret` it answers in KASSE_WEBHOOK_SECRET. During a secret rotation give both, separated by a space:
a message is accepted when either verifies. Each request body is a CloudEvent in JSON structured mode
(`type`, `id`, `subject`, `data` = the payload, same JSON Schemas as on Kafka). Answers 204 when the
signature is valid (and prints one JSON line), 400 when it is not. Deliveries are at least once:
deduplicate on `webhook-id`. Answer 2xx only once the event is safely stored: anything else is retried.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

MAX_BODY = 1_000_000


def verify(secrets: list[str], body: bytes, headers: dict[str, str]) -> dict[str, object] | None:
    """The CloudEvent when one of the secrets verifies the signature (and the timestamp is fresh)."""
    for secret in secrets:
        try:
            return dict(Webhook(secret).verify(body, headers))
        except WebhookVerificationError:
            continue
    return None


def make_handler(secrets: list[str], seen: set[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                self.send_error(413)
                return
            body = self.rfile.read(length)
            event = verify(secrets, body, {k.lower(): v for k, v in self.headers.items()})
            if event is None:
                self.send_error(400, "invalid signature")
                return
            message_id = self.headers["webhook-id"]
            if message_id not in seen:  # at least once: a retry or replay repeats the webhook-id
                seen.add(message_id)
                print(json.dumps({"webhook_id": message_id, "type": event["type"], "subject": event["subject"]}))
                sys.stdout.flush()
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # quiet: the JSON lines are the output
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    secrets = os.environ.get("KASSE_WEBHOOK_SECRET", "").split()
    if not secrets:
        print("set KASSE_WEBHOOK_SECRET to the endpoint's whsec_… secret", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer((args.host, args.port), make_handler(secrets, set()))
    print(f"listening on http://{args.host}:{args.port}/", file=sys.stderr)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
