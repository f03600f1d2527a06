"""The Python client: what an engine links to talk to the service. The reference for the C client
and the Unreal and Unity plugins.

It owns the frame ring, opens sessions, submits frames and collects their outcome without ever
blocking on the service: `poll()` returns whatever "done" and "late" notices have arrived, sends
heartbeats, and when the connection to the service drops (the service was killed, or stopped
answering ZeroMQ's heartbeats for its reap time) or the service says "bye", it reconnects and
reopens every session on the same ring, answering in-flight frames as late with reason
"service_restarted". Meanwhile the game shows its raw or previous frame.

Liveness is judged by the connection, never by how long the service has been quiet: a frame can
hold the service's thread for seconds (a large frame on the CPU), while libzmq's I/O thread keeps
answering heartbeats. So a slow frame is a slow frame, and only a dead or frozen service is lost.

    client = Client("ipc:///run/user/1000/streamstyle.sock")
    session = client.open_session(1280, 720, layout, prompt="watercolor")
    slot = session.acquire_slot()
    write_gbuffers(session.planes(slot))          # engine copies its render targets here
    seq = session.submit(slot, view=view, proj=proj)
    for event in client.poll():
        if event.status == "done": show(event.session.output(event.slot))
"""

from __future__ import annotations

import itertools
import time

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from . import create_ring
from . import doorbell as DB
from . import protocol as P
from .layout import GBufferLayout, output_bytes, output_view_numpy
from .limits import DEFAULT_HEARTBEAT_MS, DEFAULT_REAP_AFTER_MS, SOCKET_HWM, default_bind


def _recv_monitor_message(monitor) -> dict:
    """pyzmq's `recv_monitor_message`, imported when a monitor event first arrives: its module
    imports asyncio, a quarter of this module's import time otherwise."""
    from zmq.utils.monitor import recv_monitor_message

    return recv_monitor_message(monitor)


class ServiceError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"[{code}] {message}")
        self.code, self.message = code, message


class ServiceUnavailable(ServiceError):
    def __init__(self, message: str):
        super().__init__("unavailable", message)


@dataclass
class FrameEvent:
    session: "ClientSession"
    seq: int
    slot: int
    status: str  # "done", "late" or "error"
    late: bool = False
    reason: str | None = None  # late: dropped, deadline, service_restarted; error: the code
    message: str | None = None
    timings: dict | None = None


