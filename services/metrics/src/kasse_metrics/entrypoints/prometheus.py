"""Prometheus collector: the KPIs as gauges next to the consumer's operational metrics.

Registered on the kit runtime's registry, so they are served by the runtime's `/metrics`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from kasse_metrics.application.partitions import MergedKpis
from kasse_metrics.domain.kpis import WINDOWS, Window
from kasse_metrics.entrypoints.consumer import IngestConsumer
from kasse_metrics.entrypoints.router import RouterConsumer
from kasse_metrics.entrypoints.router_process import RouterProcess

RATES = ("conversion_rate", "cart_abandonment_rate", "payment_failure_rate", "fraud_block_rate", "refund_rate")


class KpiCollector:
    def __init__(
        self,
        kpis: MergedKpis,
        consumer: IngestConsumer,
        router: RouterConsumer | RouterProcess,
    ) -> None:
        self.router = router
        self.projection = kpis
        self.consumer = consumer

    def collect(self) -> Iterator[Any]:
        funnel = GaugeMetricFamily(
            "kasse_metrics_funnel_sessions", "Sessions reaching each funnel step", labels=["window", "step"]
        )
        rates = {
            name: GaugeMetricFamily(f"kasse_metrics_{name}", f"KPI {name.replace('_', ' ')} (0..1)", labels=["window"])
            for name in RATES
        }
        revenue = GaugeMetricFamily(
            "kasse_metrics_revenue_minor", "Captured revenue in minor units", labels=["window", "currency"]
        )
        aov = GaugeMetricFamily(
            "kasse_metrics_average_order_value_minor",
            "Average order value in minor units",
            labels=["window", "currency"],
        )
        reviews = GaugeMetricFamily("kasse_metrics_review_count", "Reviews submitted", labels=["window"])
        rating = GaugeMetricFamily("kasse_metrics_average_rating", "Average review rating", labels=["window"])
        v2p = GaugeMetricFamily(
            "kasse_metrics_median_view_to_payment_seconds", "Median first view to payment", labels=["window"]
        )
        p2s = GaugeMetricFamily(
            "kasse_metrics_median_payment_to_shipment_seconds", "Median payment to dispatch", labels=["window"]
        )
        for name in WINDOWS:
            r = self.projection.report(Window.named(name, None))
            for step in r["funnel"]:
                funnel.add_metric([name, step["step"]], step["sessions"])
            for rate in RATES:
                if r[rate]["value"] is not None:
                    rates[rate].add_metric([name], r[rate]["value"])
            for currency, money in r["revenue"].items():
                revenue.add_metric([name, currency], money["revenue"])
                if money["average_order_value"] is not None:
                    aov.add_metric([name, currency], money["average_order_value"])
            reviews.add_metric([name], r["reviews"]["count"])
            if r["reviews"]["average_rating"] is not None:
                rating.add_metric([name], r["reviews"]["average_rating"])
            if r["median_seconds_view_to_payment"] is not None:
                v2p.add_metric([name], r["median_seconds_view_to_payment"])
            if r["median_seconds_payment_to_shipment"] is not None:
                p2s.add_metric([name], r["median_seconds_payment_to_shipment"])
        yield from (funnel, *rates.values(), revenue, aov, reviews, rating, v2p, p2s)

        lag = GaugeMetricFamily(
            "kasse_metrics_consumer_lag", "Records behind the high watermark", labels=["topic", "partition"]
        )
        # The router's contract partitions and the state stage's internal ones.
        for (topic, partition), value in sorted({**self.router.lag(), **self.consumer.lag()}.items()):
            lag.add_metric([topic, str(partition)], value)
        yield lag
        held = self.projection.held()
        yield GaugeMetricFamily(
            "kasse_metrics_projection_lag_records",
            "Records checkpointed in this instance's partitions that their state has not read yet",
            value=self.projection.local.lag_records,
        )
        yield GaugeMetricFamily(
            "kasse_metrics_events_per_second",
            "Contract records ingested (routed) per second (10 s average)",
            value=self.router.events_per_second(),
        )
        for name, doc, value in (
            (
                "kasse_metrics_partitions_held",
                "Internal partitions whose state this instance holds",
                held["partitions"],
            ),
            (
                "kasse_metrics_sessions_held",
                "Sessions this instance holds (its partitions'; idle ones are folded)",
                held["sessions"],
            ),
            (
                "kasse_metrics_dedupe_ids_held",
                "Event ids held for dedupe (a bounded window per partition)",
                held["dedupe_ids"],
            ),
            (
                "kasse_metrics_minute_buckets_held",
                "Aggregate buckets held (minutes, then days)",
                held["minute_buckets"],
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        for name, doc, value in (
            (
                "kasse_metrics_sessions_folded",
                "Sessions folded into the aggregates and forgotten",
                held["sessions_folded"],
            ),
            ("kasse_metrics_records_ingested", "Contract records read by the router", self.router.records_total),
            (
                "kasse_metrics_routed_records",
                "Internal records (packed facts) read by this instance's state stage",
                self.consumer.records_total,
            ),
            ("kasse_metrics_duplicates", "Facts whose event id was already counted", self.consumer.duplicates_total),
            (
                "kasse_metrics_dead_lettered",
                "Malformed records sent to the dead-letter topic",
                self.router.dead_lettered,
            ),
            ("kasse_metrics_facts_applied", "Facts folded into this instance's partitions", held["facts_applied"]),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        if isinstance(self.router, RouterProcess):
            yield CounterMetricFamily(
                "kasse_metrics_router_process_restarts",
                "Router processes started again because the previous one ended (see the service's log)",
                value=max(0, self.router.starts - 1),
            )
