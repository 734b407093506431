"""OpenTelemetry tracing, off by default (SPARK_TRACING=console|otlp turns it on).

- Every RPC is a server span, a child of the caller's `traceparent` metadata if it sent one.
- RunWorkflow stores the W3C trace context on the task row (``tasks.context``), not only in
  the job, so a sweeper re-enqueue keeps it.
- The worker continues that trace for the attempt and sends `traceparent` to the source.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

logger = logging.getLogger(__name__)

_TRACER = "spark_grpc"


def configure_tracing(mode: str, process: str) -> None:
    """Installs a tracer provider for this process; "off" leaves OpenTelemetry's no-op."""
    if mode == "off":
        return
    exporter: SpanExporter
    if mode == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError:
            logger.error("SPARK_TRACING=otlp needs opentelemetry-exporter-otlp-proto-http")
            return
        exporter = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n")
    provider = TracerProvider(resource=Resource.create({"service.name": f"spark-grpc-{process}"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)


def tracer() -> trace.Tracer:
    """The service's tracer (a no-op one when tracing is off)."""
    return trace.get_tracer(_TRACER)


def context_from_metadata(metadata: Any) -> Context:
    """The caller's trace context from gRPC metadata (W3C traceparent)."""
    carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
    return propagate.extract(carrier)


def current_carrier() -> dict[str, str]:
    """The current trace context as headers, to store on a task or send to a source."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def span_from_carrier(
    name: str, carrier: Mapping[str, str] | None, **attributes: Any
) -> Iterator[None]:
    """A span continuing the trace a task stored (no-op when tracing is off)."""
    parent = propagate.extract(dict(carrier or {}))
    with tracer().start_as_current_span(name, context=parent, attributes=attributes):
        yield