class ClientSession:
    def __init__(self, client: "Client", width: int, height: int, layout: GBufferLayout, ring, output_format: str,
                 prompt: Any, params: dict | None, seed: int):
        self.client, self.width, self.height, self.layout = client, width, height, layout
        self.ring, self.output_format = ring, output_format
        self.prompt, self.params, self.seed = prompt, dict(params or {}), seed
        self.id = 0
        self.bell: DB.Doorbell | None = None  # the session's doorbell (open_session(doorbell=True))
        self._answered = DB.Seen()  # the frames answered through either path (a belled session's duplicates)
        self.slots = ring.slots
        self._seq = 0
        self._next_slot = 0
        self._slot_seq = [0] * ring.slots  # the last frame submitted in each slot
        self.in_flight: dict[int, int] = {}  # seq -> slot

    def _open_message(self) -> dict:
        msg = {"type": "open", "width": self.width, "height": self.height, "layout": self.layout.to_dict(),
               "ring": self.ring.describe(self.output_format), "seed": self.seed}
        if self.prompt is not None:
            msg["prompt"] = self.prompt if isinstance(self.prompt, str) else [list(p) for p in self.prompt]
        if self.params:
            msg["params"] = self.params
        if self.bell is not None:
            msg["doorbell"] = self.bell.name
        return msg

    def _opened(self, reply: dict) -> None:
        self.id = reply["session"]
        if self.bell is not None and not reply.get("doorbell"):
            self.bell.close()  # declined (a service on a machine without the doorbell's ordering)
            self.bell = None

    def planes(self, slot: int) -> dict:
        """Per-channel views of input slot `slot`, to write this frame's G-buffers into: numpy
        arrays [H, W, format components] on a shared-memory ring, torch tensors on a CUDA ring."""
        return self.layout.view(self.ring.input(slot), self.width, self.height)

    def acquire_slot(self, timeout_s: float = 1.0) -> int:
        """The next slot to write, once the service has released its previous frame. Raises
        TimeoutError if the service still reads it (the engine then skips stylizing a frame).

        With shared memory the released counter says so directly. With CUDA IPC the host cannot
        see it without a sync: the slot is free for the host once the service has answered its
        previous frame (it records `released` before replying), and the engine's stream is then
        made to wait on that event, so later GPU writes cannot overtake the service's reads."""
        slot = self._next_slot
        prev = self._slot_seq[slot]
        end = time.monotonic() + timeout_s
        while prev in self.in_flight and not self.ring.is_released(slot, prev):
            if time.monotonic() > end:
                raise TimeoutError(f"slot {slot} is still in use by the service")
            self.client._pump(timeout_ms=1)
        self.ring.wait_released(slot, prev, max(0.0, end - time.monotonic()))
        return self._take(slot)

    def _take(self, slot: int) -> int:
        self._next_slot = (slot + 1) % self.slots
        return slot

    def submit(self, slot: int, view=None, proj=None, jitter=None, dt: float | None = None,
               params: dict | None = None) -> int:
        """Signal the slot ready and send the frame. Returns its sequence number."""
        self._seq += 1
        seq = self._seq
        self.ring.mark_ready(slot, seq)
        self._slot_seq[slot] = seq
        msg = {"type": "frame", "session": self.id, "seq": seq, "slot": slot}
        for key, value in (("view", view), ("proj", proj), ("jitter", jitter)):
            if value is not None:
                numbers = value.tolist() if hasattr(value, "tolist") else value  # numpy, torch (any device), lists
                msg[key] = [float(x) for x in np.asarray(numbers, dtype=np.float64).reshape(-1)]
        if dt is not None:
            msg["dt"] = float(dt)
        if params:
            msg["params"] = params
        self.in_flight[seq] = slot
        data = self.client._send(msg)
        if self.bell is not None:
            self.bell.to_service.push(data)  # after the ZeroMQ copy (interop/doorbell.py)
        return seq

    def output(self, slot: int):
        """The stylized frame in output slot `slot`: [H, W, 4] uint8 (rgba8) or float16 (rgba16f),
        a view of the slot: a numpy array on a shared-memory ring, a torch tensor on a CUDA ring.
        Call after its "done": on CUDA the current stream is made to wait for the service's write."""
        h, w = self.height, self.width
        if self.ring.backend == "shm":
            return output_view_numpy(self.ring.output(slot), w, h, self.output_format)
        import torch  # a CUDA ring: torch is already loaded by it

        self.ring.wait_done(slot)
        raw = self.ring.output(slot)[: output_bytes(w, h, self.output_format)]
        return raw.view(h, w, 4) if self.output_format == "rgba8" else raw.view(torch.float16).view(h, w, 4)

    def set_prompt(self, prompt, blend_frames: int = 0) -> None:
        wire = prompt if isinstance(prompt, str) else [list(p) for p in prompt]
        msg = {"type": "prompt", "session": self.id, "prompt": wire}
        if blend_frames:
            msg["blend_frames"] = blend_frames
        self.client.request(msg)
        self.prompt = prompt

    def set_params(self, **params) -> None:
        self.client.request({"type": "params", "session": self.id, "params": params})
        self.params.update(params)

    def use_preset(self, name: str) -> dict:
        """Switch to the service's preset `name`; its reply (`prompt`, `params`). ServiceError
        `unknown_preset` if the service has none of that name."""
        return self.client.request({"type": "preset", "session": self.id, "name": name})

    def save_preset(self, name: str) -> dict:
        """Save the session's current look as preset `name` in the service's presets file."""
        return self.client.request({"type": "save_preset", "session": self.id, "name": name})

    def record(self, on: bool, what: str | None = None) -> dict:
        """Start or stop recording the session in the service's recordings_dir: `what` is
        "output" (an MP4; the default when starting), "inputs" (a capture for fine-tuning) or
        "both"; stopping without `what` stops everything. A stop is answered once the files
        are complete."""
        msg = {"type": "record", "session": self.id, "on": bool(on)}
        if what is not None:
            msg["what"] = what
        return self.client.request(msg)

    def stats(self) -> dict:
        return self.client.request({"type": "stats", "session": self.id})["sessions"][0]

    def close(self) -> None:
        try:
            if self.client.connected:
                self.client.request({"type": "close", "session": self.id})
        except ServiceError:
            pass
        finally:
            self.client._sessions.pop(id(self), None)
            self.client._by_id.pop(self.id, None)
            self.ring.close()
            if self.bell is not None:
                self.bell.close()
                self.bell = None


