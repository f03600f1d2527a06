"""Generated engine -> service messages, and a driver that sends them one at a time and judges
every answer. One home for both the protocol fuzz test (tests/test_protocol_fuzz.py, where
hypothesis supplies the `random.Random`) and the long soak (benchmarks/fuzz_service.py, a seeded
`random.Random` against a child service).

A message starts from a valid template of one of the protocol's request types (built on a real
ring and layout, aimed at live sessions), and most are then broken: fields replaced with wrong
types or extreme numbers (huge, negative, NaN, infinity, subnormal), removed, or joined by
unknown keys, `bin` keys and deep nesting, anywhere in the nested maps (layout, channels, ring,
regions, sync, params, prompt blends); or the encoded bytes are truncated, trailed, flipped,
replaced, split into several ZeroMQ parts or blown past the size limit. The measured crash causes
of issue 12 are among the breakages, by name.

What must hold for every message (`Driver.send_one` records each breach): at least one answer
arrives within the timeout; every answer decodes and has a reply type of the protocol; every
error has one of the protocol's codes, and not `internal` (a handler failed: the catch-all kept
the service up, but it is a bug all the same).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import msgpack
import zmq

from streamstyle.interop import protocol as P

REPLY_TYPES = frozenset({"welcome", "opened", "done", "late", "ok", "stats", "heartbeat", "closed", "error", "bye"})
ERROR_CODES = frozenset(v for k, v in vars(P.ErrorCode).items() if k.isupper())
REQUEST_TYPES = tuple(P.REQUESTS)

# Mostly a few phrases, which the encoder caches: each new text costs a forward of the text model.
PHRASES = ("ink outlines", "watercolor wash", "noir film", "neon signs at night", "pencil hatching", "blueprint",
           "pixel art", "thermal camera", "cel shading", "ÿ 日本", "")


def _text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.85:
        return rng.choice(PHRASES)
    if roll < 0.93:  # below the surrogates: anything else encodes as UTF-8
        return "".join(chr(rng.randint(1, 0xD7FF)) for _ in range(rng.randint(0, 40)))
    return "x" * rng.choice((1999, 2000, 2001, 5000))


def nasty(rng: random.Random, depth: int = 0):
    """A value of any msgpack type, biased towards the edges of each."""
    kinds = ["none", "bool", "int", "float", "str", "bytes", "list", "map", "ext"]
    kind = rng.choice(kinds if depth < 3 else kinds[:6])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice((0, 1, -1, 2, 3, 4, 5, 7, 8, 255, 4096, 16384, 16385, 7680, 100000, 2 ** 31, 2 ** 62,
                           2 ** 63 - 1, -2 ** 63, 2 ** 64 - 1, rng.randint(-2 ** 63, 2 ** 64 - 1)))
    if kind == "float":
        return rng.choice((0.0, -0.0, 0.5, 1.0, 2.0, -1.0, 1e-300, 1e300, 1e308, -1e308, 5e-324, math.nan, math.inf,
                           -math.inf, 60000.1, 0.09, rng.uniform(-1e6, 1e6)))
    if kind == "str":
        return _text(rng)
    if kind == "bytes":
        return rng.randbytes(rng.choice((0, 1, 63, 64, 65, rng.randint(0, 200))))
    if kind == "list":
        return [nasty(rng, depth + 1) for _ in range(rng.choice((0, 1, 2, 3, 16, 17)))]
    if kind == "map":
        m = {}
        for _ in range(rng.randint(0, 4)):
            key = _text(rng) if rng.random() < 0.8 else rng.randbytes(rng.randint(0, 8))
            m[key] = nasty(rng, depth + 1)
        return m
    return msgpack.ExtType(rng.randint(0, 127), rng.randbytes(rng.randint(0, 16)))


def _deep(rng: random.Random, levels: int):
    v = nasty(rng, 3)
    for _ in range(levels):
        v = [v] if rng.random() < 0.5 else {"type": v}
    return v


@dataclass
class Fuzzer:
    """Messages for a service that can see `ring` (a ring description the engine side owns) and
    `layout` at `width` x `height`. `sessions` is the live list of session ids worth aiming at
    (the driver adds and removes them as the service answers); `empty_segment` names a zero-byte
    shared-memory segment; `mark_ready(slot, seq)` signals a frame ready before it is sent, so that
    unbroken frames run."""

    ring: dict
    layout: dict
    width: int
    height: int
    sessions: list = field(default_factory=list)
    empty_segment: str | None = None
    mark_ready: Callable[[int, int], None] | None = None
    valid_share: float = 0.25
    max_parts: int = 4
    seq: int = 0
    req: int = 0
    kind: str = ""  # the request type the last message started from

    # --- templates: one valid message of each type ---------------------------------------------

    def _session(self, rng):
        if self.sessions and rng.random() < 0.85:
            return rng.choice(self.sessions)
        return rng.choice((1, 2, 3, 50, 2 ** 63 - 1))

    def _prompt(self, rng):
        if rng.random() < 0.5:
            return _text(rng)
        return [[_text(rng), rng.choice((1.0, 0.5, 3, 1e-3, 7.25))] for _ in range(rng.randint(1, self.max_parts))]

    def _params(self, rng):
        choices = {"steps": lambda: rng.randint(1, 4), "strength": lambda: rng.random(), "reset": lambda: rng.random() < 0.3,
                   "seed": lambda: rng.randint(0, 2 ** 63 - 1), "deadline_ms": lambda: rng.uniform(1.0, 60000.0)}
        return {k: f() for k, f in choices.items() if rng.random() < 0.4}

    def template(self, rng: random.Random, kind: str) -> dict:
        self.req += 1
        req = self.req
        if kind == "hello":
            return {"type": "hello", "protocol": P.PROTOCOL_VERSION, "client": "fuzz", "req": req}
        if kind == "open":
            # Deep copies: mutations change lists and maps in place.
            m = {"type": "open", "req": req, "width": self.width, "height": self.height,
                 "layout": copy.deepcopy(self.layout), "ring": copy.deepcopy(self.ring)}
            if rng.random() < 0.4:
                m["prompt"] = self._prompt(rng)
            if rng.random() < 0.4:
                m["params"] = self._params(rng)
            if rng.random() < 0.3:
                m["seed"] = rng.randint(0, 2 ** 63 - 1)
            return m
        if kind == "frame":
            # Now and then a number already used (or the one just sent again): bad_sequence.
            self.seq += 0 if rng.random() < 0.2 else 1
            seq = max(1, self.seq - rng.choice((0, 0, 0, 1, 5))) if rng.random() < 0.1 else self.seq
            if rng.random() < 0.15:
                seq = 1  # at or below the last frame of any session that ran one: bad_sequence
            m = {"type": "frame", "session": self._session(rng), "seq": seq, "slot": rng.randint(0, self.ring["slots"] - 1)}
            if rng.random() < 0.3:
                m["view"] = [rng.uniform(-2, 2) for _ in range(16)]
                m["proj"] = [rng.uniform(-2, 2) for _ in range(16)]
            if rng.random() < 0.3:
                m["jitter"], m["dt"] = [rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)], rng.uniform(0, 0.1)
            if rng.random() < 0.4:
                m["params"] = self._params(rng)
            return m
        if kind == "prompt":
            m = {"type": "prompt", "req": req, "session": self._session(rng), "prompt": self._prompt(rng)}
            if rng.random() < 0.5:
                m["blend_frames"] = rng.choice((0, 1, 2, 3, 600))
            return m
        if kind == "params":
            return {"type": "params", "req": req, "session": self._session(rng), "params": self._params(rng)}
        if kind == "stats":
            m = {"type": "stats", "req": req}
            if rng.random() < 0.5:
                m["session"] = self._session(rng)
            return m
        if kind == "heartbeat":
            return {"type": "heartbeat", "time": time.time()} if rng.random() < 0.5 else {"type": "heartbeat"}
        if kind == "close":
            return {"type": "close", "req": req, "session": self._session(rng)}
        if kind in ("preset", "save_preset"):  # the fuzzed service has no presets file: unknown/none
            return {"type": kind, "req": req, "session": self._session(rng),
                    "name": rng.choice(("noir", "warm-watercolor", "x", "a" * 40))}
        if kind == "record":
            msg = {"type": "record", "req": req, "session": self._session(rng), "on": rng.random() < 0.5}
            if rng.random() < 0.5:
                msg["what"] = rng.choice(("output", "inputs", "both"))
            return msg
        raise ValueError(f"unknown request type {kind!r}")

    # --- breakage ------------------------------------------------------------------------------

    @staticmethod
    def _mutate(rng: random.Random, msg: dict) -> None:
        """One change somewhere in the nested maps and lists of `msg`."""
        target = msg
        while rng.random() < 0.6:
            children = [v for v in (target.values() if isinstance(target, dict) else target)
                        if isinstance(v, (dict, list)) and v]
            if not children:
                break
            target = rng.choice(children)
        op = rng.random()
        if isinstance(target, dict):
            keys = list(target)
            if keys and op < 0.5:
                target[rng.choice(keys)] = nasty(rng)
            elif keys and op < 0.65:
                del target[rng.choice(keys)]
            elif op < 0.8:
                target[rng.choice(("colour", "extra", "req", "session", "seq", "type", _text(rng)))] = nasty(rng)
            elif op < 0.93:
                target[rng.choice((b"type", b"name", b"req", rng.randbytes(3)))] = nasty(rng)  # a bin key
            else:
                target[rng.choice(keys) if keys else "deep"] = _deep(rng, rng.randint(10, 120))
        else:
            if target and op < 0.5:
                target[rng.randrange(len(target))] = nasty(rng)
            elif target and op < 0.7:
                del target[rng.randrange(len(target))]
            elif op < 0.85:
                target.append(nasty(rng))
            else:
                target.clear()

    def _special(self, rng: random.Random, kind: str, msg: dict) -> dict:
        """The crash causes measured on main, each by name."""
        cause = rng.choice(("bin_key", "empty_layout", "extreme_weights", "zero_weight_blend", "empty_segment"))
        if cause == "bin_key":
            maps = [msg]
            for v in msg.values():
                if isinstance(v, dict):
                    maps.append(v)
                    maps += [x for x in v.values() if isinstance(x, dict)]
                    for x in v.values():
                        if isinstance(x, list):
                            maps += [y for y in x if isinstance(y, dict)]
            rng.choice(maps)[rng.choice((b"name", b"extra", b"steps"))] = 1
            return msg
        if cause in ("empty_layout", "empty_segment"):
            msg = self.template(rng, "open")
            if cause == "empty_layout" or not self.empty_segment:
                msg["layout"] = {"channels": []}
            elif rng.random() < 0.5:
                msg["ring"]["sync"]["handle"] = self.empty_segment
            else:
                msg["ring"][rng.choice(("inputs", "outputs"))][rng.randrange(self.ring["slots"])]["handle"] = self.empty_segment
            return msg
        weights = rng.choice(([1e-300, 1e300], [1e300, 1e-300], [1e308, 1e308], [5e-324, 1.0])) \
            if cause == "extreme_weights" else rng.choice(([0.0], [0.0, 1.0], [-0.0], [-1.0, 2.0]))
        prompt = [[_text(rng), w] for w in weights]
        if rng.random() < 0.3:
            msg = self.template(rng, "open")
            msg["prompt"] = prompt
        else:
            msg = self.template(rng, "prompt")
            msg["prompt"], msg["blend_frames"] = prompt, rng.choice((1, 2, 5))
        return msg

    def _bytes(self, rng: random.Random, data: bytes) -> list[bytes]:
        """Byte-level breakage of an encoded message (ZeroMQ parts)."""
        roll = rng.random()
        if roll < 0.2:
            return [data[:rng.randrange(max(1, len(data)))]]  # truncated
        if roll < 0.4:
            return [data + rng.choice((b"\xc1", b"\x91", b"\xd9", b"\x00", rng.randbytes(rng.randint(1, 9))))]  # trailing
        if roll < 0.55:
            b = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            return [bytes(b)]
        if roll < 0.7:
            return [rng.randbytes(rng.randint(0, 300))]
        if roll < 0.8:  # nesting deeper than the decoder's stack
            return [rng.choice((b"\x91", b"\x81\xa1a")) * rng.choice((100, 1100, 5000)) + b"\xc0"]
        if roll < 0.95:
            return [data] + [rng.randbytes(rng.randint(0, 20)) for _ in range(rng.randint(1, 3))]  # multi-part
        if roll < 0.97:
            return [b""]
        # Over the protocol's limit, under the socket's: the service reads it and refuses it.
        return [data + b"\x00" * (P.MAX_MESSAGE_BYTES + 1 - len(data) + rng.randint(0, 1000))]

    def message(self, rng: random.Random) -> list[bytes]:
        """One generated message, as the ZeroMQ parts to send (usually one)."""
        kind = self.kind = rng.choice(REQUEST_TYPES)
        msg = self.template(rng, kind)
        roll = rng.random()
        if roll < self.valid_share:
            if kind == "frame" and self.mark_ready is not None and 0 <= msg["slot"] < self.ring["slots"]:
                self.mark_ready(msg["slot"], msg["seq"])
        elif roll < self.valid_share + 0.1:
            msg = self._special(rng, kind, msg)
        else:
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                self._mutate(rng, msg)
        try:
            data = msgpack.packb(msg, use_bin_type=True)
        except (ValueError, TypeError, OverflowError):  # a mutation msgpack cannot write (too deep)
            data = msgpack.packb({"type": kind, "deep": _deep(rng, 50)}, use_bin_type=True)
        if roll >= self.valid_share + 0.1 and rng.random() < 0.25:
            return self._bytes(rng, data)
        return [data]


@dataclass
class Tally:
    sent: int = 0
    answers: int = 0
    hangs: int = 0
    untyped: int = 0
    internal: int = 0
    types: Counter = field(default_factory=Counter)
    codes: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)  # the first few breaches, (what, message bytes, answer)

    def breach(self, what: str, parts: list[bytes], answer) -> None:
        if len(self.examples) < 10:
            self.examples.append((what, [p[:200] for p in parts], answer))

    @property
    def clean(self) -> bool:
        return self.hangs == 0 and self.untyped == 0 and self.internal == 0


class Driver:
    """Sends generated messages over a DEALER one at a time and waits for each answer. `pump` runs
    while waiting: `Service.tick` for a service in this process, None for one in its own."""

    def __init__(self, sock: zmq.Socket, fuzzer: Fuzzer, pump: Callable[[], None] | None = None,
                 timeout_s: float = 10.0):
        self.sock, self.fuzzer, self.pump, self.timeout_s = sock, fuzzer, pump, timeout_s
        self.tally = Tally()

    def judge(self, data: bytes, parts: list[bytes]) -> dict | None:
        t = self.tally
        try:
            m = P.decode_raw(data)
        except P.ProtocolError:
            t.untyped += 1
            t.breach("undecodable answer", parts, data[:200])
            return None
        t.types[m["type"]] += 1
        if m["type"] not in REPLY_TYPES:
            t.untyped += 1
            t.breach("unknown answer type", parts, m)
        elif m["type"] == "error":
            code = m.get("code")
            t.codes[code] += 1
            if code not in ERROR_CODES or not isinstance(m.get("message"), str):
                t.untyped += 1
                t.breach("untyped error", parts, m)
            elif code == P.ErrorCode.INTERNAL:
                t.internal += 1
                t.breach("internal error", parts, m)
        elif m["type"] == "opened":
            self.fuzzer.sessions.append(m["session"])
        elif m["type"] == "closed" and m.get("session") in self.fuzzer.sessions:
            self.fuzzer.sessions.remove(m["session"])
        return m

    def send_one(self, rng: random.Random) -> list[dict]:
        parts = self.fuzzer.message(rng)
        is_heartbeat = self.fuzzer.kind == "heartbeat"
        self.sock.send_multipart(parts)
        self.tally.sent += 1
        got, answered = [], False
        end = time.monotonic() + self.timeout_s
        while not answered and time.monotonic() < end:
            if self.pump is not None:
                self.pump()
            # Polled with a little patience even after a tick: the answer crosses the socket
            # on ZeroMQ's I/O thread, and an idle tick itself waits up to 50 ms for input.
            if not self.sock.poll(5 if self.pump is not None else 50):
                continue
            while self.sock.poll(0):
                m = self.judge(self.sock.recv(), parts)
                if m is None:
                    answered = True
                    continue
                got.append(m)
                # The service's own heartbeats do not answer anything but a heartbeat; any other
                # message (a welcome, an error, a frame's done) answers this one, or a frame the
                # service still held, which is as good: the service is not stuck.
                answered = answered or m["type"] != "heartbeat" or is_heartbeat
        if answered:
            self.tally.answers += 1
        else:
            self.tally.hangs += 1
            self.tally.breach("no answer", parts, None)
        return got
