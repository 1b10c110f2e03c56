"""OpenTelemetry in one call: tracer and meter providers, OTLP export when configured.

`OTEL_EXPORTER_OTLP_ENDPOINT` (the standard variable) switches OTLP/HTTP export on. Tests pass
their own span exporter to see spans in-process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    _instrumented: list[object] = field(default_factory=list)

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> metrics.Meter:
        return self.meter_provider.get_meter(name)

    def shutdown(self) -> None:
        """Flush and stop exporters (graceful shutdown)."""
        self.tracer_provider.force_flush()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup_telemetry(
    service: str,
    *,
    span_exporter: SpanExporter | None = None,
    set_global: bool = True,
) -> Telemetry:
    resource = Resource.create(
        {"service.name": f"kasse-{service}", "service.namespace": "kasse", "service.version": "0.1.0"}
    )
    tracer_provider = TracerProvider(resource=resource)
    readers = []
    if span_exporter is not None:
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if set_global:
        # The global providers can be set once per process; later calls keep the first.
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    _instrument_pymongo(tracer_provider)
    return Telemetry(tracer_provider, meter_provider)


_pymongo_instrumented = False


def _instrument_pymongo(tracer_provider: TracerProvider) -> None:
    global _pymongo_instrumented
    if _pymongo_instrumented:
        return
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    PymongoInstrumentor().instrument(tracer_provider=tracer_provider)
    _pymongo_instrumented = True
