"""The resident service: one ZeroMQ ROUTER, any number of sessions, one frame at a time.

The loop, single-threaded so that the model, the cache and the rings are touched by one thread:
1. drain the socket (bounded), validating each message at the edge (`protocol`) and answering
   every bad one with a typed error, never with a crash: `handle` runs every handler behind one
   catch-all that logs the traceback and answers `internal`, and every error echoes the `req`,
   `session` and `seq` the raw message held as integers;
2. run at most one queued frame per session, round robin: check its deadline and its ready signal,
   `Stylizer.step` straight from the input slot, release the slot, write the output slot in the
   engine's format, signal done, reply "done" with per-stage timings;
3. send heartbeats, and reap the sessions of any client whose connection closed or who was silent
   for `reap_after_ms` (rings closed, cache pages returned, a dead engine's shared memory
   unlinked). ZeroMQ's own heartbeats (set on the socket) keep connections judged by libzmq's
   I/O thread, so a frame that holds this thread for seconds drops no one.

Per session, frames run in order, sequence numbers strictly increase, and the queue holds one
waiting frame: a newer frame replaces it (the older is answered "late", reason "dropped"). A frame
refused without running (bad_slot, bad_sequence, not_ready) consumes nothing: its sequence number
may be sent again and the session's counts do not move. A frame whose deadline passed before it
could start is answered "late" (reason "deadline"); one that finished after its deadline is
"done" with late = true. Sessions belong to the client that opened
them: another client's frames for them are refused, so frames of different sessions never mix.
"""

from __future__ import annotations

import gc
import logging
import signal
import statistics
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

import torch
import zmq

from .. import __version__
from ..interop import RingError, import_ring
from ..interop.layout import output_bytes  # noqa: F401  (also the service's public helper)
from ..model.errors import (CacheFullError, ConfigError, InputError, LayoutError, PromptError, ResolutionError, StreamStyleError)
from ..model.frame import FrameParams
from ..model.layout import GBufferLayout
from ..model.stylizer import Stylizer
from ..model.text import normalize_blend
from ..interop import protocol as P
from ..interop import doorbell as DB
from ..interop.limits import BACKENDS, DEFAULT_STEPS, DEFAULT_STRENGTH, MAX_STEPS, MIN_STEPS
from ..interop.limits import MIN_BLEND_WEIGHT, RECORD_WHAT
from .address import bind_router
from .guard import MessageGuard
from .config import ServiceConfig
from .control import Command, ControlError, ControlQueue
from .presets import Preset, load_presets, save_presets

log = logging.getLogger("streamstyle.service")

# While the loop runs, a thread holding the GIL (the preview page's, a recording's writer, the
# metrics scrape) is made to give it up after this long once the loop wants it back; Python's own
# default, 5 ms, let a studio thread's Python work hold the loop that long at every GIL release
# (numpy and torch copies, socket calls). Measured on the 2-core CI machine (benchmarks/gil_probe.py),
# a 2 MB copy beside a busy Python thread: p50 8 to 12 ms at 5 ms, 0.8 to 0.9 ms at 0.5 ms.
GIL_SWITCH_INTERVAL_S = 0.0005


BELL_LOOK_S = 50e-6  # while spinning: how long the loop looks only at the doorbells between socket polls
# After a frame's answer, before its bookkeeping: how long the loop watches the doorbells for the
# next frame. An engine that submits as soon as it has its answer rings ~30 us later, while the loop
# would still be in that bookkeeping; watched, its frame's time starts when it arrived.
BELL_AFTER_ANSWER_S = 100e-6


class GcWatch:
    """Python's cyclic garbage collections in this process: how many, how long, and how many fell
    inside a frame (between its start and its `done`), where they are a latency spike."""

    def __init__(self):
        self.count = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
        self.in_frames = 0
        self.in_frame = False
        self._start: float | None = None
        self.on_pause = None  # metrics' hook: (ms, in_frame)

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        if self._start is None:
            return
        ms = (time.perf_counter() - self._start) * 1000
        self._start = None
        self.count += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)
        self.in_frames += int(self.in_frame)
        if self.on_pause is not None:
            self.on_pause(ms, self.in_frame)

    def stats(self) -> dict:
        return {"gc_collections": self.count, "gc_total_ms": round(self.total_ms, 3), "gc_max_ms": round(self.max_ms, 3),
                "gc_in_frames": self.in_frames}


def collect_due_garbage(thresholds: tuple[int, int, int]) -> None:
    """With automatic collection off: the collection Python would have started by now, if any
    (the youngest generation whose threshold is reached, and the older ones theirs too)."""
    c0, c1, c2 = gc.get_count()
    if c0 < thresholds[0]:
        return
    gen = 0
    if c1 >= thresholds[1]:
        gen = 2 if c2 >= thresholds[2] else 1
    gc.collect(gen)


@dataclass
class PendingFrame:
    msg: P.Frame
    received: float  # time.perf_counter()
    prev_seq: int = 0  # the session's last_seq before this frame took its number


@dataclass
class SessionState:
    id: int
    owner: bytes
    width: int
    height: int
    ring: object
    handle: object  # the Stylizer's session
    output_format: str
    params: dict = field(default_factory=dict)
    pending: PendingFrame | None = None
    last_seq: int = 0
    prompt: object = None
    blend: tuple | None = None  # (old parts, new parts, frames total, frames done)
    frames_in: int = 0
    done: int = 0
    enabled: bool = True  # a studio control: off, frames are answered late "bypassed" (the engine shows its raw frame)
    bypassed: int = 0
    preset: str | None = None  # the last preset applied, until the prompt changes otherwise
    blend_pair: tuple | None = None  # (a, b): the two prompts a studio blend weight moves between
    recorder: object = None  # a recorder.VideoRecorder while the session's output is recorded
    capture: object = None  # a recorder.CaptureRecorder while its inputs are
    late: int = 0
    dropped: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=2048))
    model_ms: deque = field(default_factory=lambda: deque(maxlen=2048))
    events: list | None = None  # on a GPU: timing events (model start, model end, written)
    bell: object = None  # an interop.doorbell.Doorbell when the engine gave one and it was attached
    bell_seen: object = None  # its Seen: the frames taken from either path
    beat: object = None  # its Beat: when the next frame is expected
    bell_frames: int = 0  # frames taken from the doorbell before their ZeroMQ copy


@dataclass
class ClientState:
    identity: bytes
    last_seen: float
    welcomed: bool = False
    name: str = ""
    sessions: set = field(default_factory=set)


