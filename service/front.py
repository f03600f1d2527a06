"""The multi-worker front: one public address, one service process per device behind it.

`streamstyle serve --workers N` (or `--gpus 0,1`) runs this in the serving process; each worker
(`service.workers`) is an ordinary service on a private address that owns its device's model,
CUDA graphs and paged cache. The front, single-threaded like the service:

- answers what concerns the whole host itself: `hello` (one welcome for every worker),
  `heartbeat`, and `stats` without a session (every worker's, counters summed, the client's
  sessions of every worker listed, each naming its `worker`);
- places a session at `open`: a `cuda-ipc` ring on a worker of the GPU its regions live on (CUDA
  IPC is device-local), an `shm` ring on the least-loaded worker (fewest sessions, then pixels);
- relays every other message of a session to its worker and every answer back as the bytes it
  received (nothing re-encoded but a session's `stats`, which gains `worker`), over one ZeroMQ
  DEALER per client and worker: each worker sees each client as a peer of its own, so session
  ownership, reaping and a dead engine's shared-memory clean-up work there unchanged;
- keeps those DEALERs alive (heartbeats) while their client is, and closes them when the client
  goes (its connection closed, or silent for `reap_after_ms`, which is answered `bye` as the
  service does): the worker then reaps the client's sessions;
- restarts a worker that exits. Its sessions are gone: every client that had one there is sent
  `bye` (reason `worker_lost`) and its other links are closed, so it reconnects as after a
  service restart and reopens all its sessions on live workers (its frames in flight become
  `late`, reason `service_restarted`, on its side; frames it sends meanwhile for the lost
  sessions go unanswered for that reason). Clients without a session there notice nothing.

What must hold: every client message is decoded by `interop.protocol` (the service's own parser,
never a second copy): a message naming one of the client's sessions goes to that session's worker
as received and the worker checks it, so a bad one gets the error the single service sends; any
other is checked here in full. No message crashes the front (one catch-all answers `internal`).
Session ids are unique over workers and restarts (`workers.Worker.id_base`), so routing needs no
rewriting. Errors and limits are the contract's (`interop`): an `open` no worker can take now is
`no_worker`.
"""

from __future__ import annotations

import gc
import itertools
import logging
import shutil
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from .. import __version__
from ..interop import protocol as P
from ..interop.limits import BACKENDS, SOCKET_HWM, SOCKET_MAX_MESSAGE_BYTES
from ..model.errors import ConfigError
from .address import bind_router, claim_address
from .guard import MessageGuard
from .config import ConfigFieldError, ServiceConfig
from .workers import Worker, WorkerPool

log = logging.getLogger("streamstyle.front")

# Request types that name a session: the front relays them to the session's worker.
SESSION_TYPES = frozenset(t for t, cls in P.REQUESTS.items() if "session" in cls.FIELDS)
FRONT_REQ_BASE = 1 << 62  # the front's own requests to workers number from here
STATS_TIMEOUT_S = 5.0  # a worker busy with a long frame answers stats late; the front waits this long
START_TIMEOUT_S = 600.0  # a worker that has not answered hello by then is killed (and restarted)
BACKOFF_MAX_S = 30.0  # a worker that keeps dying young is restarted at most this often
STABLE_S = 30.0  # ...and one that ran this long before it died is restarted at once
EXIT_CHECK_S = 0.05


class WorkerStartError(ConfigError):
    """A worker exited before it first came up (its own error is in the output above)."""


@dataclass
class Link:
    """One client's DEALER to one worker: the worker knows the client by it."""

    client: "FrontClient"
    worker: Worker
    sock: zmq.Socket
    last_sent: float
    sessions: set = field(default_factory=set)
    opening: dict = field(default_factory=dict)  # req -> [pixels, ...] of opens sent, unanswered, in order


@dataclass
class FrontClient:
    identity: bytes
    last_seen: float
    welcomed: bool = False
    name: str = ""
    links: dict = field(default_factory=dict)  # worker index -> Link
    sessions: dict = field(default_factory=dict)  # session id -> Link
    # Sessions of a worker that died, until this client reconnects: their frames go unanswered
    # (the client's reconnect reports its frames in flight late, reason service_restarted).
    lost: set = field(default_factory=set)


