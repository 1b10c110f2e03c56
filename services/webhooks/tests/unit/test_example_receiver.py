"""contracts/examples/webhook_receiver.py accepts what Kasse signs and refuses anything else."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from kasse_webhooks.application.delivery import Signer
from kasse_webhooks.domain.endpoints import new_secret

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[4] / "contracts" / "examples" / "webhook_receiver.py"
BODY = b'{"specversion":"1.0","id":"e-1","type":"io.kasse.cart.OrderPlaced.v1","subject":"ord_1","data":{}}'


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_receiver_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example_url() -> Iterator[tuple[str, list[str]]]:
    old, new = new_secret(), new_secret()
    example = load_example()
    server = ThreadingHTTPServer(("127.0.0.1", 0), example.make_handler([new], set()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", [old, new]
    finally:
        server.shutdown()
        server.server_close()


def test_the_example_receiver_verifies_with_the_library(example_url: tuple[str, list[str]]) -> None:
    url, (old, new) = example_url
    signer = Signer()
    with httpx.Client(timeout=5) as client:
        assert client.post(url, content=BODY, headers=signer.headers("e-1", [new], BODY)).status_code == 204
        # during a rotation Kasse signs with both; the receiver that already has the new one accepts
        assert client.post(url, content=BODY, headers=signer.headers("e-2", [new, old], BODY)).status_code == 204
        assert client.post(url, content=BODY, headers=signer.headers("e-3", [old], BODY)).status_code == 400
        tampered = BODY.replace(b"ord_1", b"ord_2")
        assert client.post(url, content=tampered, headers=signer.headers("e-4", [new], BODY)).status_code == 400
        assert client.post(url, content=BODY).status_code == 400