def _parts(prompt) -> list[tuple[str, float]]:
    """A validated prompt as [(text, weight)] summing to 1, by the model's own arithmetic (which
    neither overflows nor divides by zero). A part that comes out at 0 (far below the largest) is
    left out: it has no attention anyway, and the model takes only weights above 0."""
    if prompt is None:
        return []
    return [(t, w) for t, w in normalize_blend(prompt, 1 if isinstance(prompt, str) else len(prompt)) if w > 0]


def _wire_prompt(prompt):
    """A session's prompt as the wire writes it: a string, [[text, weight], ...], or None."""
    return prompt if prompt is None or isinstance(prompt, str) else [[t, w] for t, w in prompt]


def _wire_preset(preset: Preset) -> dict:
    return {"prompt": _wire_prompt(preset.prompt), **preset.params}


class Service(MessageGuard):
    def __init__(self, config: ServiceConfig, stylizer: Stylizer, context: zmq.Context | None = None,
                 session_id_base: int = 0):
        """`session_id_base`: session ids on the wire are this plus the stylizer's own (a worker
        behind a multi-worker front gets a range of its own, `service.workers`)."""
        self.config = config
        self.stylizer = stylizer
        self.ctx = context or zmq.Context.instance()
        self.session_id_base = session_id_base
        self.sock = bind_router(config, self.ctx)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.clients: dict[bytes, ClientState] = {}
        self.sessions: dict[int, SessionState] = {}
        self._next_heartbeat = 0.0
        self._drained_at = time.monotonic()
        self._received_at: float | None = None  # the message being handled came off the socket then
        self._bell_of: SessionState | None = None  # the session whose doorbell the message came from
        self._watched_until_ns = 0  # the latest time a lane was told it is watched until (Lane.watch)
        self._bell_seen_at: float | None = None  # when the spin last saw a frame waiting in a doorbell
        self._gc_thresholds: tuple[int, int, int] | None = None  # while `run` manages the collector
        self._gone: set[bytes] = set()
        self._running = False
        self.stop_signal: int | None = None  # the signal that stopped `run`, if one did
        self.frames_total = 0
        self.errors_sent = 0
        self.gc_watch = GcWatch()
        # The studio side (docs/operators.md): commands from other threads, presets, metrics,
        # OSC and the preview page, each only when its config asks for it.
        self.controls = ControlQueue()
        self.controls_applied = 0
        self.controls_rejected: dict[str, int] = {}
        self.presets: dict[str, Preset] = {}
        self.metrics = self.osc = self.preview = None
        self._finishing: list = []  # (recorder.Starting or Finishing, send, fail): recordings' answers to come
        try:
            self._start_studio()
        except BaseException:
            self._stop_studio()
            self.sock.close(linger=0)
            raise

    def _start_studio(self) -> None:
        try:
            self._start_studio_parts()
        except ModuleNotFoundError as exc:
            raise ConfigError(f"metrics, OSC and the preview need the studio extra ({exc.name} is missing): "
                              "pip install 'streamstyle[studio]'") from None
        except OSError as exc:  # a port taken, a host this machine lacks
            raise ConfigError(f"cannot listen for the studio side on {self.config.studio_host}: {exc}") from None

    def _start_studio_parts(self) -> None:
        cfg = self.config
        if cfg.presets:
            self.presets = load_presets(cfg.presets)
        if cfg.metrics_port:
            from .metrics import Metrics

            self.metrics = Metrics(self)
            self.metrics.serve(cfg.studio_host, cfg.metrics_port)
            self.gc_watch.on_pause = self.metrics.on_gc
        if cfg.osc_port:
            from .osc import OscReceiver

            self.osc = OscReceiver(self.controls, cfg.studio_host, cfg.osc_port)
        if cfg.preview_port:
            from .preview import PreviewServer

            self.preview = PreviewServer(self.controls, cfg.studio_host, cfg.preview_port)

    def _stop_studio(self) -> None:
        for part in (self.metrics, self.osc, self.preview):
            if part is not None:
                part.close()

    # --- plumbing -------------------------------------------------------------------------

    def send(self, identity: bytes, msg: dict, bell=None) -> None:
        """Send `msg` to a client; with `bell` (a session's Doorbell) a copy goes into its lane to
        the engine too, first, so that it is there when the ZeroMQ copy wakes the engine's reader
        (interop/doorbell.py: ZeroMQ carries everything; a reply ZeroMQ drops still arrives)."""
        self.send_bytes(identity, P.encode(msg), bell)

    def send_bytes(self, identity: bytes, data: bytes, bell=None, staged: bool = False) -> None:
        """`send` of a message already encoded (a frame's `done`: `P.DoneAnswer`); `staged`: its
        record waits in the bell's lane already (`Lane.stage`), to be published with these bytes."""
        if bell is not None:
            if staged:
                bell.to_engine.publish(data)
            else:
                bell.to_engine.push(data)
        try:
            self.sock.send_multipart([identity, data], flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("reply to %s dropped: its queue is full", identity.hex())
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self._gone.add(identity)  # its connection closed: reaped at the next housekeeping

    def error(self, identity: bytes, code: str, message: str, **context) -> None:
        self.errors_sent += 1
        if self.metrics is not None:
            self.metrics.on_error(code)
        self.send(identity, P.error_reply(code, message, **context))

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop_after_s: float | None = None) -> None:
        self._running = True
        end = None if stop_after_s is None else time.monotonic() + stop_after_s
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass
        log.info("serving on %s", self.address)
        gc.callbacks.append(self.gc_watch)
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, GIL_SWITCH_INTERVAL_S))
        managed = self.config.gc_between_frames and gc.isenabled()
        if managed:
            # A collection starts whenever allocations cross a threshold, mid-frame as likely as
            # not. Here it runs between frames instead (on a GPU, while the device runs a frame:
            # `_run_frame`), and what start-up loaded (the model, torch, the text encoder) is
            # frozen out of its scans.
            self._gc_thresholds = gc.get_threshold()
            gc.collect()
            gc.freeze()
            gc.disable()
        try:
            while self._running and (end is None or time.monotonic() < end):
                self.tick()
                if managed:
                    collect_due_garbage(self._gc_thresholds)
        finally:
            if managed:
                self._gc_thresholds = None
                gc.enable()
                gc.unfreeze()
            gc.callbacks.remove(self.gc_watch)
            sys.setswitchinterval(switch)
            self.shutdown()

    def stop(self) -> None:
        self._running = False

    def _on_signal(self, signum, frame) -> None:
        # The loop ends after the current tick: a frame under way finishes and is answered.
        self.stop_signal = self.stop_signal or signum
        self.stop()

    def tick(self) -> None:
        busy = any(s.pending for s in self.sessions.values())
        timeout = 0 if busy else min(50, self.config.heartbeat_ms)
        belled = [s for s in self.sessions.values() if s.bell is not None]
        polled = self._wait(timeout, belled)
        # Everything a client sent before this moment is read below. Silence is measured up to
        # here, not to the end of the tick: a long open (graph capture) or frame must not make
        # clients whose heartbeats are waiting in the socket look dead.
        self._drained_at = time.monotonic()
        # The doorbells before the socket: a frame's copy there is taken first even when its
        # ZeroMQ copy woke the loop, and its total_ms starts there.
        self._take_bells(belled)
        if polled:
            for _ in range(256):
                try:
                    frames = self.sock.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                # A frame's total_ms starts here, as it came off the socket: its decoding and
                # validation are the service's time, not the engine's (measured at ~45-90 us).
                self._received_at = time.perf_counter()
                self.handle(frames[0], *frames[1:])  # a DEALER sends one part; handle refuses more
                self._received_at = None
                self._answered(frames[0])
        self.drain_controls()  # after the messages, before the frames: a change applies on the next frame
        for state in list(self.sessions.values()):
            if state.pending is not None:
                self.run_frame(state)
                self._answered(state.owner)
        self.housekeeping()

    def _wait(self, timeout_ms: int, belled: list) -> bool:
        """Wait up to `timeout_ms` for a message on the socket or in a doorbell; whether the socket
        has one. With doorbells, spin through the windows in which their engines' next frames are
        due (interop.doorbell.Beat) and sleep on the socket outside them: a frame rung while the
        loop sleeps wakes it through its ZeroMQ copy."""
        if not belled:
            return bool(self.sock.poll(timeout_ms, zmq.POLLIN))
        if timeout_ms == 0 or self._take_bells(belled):
            return bool(self.sock.poll(0, zmq.POLLIN))
        lanes = [s.bell.to_service for s in belled]
        end = time.perf_counter() + timeout_ms / 1000
        while True:
            now = time.perf_counter()
            if now >= end:
                return False
            spin, wait_s = False, end - now
            for s in belled:
                on, until = s.beat.plan(now)
                spin = spin or on
                wait_s = min(wait_s, until)
            # never asleep while a lane is told it is watched (Lane.watch's promise); such looks promise
            # nothing more
            promise = spin
            spin = spin or time.monotonic_ns() < self._watched_until_ns
            if spin:  # a lane is a memory read away (~0.2 us), the socket a system call: lanes for
                # BELL_LOOK_S at a time, then the socket once
                if self._watch_bells(BELL_LOOK_S, lanes, promise=promise):  # tick takes them, and reads the socket too
                    return bool(self.sock.poll(0, zmq.POLLIN))
                if self.sock.poll(0, zmq.POLLIN):
                    return True
                continue
            if self.sock.poll(max(0, min(int(wait_s * 1000), timeout_ms)), zmq.POLLIN):
                return True
            if any(lane.pending() for lane in lanes):
                return bool(self.sock.poll(0, zmq.POLLIN))

    def _watch_bells(self, seconds: float, lanes: list | None = None, promise: bool = True) -> bool:
        """Look at the doorbells (`lanes`: their lanes to the service; default every session's) for
        up to `seconds`; whether a frame is waiting. Each lane is told it is watched until then
        (`Lane.watch`: an engine may skip waking its own sender for a frame rung before that; not
        with `promise` False), and is looked at once more after it. A frame seen is stamped (`_bell_seen_at`: its total_ms
        starts when it arrived, not after what the loop does next) and taken by the tick."""
        if lanes is None:
            lanes = [s.bell.to_service for s in self.sessions.values() if s.bell is not None]
        until_ns = time.monotonic_ns() + int(seconds * 1e9)
        if promise:
            self._watched_until_ns = max(self._watched_until_ns, until_ns)
            for lane in lanes:
                lane.watch(until_ns)
        while True:
            past = time.monotonic_ns() >= until_ns  # read before the look: the last look is after `until`
            for lane in lanes:
                if lane.pending():
                    self._bell_seen_at = time.perf_counter()
                    return True
            if past:
                return False

    def _take_bells(self, belled: list) -> int:
        """Handle the frames waiting in these sessions' doorbells, as messages of their owners
        (decoded and checked like any other); how many there were."""
        n = 0
        for state in belled:
            lane = state.bell.to_service
            if lane.overrun():
                lane.skip_to_end()
                self.error(state.owner, P.ErrorCode.BAD_MESSAGE, f"session {state.id}'s doorbell says more frames "
                           f"wait than its {lane.records} records hold; what it held was skipped", session=state.id)
                continue
            for _ in range(lane.records):  # at most a lane's worth a tick
                if state.bell is None or (data := lane.pop()) is None:
                    break
                n += 1
                seen, self._bell_seen_at = self._bell_seen_at, None
                self._received_at = seen if seen is not None else time.perf_counter()
                self._bell_of = state
                try:
                    self.handle(state.owner, data)
                finally:
                    self._bell_of = None
                    self._received_at = None
        self._bell_seen_at = None
        return n

    def _answered(self, identity: bytes) -> None:
        """A client the service just answered was waiting on it (an open can take seconds while
        its graph is captured, and a client in a request sends no heartbeats): its silence
        starts now."""
        c = self.clients.get(identity)
        if c is not None:
            c.last_seen = max(c.last_seen, time.monotonic())

    def housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.config.heartbeat_ms / 1000
            for c in self.clients.values():
                if c.welcomed:
                    self.send(c.identity, {"type": "heartbeat", "time": time.time()})
        limit = self.config.reap_after_ms / 1000
        for c in list(self.clients.values()):
            silence = self._drained_at - c.last_seen
            gone, silent = c.identity in self._gone, silence > limit
            if gone or silent:
                if c.sessions:
                    why = "disconnected" if gone else f"silent for {silence:.1f} s"
                    log.warning("client %s %s: reaping %d session(s)", c.name or c.identity.hex(), why, len(c.sessions))
                for sid in list(c.sessions):
                    self.close_session(sid, abandoned=True)
                del self.clients[c.identity]
                if not gone and c.welcomed:
                    # A frozen client's connection may outlive its reaping (ZeroMQ's heartbeat
                    # timeout and this silence run on separate clocks): when it runs again it
                    # reads this first and reconnects, rather than talking to a service that
                    # no longer knows it.
                    self.send(c.identity, {"type": "bye", "reason": "reaped"})
        self._gone.clear()
        if self._finishing:
            self._finish_recordings()

    def shutdown(self) -> None:
        for sid in list(self.sessions):
            self.close_session(sid)
        self._finish_recordings(wait=True)  # every recording's files complete before the service ends
        for c in self.clients.values():
            self.send(c.identity, {"type": "bye"})
        self.sock.close(linger=100)
        self._stop_studio()

    # --- messages -------------------------------------------------------------------------

    _log = log

    def _new_client(self, identity: bytes, now: float) -> ClientState:
        return ClientState(identity, now)

    def _handle(self, client: ClientState, parts: tuple, context: dict) -> None:
        identity = client.identity
        raw = P.decode_parts(parts)
        context.update(P.context_of(raw))  # from here on, even a crash is answered with them
        msg = P.parse_message(raw)
        req = getattr(msg, "req", None)
        if self._bell_of is not None and not (isinstance(msg, P.Frame) and msg.session == self._bell_of.id):
            raise P.ProtocolError(P.ErrorCode.BAD_MESSAGE, f"session {self._bell_of.id}'s doorbell carries only "
                                  "that session's frame messages", {"session": self._bell_of.id})
        if isinstance(msg, P.Hello):
            if msg.protocol != P.PROTOCOL_VERSION:
                self.error(identity, P.ErrorCode.PROTOCOL_MISMATCH,
                           f"the engine speaks protocol {msg.protocol}; this service speaks {P.PROTOCOL_VERSION}",
                           **context)
                return
            cfg = self.stylizer.config
            welcome = {"type": "welcome", "req": req, "protocol": P.PROTOCOL_VERSION,
                       "service": f"streamstyle {__version__}", "heartbeat_ms": self.config.heartbeat_ms,
                       "reap_after_ms": self.config.reap_after_ms, "max_sessions": self.config.max_sessions,
                       "model": {"preset": cfg.name, "token_stride": cfg.patch},
                       "output_formats": list(P.OUTPUT_FORMATS), "backends": self.backends()}
            client.welcomed, client.name = True, msg.client or ""
            self.send(identity, welcome)
            return
        if not client.welcomed:
            self.error(identity, P.ErrorCode.HELLO_FIRST, "send hello before anything else", **context)
            return
        if isinstance(msg, P.Heartbeat):
            self.send(identity, {"type": "heartbeat", "time": time.time()})
            return
        if isinstance(msg, P.Open):
            self.open_session(client, msg)
            return
        if isinstance(msg, P.Stats) and msg.session is None:
            self.send(identity, {"type": "stats", "req": req, "service": self.service_stats(),
                                 "sessions": [self.session_stats(self.sessions[s]) for s in sorted(client.sessions)]})
            return
        state = self.sessions.get(msg.session)
        if state is None or state.owner != identity:
            self.error(identity, P.ErrorCode.UNKNOWN_SESSION, f"no session {msg.session} on this connection",
                       req=req, session=msg.session, seq=getattr(msg, "seq", None))
            return
        if isinstance(msg, P.Frame):
            self.queue_frame(state, msg)
        elif isinstance(msg, P.SetPrompt):
            self.set_prompt(state, msg)
        elif isinstance(msg, P.SetParams):
            if "seed" in msg.params:
                self.stylizer.reseed(state.handle, msg.params["seed"])
            state.params.update(msg.params)  # after the reseed: a failure leaves the session as it was
            self.send(identity, {"type": "ok", "req": req, "session": state.id})
        elif isinstance(msg, P.Stats):
            self.send(identity, {"type": "stats", "req": req, "service": self.service_stats(),
                                 "sessions": [self.session_stats(state)]})
        elif isinstance(msg, (P.UsePreset, P.SavePreset, P.Record)):
            op, value = {P.UsePreset: "preset", P.SavePreset: "save_preset", P.Record: "record"}[type(msg)], \
                (msg.on, msg.what) if isinstance(msg, P.Record) else msg.name
            try:
                result = self.apply_control(state, op, value)
            except ControlError as exc:
                self.error(identity, exc.code, exc.message, req=req, session=state.id)
                return
            sid = state.id
            self._reply(result, lambda r: self.send(identity, {"type": "ok", "req": req, "session": sid, **r}),
                        lambda exc: self.error(identity, exc.code, exc.message, req=req, session=sid))
        elif isinstance(msg, P.Close):
            self.close_session(state.id)
            self.send(identity, {"type": "closed", "req": req, "session": state.id})

    def backends(self) -> list[str]:
        return list(BACKENDS) if self.stylizer.device.type == "cuda" else ["shm"]

    def open_session(self, client: ClientState, msg: P.Open) -> None:
        ident, req = client.identity, msg.req
        if len(self.sessions) >= self.config.max_sessions:
            self.error(ident, P.ErrorCode.SESSION_LIMIT, f"the service is at its limit of {self.config.max_sessions} sessions", req=req)
            return
        ring_desc = msg.ring
        if ring_desc["backend"] not in self.backends():
            self.error(ident, P.ErrorCode.BAD_RING, f"this service (on {self.stylizer.device}) takes rings of "
                       f"backend {', '.join(self.backends())}, not {ring_desc['backend']}", req=req)
            return
        try:
            layout = GBufferLayout.from_dict(msg.layout)
            self.stylizer.check_size(msg.width, msg.height)
            in_bytes = layout.validate(width=msg.width, height=msg.height).slot_bytes(msg.width, msg.height)
        except LayoutError as exc:
            self.error(ident, P.ErrorCode.BAD_LAYOUT, exc.message, req=req)
            return
        except ResolutionError as exc:
            self.error(ident, P.ErrorCode.BAD_RESOLUTION, exc.message, req=req)
            return
        fmt = ring_desc["output_format"]
        try:
            ring = import_ring(ring_desc, in_bytes, output_bytes(msg.width, msg.height, fmt))
        except RingError as exc:
            log.info("open from %s refused: %s", client.name, exc)
            self.error(ident, P.ErrorCode.BAD_RING, str(exc), req=req)
            return
        bell = None
        if msg.doorbell is not None and DB.supported():
            try:
                bell = DB.Doorbell.attach(msg.doorbell)
            except RingError as exc:
                log.info("open from %s refused: %s", client.name, exc)
                ring.close()
                self.error(ident, P.ErrorCode.BAD_RING, str(exc), req=req)
                return
        handle = None
        try:
            try:
                handle = self.stylizer.open_session(msg.width, msg.height, layout, seed=msg.seed or 0)
                if msg.prompt is not None:
                    self.stylizer.set_prompt(handle, msg.prompt if isinstance(msg.prompt, str) else list(msg.prompt))
            except (LayoutError, CacheFullError, ResolutionError, PromptError) as exc:
                code = {"bad_layout": P.ErrorCode.BAD_LAYOUT, "cache_full": P.ErrorCode.CACHE_FULL,
                        "bad_prompt": P.ErrorCode.BAD_PROMPT}.get(exc.code, P.ErrorCode.BAD_RESOLUTION)
                self._discard(ring, handle, bell)
                self.error(ident, code, exc.message, req=req)
                return
            state = SessionState(self.session_id_base + handle.id, ident, msg.width, msg.height, ring, handle, fmt,
                                 params=dict(msg.params or {}), prompt=msg.prompt)
            if bell is not None:
                state.bell, state.bell_seen, state.beat = bell, DB.Seen(), DB.Beat()
            if self.stylizer.device.type == "cuda":
                state.events = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
        except Exception:  # refused by a failure: nothing of it stays (the catch-all answers)
            self._discard(ring, handle, bell)
            raise
        try:
            steps = int(state.params.get("steps", DEFAULT_STEPS))
            t0 = time.perf_counter()
            if MIN_STEPS <= steps <= MAX_STEPS and self.stylizer.warm_up(handle, steps, out_format=fmt):
                log.info("session %d: kernels and CUDA graph for %dx%d, %d steps ready in %.0f ms", state.id,
                         msg.width, msg.height, steps, (time.perf_counter() - t0) * 1000)
        except Exception:  # the first frame will try again and report its own error
            log.warning("session %d: warm-up failed:\n%s", state.id, traceback.format_exc())
        self.sessions[state.id] = state
        client.sessions.add(state.id)
        log.info("session %d opened by %s: %dx%d, %s ring, %d slots", state.id, client.name, msg.width,
                 msg.height, ring_desc["backend"], ring_desc["slots"])
        self.send(ident, {"type": "opened", "req": req, "session": state.id, "slots": ring_desc["slots"],
                          "input_bytes": in_bytes, "output_bytes": output_bytes(msg.width, msg.height, fmt),
                          "cache_pages": self.stylizer.pages_in_use(handle), "doorbell": bell is not None})

    def _discard(self, ring, handle, bell=None) -> None:
        """Undo a refused open: the stylizer's session (if made), the ring's mappings and the doorbell's."""
        if bell is not None:
            bell.close()
        if handle is not None:
            try:
                self.stylizer.close_session(handle)
            except Exception:
                log.warning("closing the refused session %s failed:\n%s", handle.id, traceback.format_exc())
        ring.close()

    def set_prompt(self, state: SessionState, msg: P.SetPrompt) -> None:
        try:
            self.switch_prompt(state, msg.prompt, msg.blend_frames or 0)
        except PromptError as exc:
            self.error(state.owner, P.ErrorCode.BAD_PROMPT, exc.message, req=msg.req, session=state.id)
            return
        state.preset = None
        self.send(state.owner, {"type": "ok", "req": msg.req, "session": state.id})

    def switch_prompt(self, state: SessionState, prompt, blend_frames: int = 0) -> None:
        """Switch now, or (blend_frames > 0) blend over the next frames. The protocol has already
        refused weights the model would (each finite and above 0), so the blend's arithmetic
        cannot divide by zero; a refused prompt (PromptError) leaves the session's prompt and
        blend as they were."""
        new = prompt if isinstance(prompt, str) else list(prompt)
        if blend_frames and state.prompt is not None:
            old_parts, new_parts = _parts(state.prompt), _parts(prompt)
            if len(old_parts) + len(new_parts) > self.stylizer.config.max_prompts:
                raise PromptError(f"a blend from {len(old_parts)} to {len(new_parts)} prompt parts needs more "
                                  f"than {self.stylizer.config.max_prompts} parts")
            self.stylizer.prompts_ready(new_parts)  # encode now: a bad prompt fails here, not mid-blend
            state.blend = (old_parts, new_parts, blend_frames, 0)
        else:
            # A hard switch starts the next frame afresh (Stylizer.set_prompt's `reset`): the old
            # look would otherwise linger in the history.
            self.stylizer.set_prompt(state.handle, new, reset=True)
            state.blend = None
        state.prompt = prompt

    # --- studio commands (OSC, the preview page, the preset messages) ----------------------

    def drain_controls(self) -> None:
        """Apply the commands other threads queued; each resolves its reply, if it has one."""
        for cmd in self.controls.drain():
            try:
                result = self._control(cmd)
            except ControlError as exc:
                self.controls_rejected[cmd.source] = self.controls_rejected.get(cmd.source, 0) + 1
                if self.metrics is not None:
                    self.metrics.on_control(cmd.source, exc.code)
                log.info("%s command %s refused: [%s] %s", cmd.source, cmd.op, exc.code, exc.message)
                if cmd.reply is not None:
                    cmd.reply.set_exception(exc)
                continue
            except Exception as exc:  # the loop outlives any one command
                log.error("%s command %s failed:\n%s", cmd.source, cmd.op, traceback.format_exc())
                if cmd.reply is not None:
                    cmd.reply.set_exception(ControlError(P.ErrorCode.INTERNAL, f"{type(exc).__name__}"))
                continue
            self.controls_applied += 1
            if self.metrics is not None:
                self.metrics.on_control(cmd.source, "ok")
            self._reply(result, cmd.reply.set_result if cmd.reply is not None else None,
                        cmd.reply.set_exception if cmd.reply is not None else None)

    def _control(self, cmd: Command) -> dict:
        if cmd.op == "stats":
            return {"service": self.service_stats(), "sessions": [self.session_stats(s) for _, s in sorted(self.sessions.items())],
                    "presets": {name: _wire_preset(p) for name, p in sorted(self.presets.items())}}
        if cmd.session is None:
            if len(self.sessions) != 1:
                raise ControlError(P.ErrorCode.UNKNOWN_SESSION, f"name a session: {len(self.sessions)} are open")
            state = next(iter(self.sessions.values()))
        else:
            state = self.sessions.get(cmd.session)
            if state is None:
                raise ControlError(P.ErrorCode.UNKNOWN_SESSION, f"no session {cmd.session}")
        if cmd.op == "watch":
            if self.preview is not None:
                self.preview.watching = state.id
            return {"session": state.id}
        if cmd.op == "view":  # the page's input view beside the output: a channel of the session's layout, or none
            if self.preview is None:
                raise ControlError(P.ErrorCode.BAD_FIELD, "this service has no preview page")
            names = state.handle.layout.names
            if cmd.value not in (None, "", *names):
                raise ControlError(P.ErrorCode.BAD_FIELD, f"view must be one of {', '.join(names)}, or none; "
                                   f"got {str(cmd.value)[:40]!r}")
            self.preview.watching, self.preview.beside = state.id, cmd.value or None
            return {"session": state.id, "view": self.preview.beside}
        return self.apply_control(state, cmd.op, cmd.value)

    def apply_control(self, state: SessionState, op: str, value) -> dict:
        """One studio change to a session, checked by the protocol's own rules; ControlError
        (and the session unchanged) if refused. Applies from the next frame on."""
        try:
            if op == "prompt":
                prompt = P._prompt(value, "prompt")
                self.switch_prompt(state, prompt)
                state.preset = None
                return {"prompt": _wire_prompt(prompt)}
            if op == "preset":
                name = P._preset_name(value, "preset")
                preset = self.presets.get(name)
                if preset is None:
                    known = ", ".join(sorted(self.presets)) or "none"
                    raise ControlError(P.ErrorCode.UNKNOWN_PRESET, f"no preset {name!r} (known: {known})")
                self.switch_prompt(state, preset.prompt, preset.blend_frames)
                state.params.update(preset.params)
                state.preset = name
                if not isinstance(preset.prompt, str) and len(preset.prompt) == 2:
                    state.blend_pair = (preset.prompt[0][0], preset.prompt[1][0])
                return {"prompt": _wire_prompt(preset.prompt), "params": preset.params}
            if op == "blend":
                return self._blend_control(state, value)
            if op in ("steps", "strength"):
                params = P._params({op: value}, "params")
                state.params.update(params)
                return {"params": params}
            if op == "enabled":
                if not isinstance(value, (bool, int)) or isinstance(value, int) and not isinstance(value, bool) and value not in (0, 1):
                    raise ControlError(P.ErrorCode.BAD_FIELD, f"enabled must be true/false or 1/0, got {value!r}")
                state.enabled = bool(value)
                return {"enabled": state.enabled}
            if op == "record":  # value: on, or (on, what)
                on, what = value if isinstance(value, (list, tuple)) and len(value) == 2 else (value, None)
                if what is not None:
                    what = P._str(what, "record.what", choices=RECORD_WHAT)
                return self._record_control(state, P._bool(on, "record.on"), what)
            if op == "save_preset":
                name = P._preset_name(value, "save_preset.name")
                if not self.config.presets:
                    raise ControlError(P.ErrorCode.NO_PRESETS_FILE, "this service was started without a presets file "
                                       "(serve --presets FILE)")
                if state.prompt is None:
                    raise ControlError(P.ErrorCode.BAD_PROMPT, "the session has no prompt to save")
                preset = Preset(name, state.prompt, state.params.get("steps"), state.params.get("strength"))
                presets = {**self.presets, name: preset}
                save_presets(self.config.presets, presets)  # written before it counts: a failure changes nothing
                self.presets = presets
                state.preset = name
                return {"preset": {"name": name, **_wire_preset(preset)}}
        except P.ProtocolError as exc:
            raise ControlError(exc.code, exc.message) from None
        except PromptError as exc:
            raise ControlError(P.ErrorCode.BAD_PROMPT, exc.message) from None
        except StreamStyleError as exc:
            raise ControlError(exc.code, exc.message) from None
        raise ControlError(P.ErrorCode.BAD_FIELD, f"unknown control {op!r}")

    def _record_control(self, state: SessionState, on: bool, what: str | None):
        """Start or stop recording (`recorder.start`, `recorder.stop`): answered through `_reply`
        once the writers are ready, or have closed their files; the loop never waits for them."""
        from . import recorder as R

        if not on:
            return R.stop(state, what)
        return R.start(state, what, self.config.recordings_dir, self.stylizer.device)

    def _reply(self, result, send, fail=None) -> None:
        """Send a control's result now or, for a recording's start or stop, once its writers are
        ready or have closed their files (`_finish_recordings`): the loop never waits for them."""
        from .recorder import Finishing, Starting

        if isinstance(result, (Finishing, Starting)):
            self._finishing.append((result, send, fail))
            self._finish_recordings()
        elif send is not None:
            send(result)

    def _finish_recordings(self, wait: bool = False) -> None:
        """Answer the starts and stops whose writers are done (`wait`: for every one, at shutdown)."""
        for item in list(self._finishing):
            pending, send, fail = item
            if wait:
                pending.join()
            if not pending.finished:
                continue
            self._finishing.remove(item)
            error = pending.error
            if error is not None:
                pending.undo()
                if fail is not None:
                    fail(ControlError(P.ErrorCode.RECORDING_UNAVAILABLE, f"the recording could not start: {error}"))
            elif send is not None:
                send(pending.result())

    def _tap_inputs(self, state: SessionState, msg: P.Frame, params: dict, show: bool):
        """The frame's copies for the session's capture and the preview page's input view, taken
        before its input slot goes back to the engine. Returns (the stream `released` must be
        recorded on, None for the frame's own; the input plane copied for the page, or None)."""
        side = beside = None
        # The page's copy first: on a GPU it is queued on the frame's stream, which the capture's
        # side stream then waits for before it records `released`.
        if show and self.preview.beside is not None:
            beside = self.preview.copy_input(state.ring.input(msg.slot), state.handle.layout, state.width, state.height)
        if state.capture is not None:
            blending = state.blend is not None
            if state.capture.offer(state.ring.input(msg.slot), state.ring.output(msg.slot), msg, params, state.prompt,
                                   state.preset, blending):
                side = state.capture.ring.side  # a GPU copy reads the slot there
            elif self.metrics is not None:
                self.metrics.on_recording_dropped(state.id, "inputs")
        return side, beside

    def _blend_control(self, state: SessionState, value) -> dict:
        """`weight` (0..1) between the session's blend pair, or `(a, b, weight)` setting the pair."""
        if isinstance(value, (list, tuple)) and len(value) == 3:
            a, b, weight = P._str(value[0], "blend.a", P.MAX_PROMPT_CHARS), P._str(value[1], "blend.b", P.MAX_PROMPT_CHARS), value[2]
            pair = (a, b)
        else:
            weight, pair = value, state.blend_pair
            if pair is None and isinstance(state.prompt, tuple) and len(state.prompt) == 2:
                pair = (state.prompt[0][0], state.prompt[1][0])
            if pair is None:
                raise ControlError(P.ErrorCode.BAD_FIELD, "no blend pair yet: send two prompts and a weight first")
        weight = P._num(weight, "blend.weight", 0.0, 1.0)
        parts = tuple((t, w) for t, w in ((pair[0], 1.0 - weight), (pair[1], weight)) if w >= MIN_BLEND_WEIGHT)
        self.switch_prompt(state, parts if len(parts) > 1 else parts[0][0])
        state.blend_pair, state.preset = pair, None
        return {"prompt": _wire_prompt(state.prompt), "weight": weight}

    def queue_frame(self, state: SessionState, msg: P.Frame) -> None:
        if state.bell is not None:
            if not state.bell_seen.take(msg.seq):
                return  # the second copy of a frame (doorbell and ZeroMQ): the first was taken
            state.bell_frames += self._bell_of is state
            state.beat.arrived(self._received_at if self._received_at is not None else time.perf_counter())
        if msg.slot >= state.ring.slots:
            self.error(state.owner, P.ErrorCode.BAD_SLOT, f"slot {msg.slot} is outside this ring's {state.ring.slots}",
                       session=state.id, seq=msg.seq)
            return
        if msg.seq <= state.last_seq:
            self.error(state.owner, P.ErrorCode.BAD_SEQUENCE, f"sequence {msg.seq} does not follow {state.last_seq}",
                       session=state.id, seq=msg.seq)
            return
        prev_seq, state.last_seq = state.last_seq, msg.seq
        state.frames_in += 1
        if state.pending is not None:  # keep the newest frame
            old = state.pending.msg
            state.dropped += 1
            state.ring.mark_released(old.slot, old.seq)
            if self.metrics is not None:
                self.metrics.on_late(state.id, "dropped")
            self.send(state.owner, {"type": "late", "session": state.id, "seq": old.seq, "slot": old.slot,
                                    "reason": "dropped"}, state.bell)
        received = self._received_at if self._received_at is not None else time.perf_counter()
        state.pending = PendingFrame(msg, received, prev_seq)

    def _blend_step(self, state: SessionState) -> None:
        old, new, total, k = state.blend
        k += 1
        a = min(1.0, k / total)
        # At the ends of the blend a side's weights can underflow to 0; the model takes only
        # weights above 0.
        parts = [(t, w * (1 - a)) for t, w in old if w * (1 - a) > 0] + [(t, w * a) for t, w in new if w * a > 0]
        self.stylizer.set_prompt(state.handle, parts)
        state.blend = None if a >= 1.0 else (old, new, total, k)

    def run_frame(self, state: SessionState) -> None:
        self.gc_watch.in_frame = True
        try:
            self._run_frame(state)
        finally:
            self.gc_watch.in_frame = False

    def _run_frame(self, state: SessionState) -> None:
        pending, state.pending = state.pending, None
        msg, t0 = pending.msg, pending.received
        start = time.perf_counter()
        deadline_ms = state.params.get("deadline_ms", self.config.frame_deadline_ms)
        if msg.params and "deadline_ms" in msg.params:
            deadline_ms = msg.params["deadline_ms"]
        reply = {"session": state.id, "seq": msg.seq, "slot": msg.slot}
        if (start - t0) * 1000 > deadline_ms:
            state.late += 1
            state.ring.mark_released(msg.slot, msg.seq)
            self.send(state.owner, {"type": "late", **reply, "reason": "deadline"}, state.bell)
            if self.metrics is not None:
                self.metrics.on_late(state.id, "deadline")
            return
        if not state.enabled:  # switched off by a studio control: the engine shows its raw frame
            state.bypassed += 1
            state.ring.mark_released(msg.slot, msg.seq)
            self.send(state.owner, {"type": "late", **reply, "reason": "bypassed"}, state.bell)
            if self.metrics is not None:
                self.metrics.on_late(state.id, "bypassed")
            return
        if not state.ring.is_ready(msg.slot, msg.seq):
            # Refused without running, so it consumes nothing: its number goes back (nothing newer
            # can have been queued since it left the queue: one thread does both) and it is not
            # counted as a frame in. The engine may send the same seq again once it is ready.
            state.last_seq = pending.prev_seq
            state.frames_in -= 1
            self.error(state.owner, P.ErrorCode.NOT_READY, f"slot {msg.slot}'s ready signal does not show frame {msg.seq}",
                       session=state.id, seq=msg.seq)
            return
        p = {**state.params, **(msg.params or {})}
        params = FrameParams(steps=p.get("steps", DEFAULT_STEPS), strength=p.get("strength", DEFAULT_STRENGTH), reset=bool(p.get("reset", False)))
        events = state.events  # None on the CPU
        show = self.preview is not None and self.preview.wants(state.id, start)
        try:
            if state.blend is not None:
                self._blend_step(state)
            t_model = time.perf_counter()
            if events:
                events[0].record()
            # The decoder's last pass writes the engine's format straight into the output slot.
            self.stylizer.step_into(state.handle, state.ring.input(msg.slot), state.ring.output(msg.slot),
                                    state.output_format, params)
            if events:
                events[1].record()
            t_write = time.perf_counter()
            side, beside = (None, None) if state.capture is None and not show else \
                self._tap_inputs(state, msg, {**p, "steps": params.steps, "strength": params.strength}, show)
            if side is None:
                state.ring.mark_released(msg.slot, msg.seq)
            else:  # after the copies that read the slot, on their stream: the frame's does not wait
                with torch.cuda.stream(side):
                    state.ring.mark_released(msg.slot, msg.seq)
            state.ring.mark_done(msg.slot, msg.seq)
            if events and self._gc_thresholds is not None:
                # a collection that is due runs now, while the device runs the frame, instead of
                # after its answer, where the engine's next frame may already wait
                self.gc_watch.in_frame = False
                collect_due_garbage(self._gc_thresholds)
                self.gc_watch.in_frame = True
            # The answer is encoded now, while the device runs, and only its numbers are written
            # once it is done: an encode run cold after the frame's launch work took 20-30 us.
            answer = P.DoneAnswer(reply)
            staged = state.bell is not None and state.bell.to_engine.stage(answer.template)
            if events:
                # The frame is done when the device is: "done" goes out after it, and the model's
                # time is the device's, from the step's first kernel to its last.
                events[2].record()
                events[2].synchronize()
        except (InputError, PromptError) as exc:
            state.ring.mark_released(msg.slot, msg.seq)
            self.error(state.owner, P.ErrorCode.BAD_INPUT if isinstance(exc, InputError) else P.ErrorCode.BAD_PROMPT,
                       exc.message, session=state.id, seq=msg.seq)
            return
        except StreamStyleError as exc:
            state.ring.mark_released(msg.slot, msg.seq)
            self.error(state.owner, exc.code, exc.message, session=state.id, seq=msg.seq)
            return
        except Exception:  # the service outlives any one frame
            log.error("frame %d of session %d failed:\n%s", msg.seq, state.id, traceback.format_exc())
            state.ring.mark_released(msg.slot, msg.seq)
            self.error(state.owner, P.ErrorCode.INTERNAL, "the service failed on this frame; see its log",
                       session=state.id, seq=msg.seq)
            return
        end = time.perf_counter()
        model_ms = events[0].elapsed_time(events[1]) if events else (t_write - t_model) * 1000
        write_ms = events[1].elapsed_time(events[2]) if events else (end - t_write) * 1000
        late = (time.perf_counter() - t0) * 1000 > deadline_ms
        answer.fill(late, (start - t0) * 1000, model_ms, write_ms)
        # The service's own time: from the frame off the socket (or out of the doorbell) to its
        # answer's hand-over, the answer's timings included (only writing total_ms itself into
        # the answer is left out).
        total_ms = (time.perf_counter() - t0) * 1000
        # the answer first, the bookkeeping after it: the engine waits for the one, not the other
        self.send_bytes(state.owner, answer.finish(total_ms), state.bell, staged)
        if state.bell is not None:
            self._watch_bells(BELL_AFTER_ANSWER_S)
        state.done += 1
        state.late += int(late)
        self.frames_total += 1
        state.latencies_ms.append(total_ms)
        state.model_ms.append(model_ms)
        if self.metrics is not None:
            self.metrics.on_frame(state.id, total_ms, late)
        if state.recorder is not None and not state.recorder.offer(state.ring.output(msg.slot)) and self.metrics is not None:
            self.metrics.on_recording_dropped(state.id, "output")
        if show:
            self.preview.hand_over(state.id, state.ring.output(msg.slot), state.width, state.height, state.output_format,
                                   beside)

    def close_session(self, sid: int, abandoned: bool = False) -> None:
        """Close a session: pages back, ring unmapped. `abandoned`: its client was reaped as dead,
        and the ring's shared memory, which a dead engine can no longer unlink, is unlinked here
        (unless its owner still lives: see `interop.shm`)."""
        state = self.sessions.pop(sid, None)
        if state is None:
            return
        state.pending = None
        stopping = [r for r in (state.recorder, state.capture) if r is not None]
        state.recorder = state.capture = None
        for rec in stopping:
            rec.stop()
        if stopping:  # finished in the background; the copies on a GPU are ordered before the sync below
            from .recorder import Finishing

            self._finishing.append((Finishing(stopping), None, None))
        self.stylizer.sync()  # no device work may still use the ring's memory
        try:
            self.stylizer.close_session(state.handle)
        except StreamStyleError:
            pass
        if not state.ring.close():
            log.warning("session %d: a view of its ring outlived it; the mapping stays until it goes", sid)
        if abandoned and hasattr(state.ring, "unlink_abandoned"):
            in_use = {n for other in self.sessions.values() for n in getattr(other.ring, "segment_names", ())}
            for name in state.ring.unlink_abandoned(keep=in_use):
                log.info("session %d: unlinked shared memory %s left by its dead engine", sid, name)
        if state.bell is not None:
            bell, state.bell = state.bell, None
            if abandoned and bell.unlink_abandoned():
                log.info("session %d: unlinked doorbell %s left by its dead engine", sid, bell.name)
            bell.close()
        client = self.clients.get(state.owner)
        if client is not None:
            client.sessions.discard(sid)
        if self.metrics is not None:
            self.metrics.on_session_closed(sid)
        log.info("session %d closed", sid)

    # --- stats ----------------------------------------------------------------------------

    def session_stats(self, s: SessionState) -> dict:
        lat = sorted(s.latencies_ms)

        def pct(q):
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

        return {"session": s.id, "width": s.width, "height": s.height, "frames_in": s.frames_in, "done": s.done,
                "late": s.late, "dropped": s.dropped, "latency_p50_ms": pct(0.5), "latency_p99_ms": pct(0.99),
                "model_p50_ms": statistics.median(s.model_ms) if s.model_ms else None,
                "cache_pages": self.stylizer.pages_in_use(s.handle), "prompt": _wire_prompt(s.prompt),
                "steps": s.params.get("steps", DEFAULT_STEPS), "strength": s.params.get("strength", DEFAULT_STRENGTH),
                "enabled": s.enabled, "bypassed": s.bypassed, "preset": s.preset,
                "recording": s.recorder.path if s.recorder is not None else None,
                "capture": s.capture.path if s.capture is not None else None,
                "capture_frames": s.capture.taken if s.capture is not None else 0,
                "capture_dropped": s.capture.dropped if s.capture is not None else 0,
                "channels": list(s.handle.layout.names), "doorbell": s.bell is not None,
                "doorbell_frames": s.bell_frames}

    def service_stats(self) -> dict:
        ipc = 0
        if self.stylizer.device.type == "cuda":
            from ..interop.cuda_ipc import open_allocations

            ipc = open_allocations()
        return {"sessions": len(self.sessions), "clients": len(self.clients), "frames": self.frames_total,
                "ipc_allocations_open": ipc, "cpu_threads": torch.get_num_threads(),
                "errors_sent": self.errors_sent, "cache_pages_used": self.stylizer.cache.used_pages,
                "cache_pages_free": self.stylizer.cache.blocks.num_free, **self.gc_watch.stats(),
                "controls_applied": self.controls_applied, "controls_rejected": sum(self.controls_rejected.values()),
                "osc_bad": self.osc.bad if self.osc is not None else 0}
