"""``--metrics-port``: ``/metrics`` in Prometheus' text exposition format (prometheus-client).

The only module that imports ``prometheus_client``. Nothing here runs per request: a custom
collector reads the server's meter (``multiserve.meter``) when scraped, so the counters are the
meter's plain integers, not prometheus-client's locked ones. Families:

``multiserve_connections_total``, ``multiserve_connections_open``, ``multiserve_requests_total``,
``multiserve_errors_total{kind}`` (``meter.ERROR_KINDS``), ``multiserve_request_duration_seconds``
(a histogram on ``meter.BOUNDS_SECONDS``): the whole server, summed over hybrid's workers. Under
hybrid, the same four scalar ones per worker as ``multiserve_worker_*{worker="N"}`` (N the
worker's slot; apart, so that ``sum()`` over a family never counts a request twice), and
``multiserve_handoffs_total{outcome}`` (``meter.HANDOFF_OUTCOMES``; per worker too). Plus
prometheus-client's ``process_*`` families (the supervisor's, under hybrid).

The server is prometheus-client's own (a WSGI server on a thread of its own). Under gevent that
thread is a greenlet and its sockets and selector are cooperative (``multiserve.server`` starts it
only once the process is patched; socketserver's ``PollSelector`` is then ``gevent.select.poll``),
so a scrape takes the hub only while it formats. Checked: 200 sequential requests took 25 ms on a
gevent server whose metrics server sat in its 0.5 s ``serve_forever`` poll (a blocking poll would
have held each for up to 0.5 s), and 20 scrapes interleaved with requests 174 ms.
"""
from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .meter import (BOUNDS_SECONDS, BUCKETS, CONNECTIONS, DURATION_NS, ERROR_KINDS, HANDOFF_OUTCOMES, KIND_INDEX,
                    OUTCOME_INDEX, WIDTH, requests)

log = logging.getLogger(__name__)


class MeterCollector:
    """A prometheus-client collector over a meter's ``snapshot()``."""

    def __init__(self, meter):
        self.meter = meter

    def describe(self):
        return []  # families are made at each scrape; nothing to check at registration

    def collect(self):
        samples = self.meter.snapshot()
        total = [0] * WIDTH
        for sample in samples:
            for i in range(CONNECTIONS, WIDTH):
                total[i] += sample.counts[i]
        open_now = sum(sample.open for sample in samples)
        yield from self._scalars("multiserve_", [([], total, open_now)], [])
        yield self._histogram(total)
        if self.meter.per_worker:  # hybrid: the only engine whose workers hand connections off
            rows = [([str(s.worker)], s.counts, s.open) for s in samples]
            yield self._handoffs("multiserve_", [([], total)], [])
            yield from self._scalars("multiserve_worker_", rows, ["worker"])
            yield self._handoffs("multiserve_worker_", [(values, counts) for values, counts, _ in rows], ["worker"])

    @staticmethod
    def _handoffs(prefix: str, rows, labels: list[str]) -> CounterMetricFamily:
        family = CounterMetricFamily(prefix + "handoffs_total",
                                     "Connections of retiring workers: handed_off to a live worker, closed "
                                     "instead, or adopted from one.", labels=[*labels, "outcome"])
        for values, counts in rows:
            for outcome in HANDOFF_OUTCOMES:
                family.add_metric([*values, outcome], counts[OUTCOME_INDEX[outcome]])
        return family

    @staticmethod
    def _scalars(prefix: str, rows, labels: list[str]):
        connections = CounterMetricFamily(prefix + "connections_total", "Connections accepted.", labels=labels)
        opened = GaugeMetricFamily(prefix + "connections_open", "Connections open now.", labels=labels)
        answered = CounterMetricFamily(prefix + "requests_total", "Requests answered.", labels=labels)
        errors = CounterMetricFamily(prefix + "errors_total",
                                     "Connections that ended on an error, by kind; kind=service: "
                                     "requests whose handler raised.", labels=[*labels, "kind"])
        for values, counts, open_now in rows:
            connections.add_metric(values, counts[CONNECTIONS])
            opened.add_metric(values, open_now)
            answered.add_metric(values, requests(counts))
            for kind in ERROR_KINDS:
                errors.add_metric([*values, kind], counts[KIND_INDEX[kind]])
        return connections, opened, answered, errors

    @staticmethod
    def _histogram(counts) -> HistogramMetricFamily:
        buckets, cumulative = [], 0
        for i, bound in enumerate(BOUNDS_SECONDS):
            cumulative += counts[BUCKETS + i]
            buckets.append((repr(bound), cumulative))
        cumulative += counts[BUCKETS + len(BOUNDS_SECONDS)]
        buckets.append(("+Inf", cumulative))
        return HistogramMetricFamily("multiserve_request_duration_seconds",
                                     "Seconds from a complete request to its reply, ready to write.",
                                     buckets=buckets, sum_value=counts[DURATION_NS] / 1e9)


class MetricsServer:
    """``/metrics`` for ``meter`` on ``host:port`` (0: a free port), serving from construction
    until ``close()``. ``address`` is (host, port) as bound. Raises OSError if it cannot bind."""

    def __init__(self, meter, host: str, port: int):
        registry = CollectorRegistry()
        registry.register(MeterCollector(meter))
        registry.register(ProcessCollector(registry=None))
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.address = self._server.server_address[:2]

    def describe(self) -> str:
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