class Client:
    def __init__(self, address: str | None = None, name: str = "streamstyle-python", timeout_s: float = 10.0,
                 curve_server_key: str | None = None, connect: bool = True):
        self.address = address or default_bind()
        self.name, self.timeout_s, self.curve_server_key = name, timeout_s, curve_server_key
        self._ctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._sessions: dict[int, ClientSession] = {}
        self._by_id: dict[int, ClientSession] = {}
        self._req = itertools.count(1)
        self._events: deque[FrameEvent] = deque()
        self.heartbeat_ms = DEFAULT_HEARTBEAT_MS  # until the service's welcome says what applies
        self.reap_after_ms = DEFAULT_REAP_AFTER_MS
        self.welcome: dict = {}
        self.reconnects = 0
        self.connected = False
        self._lost = False
        self._retry_at = 0.0
        self._monitor = None
        if connect:
            self.connect()

    # --- connection ------------------------------------------------------------------------

    def _new_socket(self) -> zmq.Socket:
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, P.MAX_MESSAGE_BYTES)
        s.setsockopt(zmq.SNDHWM, SOCKET_HWM)
        s.setsockopt(zmq.RCVHWM, SOCKET_HWM)
        # ZMTP heartbeats: libzmq pings the service and drops the connection (EVENT_DISCONNECTED,
        # watched in `poll`) when nothing comes back for reap_after_ms: a killed or stopped
        # service. libzmq's I/O thread answers them on the service's side, however long a frame.
        s.setsockopt(zmq.HEARTBEAT_IVL, self.heartbeat_ms)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, self.reap_after_ms)
        if self.curve_server_key:
            public, secret = zmq.curve_keypair()
            s.curve_serverkey = self.curve_server_key.encode()
            s.curve_publickey, s.curve_secretkey = public, secret
        s.connect(self.address)
        self._monitor = s.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        return s

    def _close_socket(self) -> None:
        if self._sock is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(linger=0)
            self._sock.close(linger=0)
            self._sock = None

    def connect(self, timeout_s: float | None = None) -> None:
        # A connection's heartbeat settings are fixed when it is made, and only the welcome says
        # what the service uses: when they differ from the ones this socket was made with, say
        # hello once more on a socket made with the service's (the service's own TTL cannot
        # stand in: libzmq drops that timer at any message and re-arms it only at a PING).
        for _ in range(2):
            self._close_socket()
            made_with = (self.heartbeat_ms, self.reap_after_ms)
            self._sock = self._new_socket()
            self._lost = False
            self.connected = True
            try:
                self.welcome = self.request({"type": "hello", "protocol": P.PROTOCOL_VERSION, "client": self.name},
                                            timeout_s=timeout_s)
            except ServiceError:
                self.connected = False
                raise
            self.heartbeat_ms = self.welcome["heartbeat_ms"]
            self.reap_after_ms = self.welcome["reap_after_ms"]
            self._last_sent = time.monotonic()
            if (self.heartbeat_ms, self.reap_after_ms) == made_with:
                break

    def reconnect(self, timeout_s: float | None = None) -> None:
        """Connect afresh and reopen every session on its ring. In-flight frames become late."""
        self.connect(timeout_s)
        self.reconnects += 1
        self._by_id.clear()
        for session in list(self._sessions.values()):
            for seq, slot in session.in_flight.items():
                self._events.append(FrameEvent(session, seq, slot, "late", late=True, reason="service_restarted"))
            session.in_flight.clear()
            session._slot_seq = [0] * session.slots
            reply = self.request(session._open_message())
            session._opened(reply)
            self._by_id[session.id] = session

    def close(self) -> None:
        for session in list(self._sessions.values()):
            session.close()
        self._close_socket()
        self.connected = False

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- messages --------------------------------------------------------------------------

    def _send(self, msg: dict) -> bytes:
        data = P.encode(msg)
        try:
            self._sock.send(data, flags=zmq.NOBLOCK)
        except zmq.Again:
            raise ServiceUnavailable("the service is not taking messages (its queue is full)") from None
        self._last_sent = time.monotonic()
        return data

    def _take_bells(self) -> bool:
        """Answers waiting in the sessions' doorbells, dispatched; whether there were any."""
        took = False
        for session in list(self._by_id.values()):
            while session.bell is not None and (data := session.bell.to_engine.pop()) is not None:
                try:
                    msg = P.decode_raw(data)
                except P.ProtocolError:
                    continue
                if msg.get("type") in ("done", "late") and msg.get("session") == session.id:
                    self._dispatch(msg)
                    took = True
        return took

    def _recv(self, timeout_ms: int) -> dict | None:
        """The next message off the socket within `timeout_ms`; doorbell answers that arrive
        meanwhile are dispatched (a session with a doorbell makes this spin, not sleep)."""
        if any(s.bell is not None for s in self._by_id.values()):
            end = time.monotonic() + timeout_ms / 1000
            while True:  # the doorbells first: an answer's copy there is taken before its ZeroMQ copy
                if self._take_bells():
                    return None
                if self._sock.poll(0, zmq.POLLIN):
                    break
                if time.monotonic() >= end:
                    return None
        elif not self._sock.poll(timeout_ms, zmq.POLLIN):
            return None
        data = self._sock.recv()
        try:
            return P.decode_raw(data)
        except P.ProtocolError:
            return None  # not from a service we understand; ignore

    def request(self, msg: dict, timeout_s: float | None = None) -> dict:
        """Send a request and wait for its reply; frame notices arriving meanwhile are kept for
        `poll`. Raises ServiceError for an error reply, ServiceUnavailable on timeout."""
        req = next(self._req)
        self._send({**msg, "req": req})
        end = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise ServiceUnavailable(f"no answer to {msg['type']!r} from {self.address} within {timeout_s or self.timeout_s} s")
            reply = self._recv(int(left * 1000) + 1)
            if reply is None:
                continue
            if reply.get("req") == req:
                if reply["type"] == "error":
                    if reply.get("code") == P.ErrorCode.HELLO_FIRST:
                        self._lost = True  # reaped while frozen: the next poll reconnects
                    raise ServiceError(reply.get("code", "internal"), reply.get("message", ""))
                return reply
            self._dispatch(reply)

    def _dispatch(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind in ("done", "late") or (kind == "error" and "seq" in msg):
            session = self._by_id.get(msg.get("session"))
            if session is None:
                return
            if session.bell is not None and not session._answered.take(msg.get("seq")):
                return  # the second copy of an answer (doorbell and ZeroMQ)
            slot = session.in_flight.pop(msg.get("seq"), msg.get("slot", -1))
            if kind == "done":
                self._events.append(FrameEvent(session, msg["seq"], slot, "done", late=bool(msg.get("late")),
                                               timings=msg.get("timings")))
            elif kind == "late":
                self._events.append(FrameEvent(session, msg["seq"], slot, "late", late=True, reason=msg.get("reason")))
            else:
                self._events.append(FrameEvent(session, msg["seq"], slot, "error", reason=msg.get("code"),
                                               message=msg.get("message")))
        elif kind == "bye" or (kind == "error" and msg.get("code") == P.ErrorCode.HELLO_FIRST):
            # The service is going away, or has reaped this client (frozen past its reap time)
            # and no longer knows it: reconnect at the next poll.
            self._lost = True

    def _pump(self, timeout_ms: int = 0) -> None:
        """Receive what has arrived into the event queue, without handing it out."""
        msg = self._recv(timeout_ms)
        while msg is not None:
            self._dispatch(msg)
            msg = self._recv(0)

    def poll(self, timeout_ms: int = 0) -> list[FrameEvent]:
        """Everything that has arrived, never blocking longer than `timeout_ms`. Sends heartbeats;
        reconnects (and reopens sessions) when the connection dropped or the service said bye."""
        end = time.monotonic() + timeout_ms / 1000
        while True:
            msg = self._recv(max(0, int((end - time.monotonic()) * 1000)) if not self._events else 0)
            if msg is None:
                break
            self._dispatch(msg)
        while self._monitor.poll(0):
            event = _recv_monitor_message(self._monitor)
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self._lost = True  # the service's end closed: it died or restarts
        now = time.monotonic()
        if self.connected and now - self._last_sent > self.heartbeat_ms / 1000:
            self._send({"type": "heartbeat", "time": time.time()})
        if (self._lost or not self.connected) and now >= self._retry_at:
            try:
                self.reconnect(timeout_s=min(self.timeout_s, 1.0))
            except ServiceError:
                self.connected = False
                self._retry_at = time.monotonic() + 0.5  # the service is not back yet
        out = list(self._events)
        self._events.clear()
        return out

    def wait(self, session: ClientSession, seq: int, timeout_s: float = 30.0) -> FrameEvent:
        """Block until frame `seq` is answered (for tools and tests; an engine uses poll)."""
        end = time.monotonic() + timeout_s
        held = []
        try:
            while time.monotonic() < end:
                for ev in self.poll(timeout_ms=10):
                    if ev.session is session and ev.seq == seq:
                        return ev
                    held.append(ev)
            raise ServiceUnavailable(f"frame {seq} was not answered within {timeout_s} s")
        finally:
            self._events.extendleft(reversed(held))

    def open_session(self, width: int, height: int, layout: GBufferLayout, backend: str = "shm", slots: int = 3,
                     output_format: str = "rgba8", prompt: Any = None, params: dict | None = None, seed: int = 0,
                     device: int = 0, doorbell: bool = False) -> ClientSession:
        """Allocate a ring and open a session on it. Raises ServiceError with the service's code.
        `doorbell`: give the session a doorbell (interop/doorbell.py), a shared-memory fast path
        for its frames and answers beside ZeroMQ; `session.bell` stays None if the service
        declined it. Waiting calls (`poll` with a timeout, `wait`) then spin instead of sleeping."""
        in_bytes = layout.slot_bytes(width, height)
        ring = create_ring(backend, slots, in_bytes, output_bytes(width, height, output_format), device=device)
        session = ClientSession(self, width, height, layout, ring, output_format, prompt, params, seed)
        try:
            if doorbell:
                session.bell = DB.Doorbell.create()
            reply = self.request(session._open_message())
        except BaseException:
            ring.close()
            if session.bell is not None:
                session.bell.close()
            raise
        session._opened(reply)
        self._sessions[id(session)] = session
        self._by_id[session.id] = session
        return session

    def stats(self) -> dict:
        return self.request({"type": "stats"})