@dataclass
class StatsQuery:
    """A client's `stats` (no session): one request to each ready worker, one merged answer."""

    identity: bytes
    req: int
    deadline: float
    waiting: dict = field(default_factory=dict)  # front req -> worker index
    replies: dict = field(default_factory=dict)  # worker index -> its stats reply


def _hello(name: str, req: int | None = None) -> bytes:
    msg = {"type": "hello", "protocol": P.PROTOCOL_VERSION, "client": name}
    if req is not None:
        msg["req"] = req
    return P.encode(msg)


_HEARTBEAT = P.encode({"type": "heartbeat"})


class Front(MessageGuard):
    def __init__(self, config: ServiceConfig, worker_args: tuple[str, ...] = (), context: zmq.Context | None = None,
                 start_timeout_s: float = START_TIMEOUT_S):
        """Start every worker, wait until each answers, then bind the public address. Raises
        AddressInUseError (before any worker starts) or WorkerStartError, leaving nothing running."""
        if not config.worker_devices:
            raise ConfigError("a front needs workers: set workers or gpus")
        for name in ("osc_port", "preview_port"):
            if getattr(config, name):
                raise ConfigFieldError(name, "OSC and the preview page serve one service's sessions: not available "
                                       "with workers (metrics are)")
        self.config = config
        self.ctx = context or zmq.Context.instance()
        claim_address(config.address)  # fail in a second, before any model loads
        self.run_dir = Path(tempfile.mkdtemp(prefix="streamstyle-workers-"))
        self.pool = WorkerPool(config, self.run_dir, worker_args, metrics=bool(config.metrics_port))
        self.workers = self.pool.workers
        self.start_timeout_s = start_timeout_s
        self.poller = zmq.Poller()
        self.owners: dict[zmq.Socket, object] = {}  # worker-side socket -> its Link, or its Worker (the front's own)
        self.control: dict[int, zmq.Socket] = {}  # worker index -> the front's own DEALER to it
        self.clients: dict[bytes, FrontClient] = {}
        self.queries: dict[int, StatsQuery] = {}
        self._reqs = itertools.count(FRONT_REQ_BASE)
        self._gone: set[bytes] = set()
        self._running = False
        self._next_heartbeat = 0.0
        self._next_exit_check = 0.0
        self._drained_at = time.monotonic()
        self.stop_signal: int | None = None
        self.errors_sent = 0
        self.relayed = 0
        self.welcome: dict = {}
        self.sock = None
        self.metrics = None
        try:
            for w in self.workers:
                self._start_worker(w)
            self._wait_ready()
            self.sock = bind_router(config, self.ctx)
            if config.metrics_port:
                self._start_metrics()
        except BaseException:
            self._close_all()
            raise
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.poller.register(self.sock, zmq.POLLIN)

    def _start_metrics(self) -> None:
        try:
            from .front_metrics import FrontMetrics
        except ModuleNotFoundError as exc:
            raise ConfigError(f"metrics need the studio extra ({exc.name} is missing): "
                              "pip install 'streamstyle[studio]'") from None
        self.metrics = FrontMetrics(self)
        try:
            self.metrics.serve(self.config.studio_host, self.config.metrics_port)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {self.config.studio_host}:{self.config.metrics_port}: {exc}") from None

    # --- workers --------------------------------------------------------------------------

    def _dealer(self, address: str) -> zmq.Socket:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, SOCKET_MAX_MESSAGE_BYTES)
        s.setsockopt(zmq.SNDHWM, SOCKET_HWM)
        s.setsockopt(zmq.RCVHWM, SOCKET_HWM)
        s.connect(address)
        return s

    def _start_worker(self, w: Worker) -> None:
        self.pool.start(w)
        sock = self._dealer(w.address)  # connects once the worker binds; the hello waits queued
        sock.send(_hello("streamstyle-front", next(self._reqs)))
        self.control[w.index] = sock
        self.owners[sock] = w
        self.poller.register(sock, zmq.POLLIN)
        log.info("worker %d: pid %d on %s, %s", w.index, w.pid, w.device, w.address)

    def _restart(self, w: Worker) -> None:
        """The next incarnation of a worker that exited; a failure to start it (no process could be
        made) is logged and tried again later: the front keeps serving the other workers."""
        try:
            self._start_worker(w)
        except Exception:
            log.error("worker %d could not be started:\n%s", w.index, traceback.format_exc())
            self.pool.kill(w)
            w.proc = None
            w.backoff_s = min(BACKOFF_MAX_S, max(0.5, 2 * w.backoff_s))
            w.retry_at = time.monotonic() + w.backoff_s

    def _wait_ready(self) -> None:
        end = time.monotonic() + self.start_timeout_s
        while not all(w.ready for w in self.workers):
            for sock, _ in self.poller.poll(100):
                self._drain_worker_socket(sock)
            for w in self.pool.exited():
                raise WorkerStartError(f"worker {w.index} ({w.device}) exited with status {w.last_exit} during "
                                       "start-up (its error is above)")
            if time.monotonic() > end:
                raise WorkerStartError(f"workers {[w.index for w in self.workers if not w.ready]} did not come up "
                                       f"within {self.start_timeout_s:.0f} s")

    def _on_welcome(self, w: Worker, msg: dict) -> None:
        w.ready, w.welcome, w.ready_at = True, msg, time.monotonic()
        log.info("worker %d ready (%s, incarnation %d)", w.index, w.device, w.incarnation)
        offered = {b for x in self.workers if x.welcome for b in x.welcome.get("backends", ())}
        self.welcome = {**msg, "service": f"streamstyle {__version__}", "heartbeat_ms": self.config.heartbeat_ms,
                        "reap_after_ms": self.config.reap_after_ms,
                        "max_sessions": self.config.max_sessions * len(self.workers),
                        "backends": [b for b in BACKENDS if b in offered], "workers": len(self.workers)}
        self.welcome.pop("req", None)

    def _close_socket(self, sock: zmq.Socket) -> None:
        self.owners.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except KeyError:
            pass
        sock.close(linger=0)

    def on_worker_exit(self, w: Worker) -> None:
        """Worker `w`'s process ended: forget its sessions, send `bye` to their clients (they
        reconnect and reopen), and schedule its next incarnation."""
        lived = time.monotonic() - (w.ready_at if w.ready_at is not None else w.started_at)
        ctrl = self.control.pop(w.index, None)
        if ctrl is not None:
            self._close_socket(ctrl)
        affected = [c for c in self.clients.values() if w.index in c.links]
        lost = clients = 0
        for c in affected:
            link = c.links[w.index]
            for req in list(link.opening):
                for _ in link.opening[req]:
                    self.error(c.identity, P.ErrorCode.NO_WORKER, f"worker {w.index} stopped before it opened the "
                               "session; open it again", req=req)
            if link.sessions:  # its sessions there are gone: it reopens all of them, as after a restart
                lost += len(link.sessions)
                clients += 1
                c.lost.update(c.sessions)
                for other in list(c.links.values()):
                    self._close_link(other)
                self.send(c.identity, {"type": "bye", "reason": "worker_lost"})
            else:
                self._close_link(link)
        w.sessions.clear()
        w.opening = w.opening_pixels = 0
        stable = w.ready_at is not None and lived >= STABLE_S
        w.backoff_s = 0.0 if stable else min(BACKOFF_MAX_S, max(0.5, 2 * w.backoff_s))
        w.retry_at = time.monotonic() + w.backoff_s
        w.restarts += 1
        log.warning("worker %d (%s) exited with status %s: %d session(s) of %d client(s) lost; restarting in %.1f s",
                    w.index, w.device, w.last_exit, lost, clients, w.backoff_s)

    # --- plumbing -------------------------------------------------------------------------

    def send(self, identity: bytes, msg: dict) -> None:
        self._to_client(identity, P.encode(msg))

    def _to_client(self, identity: bytes, data: bytes) -> None:
        try:
            self.sock.send_multipart([identity, data], flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("reply to %s dropped: its queue is full", identity.hex())
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self._gone.add(identity)

    def error(self, identity: bytes, code: str, message: str, **context) -> None:
        self.errors_sent += 1
        self.send(identity, P.error_reply(code, message, **context))

    def _link(self, client: FrontClient, w: Worker) -> Link:
        link = client.links.get(w.index)
        if link is None:
            sock = self._dealer(w.address)
            sock.send(_hello(client.name or "streamstyle-front-client"))  # its welcome is dropped
            link = client.links[w.index] = Link(client, w, sock, time.monotonic())
            self.owners[sock] = link
            self.poller.register(sock, zmq.POLLIN)
        return link

    def _close_link(self, link: Link) -> None:
        """Close one client's DEALER to a worker: the worker reaps its sessions there."""
        c, w = link.client, link.worker
        for sid in link.sessions:
            w.sessions.pop(sid, None)
            c.sessions.pop(sid, None)
        for pixels in link.opening.values():
            w.opening -= len(pixels)
            w.opening_pixels -= sum(pixels)
        link.sessions.clear()
        link.opening.clear()
        if c.links.get(w.index) is link:
            del c.links[w.index]
        self._close_socket(link.sock)

    def _to_worker(self, link: Link, data: bytes) -> bool:
        try:
            link.sock.send(data, flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        link.last_sent = time.monotonic()
        return True

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop_after_s: float | None = None) -> None:
        self._running = True
        end = None if stop_after_s is None else time.monotonic() + stop_after_s
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass
        log.info("front serving on %s with %d workers (%s)", self.address, len(self.workers),
                 ", ".join(w.device for w in self.workers))
        gc.collect()
        gc.freeze()  # what start-up made stays out of the collector's scans
        try:
            while self._running and (end is None or time.monotonic() < end):
                self.tick()
        finally:
            gc.unfreeze()
            self.shutdown()

    def stop(self) -> None:
        self._running = False

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = self.stop_signal or signum
        self.stop()

    def tick(self) -> None:
        events = self.poller.poll(min(50, self.config.heartbeat_ms))
        self._drained_at = time.monotonic()
        for sock, _ in events:
            if sock is self.sock:
                for _ in range(256):
                    try:
                        frames = self.sock.recv_multipart(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle(frames[0], *frames[1:])
            else:
                self._drain_worker_socket(sock)
        self.housekeeping()

    def _drain_worker_socket(self, sock: zmq.Socket) -> None:
        for _ in range(256):
            owner = self.owners.get(sock)  # a message handled just now may have closed it
            if owner is None:
                return
            try:
                data = sock.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if isinstance(owner, Link):
                    self.on_link_message(owner, data)
                else:
                    self.on_control_message(owner, data)
            except Exception:  # the front outlives any one answer
                log.error("an answer of worker %s failed:\n%s", getattr(owner, "index", "?"), traceback.format_exc())

    def housekeeping(self) -> None:
        now = time.monotonic()
        hb = self.config.heartbeat_ms / 1000
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + hb
            for c in list(self.clients.values()):
                if c.welcomed:
                    self.send(c.identity, {"type": "heartbeat", "time": time.time()})
                for link in c.links.values():  # the worker must not find a live client silent
                    if now - link.last_sent >= hb:
                        self._to_worker(link, _HEARTBEAT)
            for sock in self.control.values():
                try:
                    sock.send(_HEARTBEAT, flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass
        limit = self.config.reap_after_ms / 1000
        for c in list(self.clients.values()):
            gone, silent = c.identity in self._gone, self._drained_at - c.last_seen > limit
            if gone or silent:
                if c.sessions:
                    log.warning("client %s %s: closing its %d session(s)", c.name or c.identity.hex(),
                                "disconnected" if gone else "silent", len(c.sessions))
                self.drop_client(c)
                if not gone and c.welcomed:
                    self.send(c.identity, {"type": "bye", "reason": "reaped"})
        self._gone.clear()
        if now >= self._next_exit_check:
            self._next_exit_check = now + EXIT_CHECK_S
            if self._running:
                for w in self.pool.exited():
                    self.on_worker_exit(w)
                for w in self.workers:
                    if not w.running and now >= w.retry_at:
                        self._restart(w)
                    elif w.running and not w.ready and now - w.started_at > self.start_timeout_s:
                        log.error("worker %d did not come up within %.0f s: killed", w.index, self.start_timeout_s)
                        self.pool.kill(w)
        for fr, q in list(self.queries.items()):
            if now > q.deadline:
                self._finish_stats(q)

    def drop_client(self, c: FrontClient) -> None:
        for link in list(c.links.values()):
            self._close_link(link)
        self.clients.pop(c.identity, None)

    def shutdown(self) -> None:
        for c in list(self.clients.values()):
            if c.welcomed:
                self.send(c.identity, {"type": "bye"})
        self._close_all()

    def _close_all(self) -> None:
        for c in list(self.clients.values()):
            self.drop_client(c)
        for sock in list(self.control.values()):
            self._close_socket(sock)
        self.control.clear()
        if self.sock is not None:
            self.sock.close(linger=100)
        self.pool.stop()
        if self.metrics is not None:
            self.metrics.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # --- client messages ------------------------------------------------------------------

    _log = log

    def _new_client(self, identity: bytes, now: float) -> FrontClient:
        return FrontClient(identity, now)

    def _handle(self, client: FrontClient, parts: tuple, context: dict) -> None:
        raw = P.decode_parts(parts)
        context.update(P.context_of(raw))
        kind = raw["type"]
        if client.welcomed and kind in SESSION_TYPES and "session" in context:
            link = client.sessions.get(context["session"])
            if link is not None:
                if self._to_worker(link, parts[0]):
                    self.relayed += 1
                else:
                    self.error(client.identity, P.ErrorCode.NO_WORKER, f"worker {link.worker.index} is not taking "
                               "messages (its queue is full)", **context)
                return
            if kind == "frame" and context["session"] in client.lost:
                return  # answered by the client's reconnect (late, service_restarted)
        msg = P.parse_message(raw)
        req = getattr(msg, "req", None)
        identity = client.identity
        if isinstance(msg, P.Hello):
            if msg.protocol != P.PROTOCOL_VERSION:
                self.error(identity, P.ErrorCode.PROTOCOL_MISMATCH,
                           f"the engine speaks protocol {msg.protocol}; this service speaks {P.PROTOCOL_VERSION}", **context)
                return
            client.welcomed, client.name = True, msg.client or ""
            self.send(identity, {**self.welcome, "type": "welcome", "req": req})
            return
        if not client.welcomed:
            self.error(identity, P.ErrorCode.HELLO_FIRST, "send hello before anything else", **context)
            return
        if isinstance(msg, P.Heartbeat):
            self.send(identity, {"type": "heartbeat", "time": time.time()})
        elif isinstance(msg, P.Open):
            self.open_session(client, msg, parts[0])
        elif isinstance(msg, P.Stats) and msg.session is None:
            self.start_stats(client, msg.req)
        else:  # names a session this client does not have here
            self.error(identity, P.ErrorCode.UNKNOWN_SESSION, f"no session {msg.session} on this connection",
                       req=req, session=msg.session, seq=getattr(msg, "seq", None))

    def place(self, msg: P.Open) -> Worker:
        """The worker for a new session, or ProtocolError: `bad_ring` if none could ever take
        its ring, `no_worker` if those that could are restarting."""
        ring = msg.ring
        if ring["backend"] == "cuda-ipc":
            device = ring["inputs"][0]["device"]
            candidates = [w for w in self.workers if w.gpu == device]
            if not candidates:
                raise P.ProtocolError(P.ErrorCode.BAD_RING, f"this service's workers run on "
                                      f"{', '.join(w.device for w in self.workers)}: none on CUDA device {device}, "
                                      "where this ring lives (CUDA IPC is device-local)")
        else:
            candidates = self.workers
        ready = [w for w in candidates if w.ready]
        if not ready:
            raise P.ProtocolError(P.ErrorCode.NO_WORKER, "every worker that could take this session is restarting; "
                                  "try again shortly")
        return min(ready, key=lambda w: w.load)

    def open_session(self, client: FrontClient, msg: P.Open, data: bytes) -> None:
        try:
            w = self.place(msg)
        except P.ProtocolError as exc:
            self.error(client.identity, exc.code, exc.message, req=msg.req)
            return
        link = self._link(client, w)
        if not self._to_worker(link, data):
            self.error(client.identity, P.ErrorCode.NO_WORKER, f"worker {w.index} is not taking messages", req=msg.req)
            return
        pixels = msg.width * msg.height
        link.opening.setdefault(msg.req, []).append(pixels)
        w.opening += 1
        w.opening_pixels += pixels

    # --- worker answers -------------------------------------------------------------------

    def on_control_message(self, w: Worker, data: bytes) -> None:
        m = P.decode_raw(data)
        if m["type"] == "welcome" and not w.ready:
            self._on_welcome(w, m)
        elif m.get("req") in self.queries:
            self._absorb_stats(m)

    def on_link_message(self, link: Link, data: bytes) -> None:
        m = P.decode_raw(data)
        kind, req = m["type"], m.get("req")
        if kind in ("heartbeat", "welcome"):
            return
        if req in self.queries:
            self._absorb_stats(m)
            return
        c, w = link.client, link.worker
        if kind in ("opened", "error") and req in link.opening:
            pending = link.opening[req]
            pixels = pending.pop(0)
            if not pending:
                del link.opening[req]
            w.opening -= 1
            w.opening_pixels -= pixels
            if kind == "opened":
                sid = m["session"]
                link.sessions.add(sid)
                c.sessions[sid] = link
                w.sessions[sid] = pixels
        elif kind == "closed":
            sid = m.get("session")
            link.sessions.discard(sid)
            c.sessions.pop(sid, None)
            w.sessions.pop(sid, None)
        elif kind == "bye":
            # The worker reaped this client or is stopping: it no longer has the client's
            # sessions, and the client reconnects on `bye`; its other links go too.
            c.lost.update(c.sessions)
            self.drop_client(c)
            self.clients[c.identity] = c  # still connected to the front, until it reconnects
        elif kind == "stats":
            for s in m.get("sessions", ()):
                s["worker"] = w.index
            data = P.encode(m)
        self._to_client(c.identity, data)

    # --- stats ----------------------------------------------------------------------------

    def start_stats(self, client: FrontClient, req: int) -> None:
        q = StatsQuery(client.identity, req, time.monotonic() + STATS_TIMEOUT_S)
        for w in self.workers:
            if not w.ready:
                continue
            link = client.links.get(w.index)
            sock = link.sock if link is not None else self.control[w.index]
            fr = next(self._reqs)
            try:
                sock.send(P.encode({"type": "stats", "req": fr}), flags=zmq.NOBLOCK)
            except zmq.Again:
                continue
            q.waiting[fr] = w.index
            self.queries[fr] = q
        if not q.waiting:
            self._finish_stats(q)

    def _absorb_stats(self, m: dict) -> None:
        q = self.queries.pop(m["req"])
        k = q.waiting.pop(m["req"], None)
        if m.get("type") == "stats" and k is not None:
            q.replies[k] = m
        if not q.waiting:
            self._finish_stats(q)

    def _finish_stats(self, q: StatsQuery) -> None:
        for fr in q.waiting:
            self.queries.pop(fr, None)
        q.waiting.clear()
        if q.identity in self.clients:
            self.send(q.identity, {"type": "stats", "req": q.req, **self.merged_stats(q.replies)})

    def merged_stats(self, replies: dict) -> dict:
        """Workers' `stats` answers (worker index -> reply) as one: numbers summed (longest
        pauses: the largest), sessions listed with their worker, and `workers` saying how each is."""
        service: dict = {}
        sessions = []
        for k, m in sorted(replies.items()):
            for key, v in (m.get("service") or {}).items():
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                service[key] = max(service.get(key, v), v) if key.endswith("_max_ms") else service.get(key, 0) + v
            sessions += [{**s, "worker": k} for s in m.get("sessions", ())]
        service["clients"] = len(self.clients)
        service["errors_sent"] = service.get("errors_sent", 0) + self.errors_sent
        service["relayed"] = self.relayed  # client messages the front handed to a worker
        service["workers"] = [self.worker_stats(w, replies.get(w.index)) for w in self.workers]
        return {"service": service, "sessions": sorted(sessions, key=lambda s: s["session"])}

    def worker_stats(self, w: Worker, reply: dict | None) -> dict:
        svc = (reply or {}).get("service") or {}
        return {"worker": w.index, "device": w.device, "pid": w.pid, "state": w.state, "restarts": w.restarts,
                "address": w.address, "sessions": len(w.sessions), "pixels": sum(w.sessions.values()),
                "answered": reply is not None, "frames": svc.get("frames")}
