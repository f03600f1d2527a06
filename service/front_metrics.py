"""Prometheus metrics of a multi-worker front: every worker's metrics, merged, on the front's port.

Each worker serves its own metrics (`service.metrics`, the names of docs/operators.md) on a private
loopback port; at scrape time, on prometheus-client's HTTP thread, this collector reads each ready
worker's page and merges them into the single service's names:
- a series with a `session` label (latency histograms, late counts) is kept as it is, with a
  `worker` label added (session ids are unique over workers);
- any other series is summed over workers (counters, histogram buckets and sums, gauges such as
  sessions, queue depth and cache pages), except `*_created` (the earliest) and
  `streamstyle_clients`, which is the front's own count of connected clients;
- the front adds `streamstyle_worker_up{worker, device}` (1 while a worker takes sessions) and
  `streamstyle_worker_restarts_total{worker}`.
A worker that does not answer within a second is left out of that scrape (its `worker_up` says
why the sums dropped). The front's loop is never touched: the collector reads only the workers'
list and each one's port and state, plain values the loop writes.
"""

from __future__ import annotations

import logging
import urllib.request

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from .metrics import HTTPExport

log = logging.getLogger("streamstyle.front")

SCRAPE_TIMEOUT_S = 1.0
FRONT_OWN = frozenset({"streamstyle_clients"})  # families the front reports itself


def merge_families(pages: dict[int, str]) -> list[Metric]:
    """Workers' metrics pages (worker index -> Prometheus text) merged as the module says."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict] = {}  # family -> (sample name, labels) -> value
    for k, text in sorted(pages.items()):
        for fam in text_string_to_metric_families(text):
            if fam.name in FRONT_OWN:
                continue
            if fam.name not in merged:
                merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            acc = values[fam.name]
            for s in fam.samples:
                labels = dict(s.labels)
                if "session" in labels:
                    labels["worker"] = str(k)
                key = (s.name, tuple(sorted(labels.items())))
                if key not in acc:
                    acc[key] = s.value
                elif s.name.endswith("_created"):
                    acc[key] = min(acc[key], s.value)
                else:
                    acc[key] += s.value
    for name, fam in merged.items():
        for (sample, labels), value in values[name].items():
            fam.add_sample(sample, dict(labels), value)
    return list(merged.values())


class WorkersCollector:
    def __init__(self, front):
        self.front = front

    def collect(self):
        front = self.front
        workers = list(front.workers)  # one copy: the loop may restart one meanwhile
        pages = {}
        for w in workers:
            port = w.metrics_port
            if not (w.ready and port):
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as r:
                    pages[w.index] = r.read().decode()
            except OSError as exc:
                log.warning("metrics of worker %d unread: %s", w.index, exc)
        yield from merge_families(pages)
        clients = GaugeMetricFamily("streamstyle_clients", "connected clients")
        clients.add_metric([], float(len(front.clients)))
        yield clients
        up = GaugeMetricFamily("streamstyle_worker_up", "1 while a worker takes sessions", labels=["worker", "device"])
        for w in workers:
            up.add_metric([str(w.index), w.device], 1.0 if w.ready and w.index in pages else 0.0)
        yield up
        restarts = CounterMetricFamily("streamstyle_worker_restarts", "worker processes restarted by the front",
                                       labels=["worker"])
        for w in workers:
            restarts.add_metric([str(w.index)], float(w.restarts))
        yield restarts


class FrontMetrics(HTTPExport):
    _what = "metrics (every worker's, merged)"

    def __init__(self, front):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(WorkersCollector(front))
        self._server = None
        self.port: int | None = None

