"""Delivery on the real stack against local receivers (127.0.0.1, allow-listed in these settings):
signed CloudEvents, order per key, retries on schedule (fake clock), failures of every kind, a dead
endpoint next to a healthy one, disabling, replay, resend and secret rotation."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from kasse_contracts import topics
from kasse_contracts.events import OrderCancelled, OrderPlaced, WebhookEndpointDisabled, WebhookEndpointEnabled
from kasse_testkit import TestPublisher, wait_until
from kasse_testkit.receiver import Receiver
from kasse_testkit.samples import eur, order_placed

from .conftest import ADMIN, Webhooks

pytestmark = pytest.mark.integration


def cancelled(order: OrderPlaced) -> OrderCancelled:
    return OrderCancelled(
        occurred_at=order.occurred_at,
        session_id=order.session_id,
        order_id=order.order_id,
        reason="customer_request",
        total=eur(100),
    )


async def publish_orders(publisher: TestPublisher, count: int) -> list[tuple[str, list[str]]]:
    """`count` orders, each placed then cancelled: (order id, [event ids in order])."""
    out = []
    for _ in range(count):
        order = order_placed()
        placed = await publisher.publish(order)
        gone = await publisher.publish(cancelled(order))
        out.append((order.order_id, [placed.event_id, gone.event_id]))
    return out


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_signed_cloudevents_in_order_per_key_and_a_dead_endpoint_never_delays_a_healthy_one(
    webhooks: Webhooks, test_publisher: TestPublisher
) -> None:
    async with Receiver() as healthy, Receiver(mode="hang") as dead, Receiver(mode="slow", slow_s=0.3) as slow:
        ep = await webhooks.register(healthy.url, ["io.kasse.cart.*"])
        healthy.secrets = [ep["secret"]]
        await webhooks.register(dead.url, ["*"])
        slow_ep = await webhooks.register(slow.url, ["io.kasse.cart.OrderPlaced.v1"])
        orders = await publish_orders(test_publisher, 5)
        await wait_until(lambda: len(healthy.delivered()) == 10, timeout=30, message=lambda: str(healthy.requests))

        assert all(r.verified for r in healthy.requests)  # standardwebhooks verifies every one
        first = healthy.delivered()[0]
        assert first.headers["content-type"] == "application/cloudevents+json"
        assert first.headers["webhook-id"] == first.event["id"]
        assert first.event["specversion"] == "1.0" and first.event["type"] == "io.kasse.cart.OrderPlaced.v1"
        assert OrderPlaced.model_validate(first.event["data"]).order_id == first.event["subject"]
        for order_id, event_ids in orders:  # order per key kept
            seen = [r.headers["webhook-id"] for r in healthy.delivered() if r.event["subject"] == order_id]
            assert seen == event_ids
        # the dead endpoint hung on its first attempts (timeouts) all along
        await wait_until(lambda: dead.requests, timeout=30, message="the dead endpoint was tried")
        assert not dead.delivered()

        async def slow_log() -> list[dict[str, Any]] | None:
            log = await webhooks.deliveries(slow_ep["endpoint_id"])
            return log if len(log) == 5 and all(d["status"] == "succeeded" for d in log) else None

        log = await wait_until(slow_log, timeout=30)
        assert len(slow.delivered()) == 5 and all(d["attempts"][0]["latency_ms"] >= 250 for d in log)


async def test_failures_of_every_kind_are_retried_on_schedule_until_the_receiver_recovers(
    webhooks: Webhooks, test_publisher: TestPublisher
) -> None:
    async with Receiver(mode="error") as receiver:
        ep = await webhooks.register(receiver.url, ["io.kasse.cart.OrderPlaced.v1"])
        record = await test_publisher.publish(order_placed())

        async def attempts(n: int) -> dict[str, Any] | None:
            log = await webhooks.deliveries(ep["endpoint_id"])
            return log[0] if log and log[0]["attempt_count"] == n else None

        # attempt 1: 500 -> next after 60 s (the schedule), the long error page kept only in part
        d = await wait_until(lambda: attempts(1), timeout=30)
        assert d["attempts"][0]["status_code"] == 500 and len(d["attempts"][0]["response"]) == 1024
        assert at(d["next_attempt_at"]) == webhooks.clock.now() + timedelta(seconds=60)
        # attempt 2: the connection is closed without an answer -> 120 s
        receiver.mode = "close"
        webhooks.clock.advance(timedelta(seconds=60))
        d = await wait_until(lambda: attempts(2), timeout=30)
        assert d["attempts"][1]["status_code"] is None and d["attempts"][1]["error"]
        assert at(d["next_attempt_at"]) == webhooks.clock.now() + timedelta(seconds=120)
        # attempt 3: no answer within the timeout -> 240 s
        receiver.mode = "hang"
        webhooks.clock.advance(timedelta(seconds=120))
        d = await wait_until(lambda: attempts(3), timeout=30)
        assert "timeout" in d["attempts"][2]["error"]
        assert at(d["next_attempt_at"]) == webhooks.clock.now() + timedelta(seconds=240)
        # recovered: attempt 4 delivers; the message is the same one all along
        receiver.mode = "ok"
        webhooks.clock.advance(timedelta(seconds=240))
        d = await wait_until(lambda: attempts(4), timeout=30)
        assert d["status"] == "succeeded" and d["attempts"][3]["status_code"] == 200
        assert {r.headers["webhook-id"] for r in receiver.requests} == {record.event_id}
        assert len(receiver.delivered()) == 1


async def test_retry_after_is_honoured_and_a_redirect_is_not_followed(
    webhooks: Webhooks, test_publisher: TestPublisher
) -> None:
    async with Receiver(mode="unavailable", retry_after="600") as receiver, Receiver(mode="redirect") as mover:
        ep = await webhooks.register(receiver.url, ["io.kasse.cart.OrderPlaced.v1"])
        moved = await webhooks.register(mover.url, ["io.kasse.cart.OrderPlaced.v1"])
        await test_publisher.publish(order_placed())

        async def first_attempt(endpoint_id: str) -> dict[str, Any] | None:
            log = await webhooks.deliveries(endpoint_id)
            return log[0] if log and log[0]["attempt_count"] == 1 else None

        d = await wait_until(lambda: first_attempt(ep["endpoint_id"]), timeout=30)
        assert d["attempts"][0]["status_code"] == 503
        assert at(d["next_attempt_at"]) == webhooks.clock.now() + timedelta(seconds=600)  # not 60
        d = await wait_until(lambda: first_attempt(moved["endpoint_id"]), timeout=30)
        assert d["attempts"][0]["status_code"] == 302 and d["status"] == "pending"
        assert len(mover.requests) == 1  # the Location was not fetched


async def test_an_endpoint_failing_for_the_whole_schedule_is_disabled_and_the_operator_told(
    webhooks: Webhooks, test_publisher: TestPublisher, topic_reader: Any
) -> None:
    async with (
        topic_reader(topics.WEBHOOKS) as told,
        Receiver(mode="error") as dead,
        Receiver() as healthy,
    ):
        ep = await webhooks.register(dead.url, ["io.kasse.cart.OrderPlaced.v1"])
        await webhooks.register(healthy.url, ["io.kasse.cart.OrderPlaced.v1"])
        kept = await test_publisher.publish(order_placed())

        async def recorded(n: int) -> bool:
            log = await webhooks.deliveries(ep["endpoint_id"])
            return bool(log) and log[0]["attempt_count"] == n

        for n, wait in ((1, 60), (2, 120), (3, 240)):
            await wait_until(lambda n=n: recorded(n), timeout=30)  # attempt n recorded, its next one scheduled
            webhooks.clock.advance(timedelta(seconds=wait))
        endpoint = await wait_until(
            lambda: _disabled(webhooks, ep["endpoint_id"]), timeout=30, message="endpoint not disabled"
        )
        assert "failed 4 times" in endpoint["disabled_reason"]
        assert len(dead.requests) == 4 and len(healthy.delivered()) == 1
        (delivery,) = await webhooks.deliveries(ep["endpoint_id"])
        assert delivery["status"] == "failed"
        metrics = (await webhooks.client.get("/metrics")).text
        assert "kasse_webhooks_endpoints_disabled_total 1.0" in metrics
        assert 'kasse_webhooks_endpoints{status="disabled"} 1.0' in metrics
        # ... and the contract event, from the endpoint's outbox (written with the disable)
        (disabled,) = await told.wait_for_events(WebhookEndpointDisabled)
        assert disabled.endpoint_id == ep["endpoint_id"] and disabled.url_host == "127.0.0.1"
        assert (disabled.attempts, disabled.last_status_code) == (4, dead.requests[-1].answered)
        assert disabled.delivery_id == delivery["delivery_id"] and disabled.failed_event_type == OrderPlaced.event_type
        assert disabled.failing_since == at(delivery["created_at"]) and disabled.reason == endpoint["disabled_reason"]
        assert ep["secret"] not in told.records[0].value.decode() and "/" not in disabled.url_host
        # new events are not attempted while disabled; after the fix, enabling delivers what was kept
        await test_publisher.publish(order_placed())
        await wait_until(lambda: len(healthy.delivered()) == 2, timeout=30)
        assert len(dead.requests) == 4
        dead.mode = "ok"
        response = await webhooks.client.post(f"/v1/admin/endpoints/{ep['endpoint_id']}/enable", headers=ADMIN)
        assert response.status_code == 200 and response.json()["status"] == "enabled"
        await wait_until(lambda: dead.delivered(), timeout=30)
        assert {r.headers["webhook-id"] for r in dead.delivered()} == {kept.event_id}  # what was kept, nothing new
        (enabled,) = await told.wait_for_events(WebhookEndpointEnabled)
        assert enabled.endpoint_id == ep["endpoint_id"] and enabled.disabled_at == at(endpoint["disabled_at"])
        # one key, one partition: the disable came before the enable, exactly once
        assert [r.event_type for r in told.records] == [
            WebhookEndpointDisabled.event_type,
            WebhookEndpointEnabled.event_type,
        ]
        assert {r.key for r in told.records} == {ep["endpoint_id"].encode()}


async def _disabled(webhooks: Webhooks, endpoint_id: str) -> dict[str, Any] | None:
    endpoint = await webhooks.endpoint(endpoint_id)
    return endpoint if endpoint["status"] == "disabled" else None


async def test_replay_since_a_time_or_an_offset_and_resend(webhooks: Webhooks, test_publisher: TestPublisher) -> None:
    async with Receiver() as receiver:
        ep = await webhooks.register(receiver.url, ["io.kasse.cart.*"])
        since = webhooks.clock.now()
        orders = await publish_orders(test_publisher, 3)
        await wait_until(lambda: len(receiver.delivered()) == 6, timeout=30)
        original = [r.headers["webhook-id"] for r in receiver.delivered()]

        # the subscriber lost its database: everything since `since`, again, in the same order per key
        response = await webhooks.client.post(
            f"/v1/admin/endpoints/{ep['endpoint_id']}/replay", json={"since": since.isoformat()}, headers=ADMIN
        )
        assert response.status_code == 202 and response.json()["queued"] == 6
        await wait_until(lambda: len(receiver.delivered()) == 12, timeout=30)
        replayed = [r.headers["webhook-id"] for r in receiver.delivered()[6:]]
        assert sorted(replayed) == sorted(original)
        for order_id, event_ids in orders:
            seen = [r.headers["webhook-id"] for r in receiver.delivered()[6:] if r.event["subject"] == order_id]
            assert seen == event_ids

        # or from a Kafka offset: the last event of the orders partition that held the first order
        log = await webhooks.deliveries(ep["endpoint_id"], limit=100)
        assert {d["origin"] for d in log} == {"event", "replay"}
        first = next(r for r in receiver.delivered() if r.headers["webhook-id"] == orders[0][1][1])
        assert first.event["type"] == "io.kasse.cart.OrderCancelled.v1"
        response = await webhooks.client.post(
            f"/v1/admin/endpoints/{ep['endpoint_id']}/replay",
            json={"from_offsets": [{"topic": "kasse.orders.v1", "partition": p, "offset": 10**9} for p in range(6)]},
            headers=ADMIN,
        )
        assert response.status_code == 202 and response.json()["queued"] == 0
        response = await webhooks.client.post(
            f"/v1/admin/endpoints/{ep['endpoint_id']}/replay",
            json={"from_offsets": [{"topic": "kasse.orders.v1", "partition": p, "offset": 0} for p in range(6)]},
            headers=ADMIN,
        )
        assert response.status_code == 202 and response.json()["queued"] == 6
        await wait_until(lambda: len(receiver.delivered()) == 18, timeout=30)

        # manual resend of one delivery: the same message (webhook-id) once more
        delivered = next(d for d in log if d["status"] == "succeeded")
        response = await webhooks.client.post(f"/v1/admin/deliveries/{delivered['delivery_id']}/resend", headers=ADMIN)
        assert response.status_code == 202 and response.json()["origin"] == "resend"
        await wait_until(lambda: len(receiver.delivered()) == 19, timeout=30)
        assert receiver.delivered()[-1].headers["webhook-id"] == delivered["event_id"]
        bad = await webhooks.client.post(f"/v1/admin/endpoints/{ep['endpoint_id']}/replay", json={}, headers=ADMIN)
        assert bad.status_code == 422


async def test_secret_rotation_old_and_new_both_verify_during_the_grace_period(
    webhooks: Webhooks, test_publisher: TestPublisher
) -> None:
    async with Receiver() as receiver:
        ep = await webhooks.register(receiver.url, ["io.kasse.cart.OrderPlaced.v1"])
        old = ep["secret"]
        await test_publisher.publish(order_placed())
        await wait_until(lambda: len(receiver.delivered()) == 1, timeout=30)
        response = await webhooks.client.post(
            f"/v1/admin/endpoints/{ep['endpoint_id']}/rotate-secret", json={"grace_period_s": 3600}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        new = response.json()["secret"]
        assert new != old and new.startswith("whsec_")
        await test_publisher.publish(order_placed())
        await wait_until(lambda: len(receiver.delivered()) == 2, timeout=30)
        during = receiver.delivered()[1]
        for secret in (old, new):
            Webhook(secret).verify(during.body, during.headers)
        webhooks.clock.advance(timedelta(seconds=3601))  # grace period over: the old secret no longer signs
        await test_publisher.publish(order_placed())
        await wait_until(lambda: len(receiver.delivered()) == 3, timeout=30)
        after = receiver.delivered()[2]
        Webhook(new).verify(after.body, after.headers)
        with pytest.raises(Exception, match="No matching signature"):
            Webhook(old).verify(after.body, after.headers)


async def test_admin_api_is_guarded_and_refuses_unsafe_endpoints(webhooks: Webhooks) -> None:
    body = {"url": "http://127.0.0.1:9/x", "event_types": ["*"]}
    assert (await webhooks.client.post("/v1/admin/endpoints", json=body)).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await webhooks.client.post("/v1/admin/endpoints", json=body, headers=wrong)).status_code == 403
    for url in ("http://169.254.169.254/latest/meta-data", "http://10.0.0.8/hook", "http://[::1]:9/x"):
        response = await webhooks.client.post("/v1/admin/endpoints", json={**body, "url": url}, headers=ADMIN)
        assert response.status_code == 422 and "allow-listed" in response.json()["detail"], response.text
    response = await webhooks.client.post("/v1/admin/endpoints", json={**body, "event_types": []}, headers=ADMIN)
    assert response.status_code == 422
    assert (await webhooks.client.get("/v1/admin/endpoints/ep_nope", headers=ADMIN)).status_code == 404
