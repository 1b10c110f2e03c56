"""Prometheus gauges of the running experiments, per variant (served by the runtime's `/metrics`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from kasse_metrics.application.experiments import ExperimentReports

PER_VARIANT = (
    ("sessions", "kasse_metrics_experiment_sessions", "Sessions exposed to the variant"),
    ("conversion_rate", "kasse_metrics_experiment_conversion_rate", "Exposed sessions that paid (0..1)"),
    ("revenue_per_session", "kasse_metrics_experiment_revenue_per_session_minor", "Captured revenue per session"),
    ("average_order_value", "kasse_metrics_experiment_average_order_value_minor", "Average captured order"),
    ("payment_failure_rate", "kasse_metrics_experiment_payment_failure_rate", "Orders whose payment failed (0..1)"),
    ("refund_rate", "kasse_metrics_experiment_refund_rate", "Captured orders refunded (0..1)"),
)


class ExperimentCollector:
    def __init__(self, reports: ExperimentReports) -> None:
        self.reports = reports

    def collect(self) -> Iterator[Any]:
        labels = ["experiment", "variant"]
        families = {key: GaugeMetricFamily(name, doc, labels=labels) for key, name, doc in PER_VARIANT}
        difference = GaugeMetricFamily(
            "kasse_metrics_experiment_difference", "Variant minus control on the primary metric", labels=labels
        )
        p_value = GaugeMetricFamily(
            "kasse_metrics_experiment_always_valid_p", "Always-valid p-value of the primary metric", labels=labels
        )
        decided = GaugeMetricFamily(
            "kasse_metrics_experiment_decision",
            "1 for the variant's current decision (keep_running, variant_better, …)",
            labels=[*labels, "decision"],
        )
        srm = GaugeMetricFamily(
            "kasse_metrics_experiment_sample_ratio_mismatch",
            "1 when the sample-ratio alarm is on",
            labels=["experiment"],
        )
        for report in self.reports.reports():
            exp = report["experiment_id"]
            srm.add_metric([exp], 1.0 if report["sample_ratio"]["mismatch"] else 0.0)
            for v in report["variants"]:
                for key, family in families.items():
                    if v[key] is not None:
                        family.add_metric([exp, v["variant"]], float(v[key]))
                comparison = v.get("comparison")
                if comparison is not None:
                    if comparison["difference"] is not None:
                        difference.add_metric([exp, v["variant"]], comparison["difference"])
                    p_value.add_metric([exp, v["variant"]], comparison["always_valid_p"])
                    decided.add_metric([exp, v["variant"], v["decision"]], 1.0)
        yield from (*families.values(), difference, p_value, decided, srm)
