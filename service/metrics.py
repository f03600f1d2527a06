"""Prometheus metrics of one service, scraped over HTTP on an opt-in loopback port.

What must hold:
- the frame path pays only prometheus-client's own lock-protected updates (one histogram
  observation per frame, one counter increment per late frame or error): no allocation, no
  formatting, no I/O; the HTTP server runs on prometheus-client's own daemon thread;
- the scrape thread reads the service only through `ServiceGauges.collect`, which takes
  atomic snapshots (`len()` of dicts, plain ints the loop writes) and never mutates anything;
- each service has its own `CollectorRegistry` (several services can live in one process, as
  the tests do), and a closed session's latency series is removed, so memory stays bounded.

Names and labels are documented in docs/operators.md ("Metrics").
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("streamstyle.service")

# Frame latency, FRAME received to DONE sent, in milliseconds: fine around the 60 and 30 fps
# budgets (16.7 and 33.3 ms), coarse beyond, up to the CPU's default deadline.
LATENCY_BUCKETS_MS = (0.5, 1, 2, 4, 6, 8, 12, 16.7, 25, 33.3, 50, 100, 250, 1000, 5000)
GC_BUCKETS_MS = (0.1, 0.5, 1, 2, 5, 10, 25, 50, 100, 500)



class HTTPExport:
    """Serving `self.registry` on prometheus-client's HTTP server thread (the service's metrics and
    the multi-worker front's merged ones)."""

    registry: CollectorRegistry
    _server = None
    port: int | None = None
    _what = "metrics"

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP server thread; returns the bound port."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._server.server_port
        log.info("%s on http://%s:%d/metrics", self._what, host, self.port)
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

class ServiceGauges:
    """Read-only gauges taken from the service at scrape time (on the scrape thread)."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        s = self.service
        sessions = list(s.sessions.values())  # one atomic copy: the loop may add or remove meanwhile
        yield _gauge("streamstyle_sessions", "open sessions", len(sessions))
        yield _gauge("streamstyle_clients", "connected clients", len(s.clients))
        yield _gauge("streamstyle_queue_depth", "frames waiting to run, over all sessions",
                     sum(st.pending is not None for st in sessions))
        cache = s.stylizer.cache
        yield _gauge("streamstyle_cache_pages_used", "temporal-cache pages in use", cache.used_pages)
        yield _gauge("streamstyle_cache_pages_free", "temporal-cache pages free", cache.blocks.num_free)
        yield _gauge("streamstyle_control_queue_depth", "studio commands waiting for the loop", s.controls.qsize())
        if s.stylizer.device.type == "cuda":
            import torch

            dev = s.stylizer.device
            yield _gauge("streamstyle_gpu_memory_allocated_bytes", "torch's allocated GPU memory",
                         torch.cuda.memory_allocated(dev))
            yield _gauge("streamstyle_gpu_memory_reserved_bytes", "torch's reserved GPU memory",
                         torch.cuda.memory_reserved(dev))


def _gauge(name: str, doc: str, value) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], float(value))
    return g


class Metrics(HTTPExport):
    """The service's metric objects; the loop calls the `on_*` methods, the scrape thread reads."""

    def __init__(self, service):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram("streamstyle_frame_latency_ms", "frame latency, FRAME received to DONE sent (ms)",
                                 ["session"], buckets=LATENCY_BUCKETS_MS, registry=r)
        self.late = Counter("streamstyle_frames_late", "frames answered late or finished after their deadline",
                            ["session", "reason"], registry=r)
        self.frames = Counter("streamstyle_frames", "frames answered done", registry=r)
        self.errors = Counter("streamstyle_errors", "error replies sent, by code", ["code"], registry=r)
        self.gc = Histogram("streamstyle_gc_pause_ms", "Python garbage-collection pauses (ms)", ["in_frame"],
                            buckets=GC_BUCKETS_MS, registry=r)
        self.controls = Counter("streamstyle_controls", "studio commands (OSC, preview page), by source and outcome",
                                ["source", "outcome"], registry=r)
        self.recording_dropped = Counter("streamstyle_recording_dropped", "frames left out of a recording (its writer "
                                         "was behind): the game frame itself was served", ["session", "what"], registry=r)
        r.register(ServiceGauges(service))
        self._server = None
        self.port: int | None = None

    def on_frame(self, session: int, total_ms: float, late: bool) -> None:
        self.latency.labels(str(session)).observe(total_ms)
        self.frames.inc()
        if late:
            self.late.labels(str(session), "after_deadline").inc()

    def on_late(self, session: int, reason: str) -> None:
        self.late.labels(str(session), reason).inc()

    def on_error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def on_gc(self, ms: float, in_frame: bool) -> None:
        self.gc.labels("true" if in_frame else "false").observe(ms)

    def on_control(self, source: str, outcome: str) -> None:
        self.controls.labels(source, outcome).inc()

    def on_recording_dropped(self, session: int, what: str) -> None:
        self.recording_dropped.labels(str(session), what).inc()

    def on_session_closed(self, session: int) -> None:
        for metric in (self.latency,):
            try:
                metric.remove(str(session))
            except KeyError:
                pass
        for reason in ("dropped", "deadline", "after_deadline", "bypassed"):
            try:
                self.late.remove(str(session), reason)
            except KeyError:
                pass
        for what in ("output", "inputs"):
            try:
                self.recording_dropped.remove(str(session), what)
            except KeyError:
                pass

