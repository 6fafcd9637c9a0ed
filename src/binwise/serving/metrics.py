"""What operators watch: the service's Prometheus metrics, served at ``GET /metrics``.

Each app has its own registry (prometheus-client's default one is process-wide), so two services in
one process, as in the tests, never mix their counts. Routes are counted by their template
(``/v1/classify``), never by the raw path, so a scanner's random URLs cannot grow the label set;
classes and bins come from the model's taxonomy, so they are bounded too.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# most waits are under a millisecond (room free, a full batch at once); the longest end at a budget's
# limit (30 s for uploads by default)
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, *LATENCY_BUCKETS)
UNMATCHED = "unmatched"  # the route label of a request no route answered


class ServiceMetrics:
    """Counters the app updates as requests go, gauges read when Prometheus scrapes, and the
    batcher's and memory budgets' waits, which they report to the histograms wired to them here."""

    def __init__(self, classifier, batcher, in_flight, routes: set[str], drift=None, budgets: dict | None = None):
        self.routes = routes
        self.registry = CollectorRegistry()
        self.requests = Counter("binwise_requests", "HTTP requests by route and status code", ["route", "code"],
                                registry=self.registry)
        self.latency = Histogram("binwise_request_seconds", "time from the request's arrival to its response",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.answers = Counter("binwise_answers", "photos answered, by status (ok, unsure, unknown), bin, top class "
                               "and region", ["status", "bin", "class", "region"], registry=self.registry)
        Gauge("binwise_in_flight_photos", "photos past their upload: decoding, queued or in the running batch",
              registry=self.registry).set_function(in_flight)
        Gauge("binwise_queued_photos", "photos waiting for the model", registry=self.registry
              ).set_function(lambda: batcher.queued)
        info = Gauge("binwise_model_info", "the served model (always 1)", ["model", "backend"], registry=self.registry)
        info.labels(classifier.model_id, classifier.backend).set(1)
        self.registry.register(_BatchSizes(batcher))
        queue_waits = Histogram("binwise_batch_queue_wait_seconds", "time a photo waited in the batch queue before "
                                "its batch went to the model", buckets=WAIT_BUCKETS, registry=self.registry)
        batcher.on_queue_wait = queue_waits.observe
        if budgets:
            self.registry.register(_BudgetBytes(budgets))
            budget_waits = Histogram("binwise_memory_budget_wait_seconds", "time a request waited for room in a "
                                     "memory budget, however the wait ended", ["budget"], buckets=WAIT_BUCKETS,
                                     registry=self.registry)
            for name, budget in budgets.items():
                budget.on_wait = budget_waits.labels(name).observe
        if drift is not None:
            Gauge("binwise_drift_alarm", "1 while the last window of answers is unlike the held-out mix",
                  registry=self.registry).set_function(lambda: float(drift.alarm))
            self.registry.register(_DriftCounts(drift))

    def route_of(self, request) -> str:
        route = request.scope.get("route")
        path = getattr(route, "path", None)
        return path if path in self.routes else UNMATCHED

    def observe(self, route: str, code: int, seconds: float) -> None:
        self.requests.labels(route, str(code)).inc()
        self.latency.labels(route).observe(seconds)

    def answered(self, answer: dict) -> None:
        top = answer["top"][0]["en"] if answer.get("top") else ""
        self.answers.labels(answer["status"], (answer.get("bin") or {}).get("id", ""), top,
                            answer["region"]["name"]).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _DriftCounts:
    """``binwise_drift_tests_total{result}`` and the last window's p-values, read when scraped."""

    def __init__(self, drift):
        self.drift = drift

    def collect(self):
        tests = CounterMetricFamily("binwise_drift_tests", "drift windows tested, by result", labels=["result"])
        tests.add_metric(["alarm"], self.drift.alarms)
        tests.add_metric(["ok"], self.drift.windows - self.drift.alarms)
        yield tests
        last = self.drift.last
        if last is not None:
            p = GaugeMetricFamily("binwise_drift_p_value", "the last window's p-values", labels=["test"])
            p.add_metric(["statuses"], last["p_statuses"])
            p.add_metric(["classes"], last["p_classes"])
            yield p


class _BudgetBytes:
    """``binwise_memory_budget_bytes{budget, state}``: each memory budget's size and the bytes held
    (``binwise.memory``); a budget near its size makes uploads and decodes wait, then get 503/429."""

    def __init__(self, budgets: dict):
        self.budgets = budgets

    def collect(self):
        family = GaugeMetricFamily("binwise_memory_budget_bytes", "memory budgets: their size and the bytes held",
                                   labels=["budget", "state"])
        for name, budget in self.budgets.items():
            family.add_metric([name, "total"], budget.total)
            family.add_metric([name, "used"], budget.used)
        yield family


class _BatchSizes:
    """``binwise_batches_total{size}``: model calls by batch size, read from the batcher when scraped."""

    def __init__(self, batcher):
        self.batcher = batcher

    def collect(self):
        family = CounterMetricFamily("binwise_batches", "model calls by batch size (photos per call)", labels=["size"])
        for size, count in sorted(self.batcher.batch_sizes.items()):
            family.add_metric([str(size)], count)
        yield family
