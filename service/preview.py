"""The live preview page: an HTTP server thread on an opt-in loopback port (`serve --preview`).

It serves the page's static files (shipped in the package: `service/static/`), the watched
session's newest output as a JPEG and, on request, one of its input channels beside it
(`gbuffer_view`), the service's `stats`, and takes the page's controls.

What must hold:
- the loop never encodes and never waits on this thread: after a frame of the watched session is
  done, and only while a page has asked for a frame in the last `PAGE_IDLE_S` and at most
  `PREVIEW_MAX_FPS` times a second, the loop copies the output slot's pixels, subsampled to at
  most `PREVIEW_MAX_WIDTH` wide (`hand_over`: one strided host copy on a shared-memory ring; on a
  CUDA ring a device-to-device copy, taken to the host on a side stream the frame's stream does
  not wait for), and publishes the copy in a single-slot mailbox (one attribute, replaced whole:
  no lock; a page always reads a complete snapshot, the newest). Only while the page shows an
  input channel (`beside`, set through the `view` command) does the loop also copy that plane,
  the same way, before the input slot goes back to the engine (`copy_input`);
- this thread never touches the service's state: stats and every control go through the
  service's `ControlQueue` as `control.Command`s with a reply future, exactly like OSC;
- it binds only where the config allows (`studio_host`, loopback unless CURVE keys are set).
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from ..interop.limits import PREVIEW_MAX_FPS, PREVIEW_MAX_WIDTH
from .control import OPS, Command, ControlError, ControlQueue

log = logging.getLogger("streamstyle.service")

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
PAGE_IDLE_S = 2.0  # a page that has not asked for a frame this long is gone: the loop stops copying
_REPLY_S = 5.0  # how long a request waits for the loop (a frame on the CPU can take a while)
_MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class _Copy:
    """A subsampled copy made by the loop: the array (numpy, or a host tensor still being filled
    until `event` completes), and what is needed to show it."""
    data: Any
    event: Any = None  # a torch.cuda.Event on a CUDA ring, else None
    channel: Any = None  # the layout's Channel, for an input plane
    motion_scale: tuple = (1.0, 1.0)

    def numpy(self):
        import numpy as np

        if self.event is not None:
            self.event.synchronize()  # this thread waits for the side stream's copy, never the loop
        return np.ascontiguousarray(self.data.numpy() if hasattr(self.data, "numpy") else self.data)


@dataclass(frozen=True)
class _Snapshot:
    number: int
    session: int
    output: _Copy
    fmt: str
    beside: _Copy | None


class PreviewServer:
    def __init__(self, controls: ControlQueue, host: str, port: int):
        # Imported here, once: an import on the page's thread would hold the GIL while the loop runs.
        from PIL import Image  # noqa: F401  (the studio extra)

        from . import gbuffer_view  # noqa: F401

        self.controls = controls
        self.watching: int | None = None  # the session shown; None: the first that sends a frame
        self.beside: str | None = None  # the input channel shown beside the output (the loop sets it)
        self._snapshot: _Snapshot | None = None  # the mailbox: replaced whole by the loop, read by the page's threads
        self._number = 0
        self._side = None  # a CUDA side stream for the copies to the host, made on the first CUDA ring
        self._jpeg: dict[str, tuple[int, bytes]] = {}  # kind -> (snapshot number, JPEG), encoded once per snapshot
        self._asked = 0.0  # time.perf_counter() of the last frame request
        self._handed = 0.0
        self.handovers = 0
        self.input_copies = 0
        self.handover_s = 0.0  # the loop's total time in hand_over and copy_input, for the cost report
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="streamstyle-preview", daemon=True)
        self._thread.start()
        log.info("preview page on http://%s:%d/", host, self.port)

    # --- the loop's side ------------------------------------------------------------------

    def wants(self, session: int, now: float) -> bool:
        """Should the loop hand this frame over? Cheap: a few comparisons."""
        if self.watching is None:
            self.watching = session
        return (session == self.watching and now - self._asked < PAGE_IDLE_S
                and now - self._handed >= 1.0 / PREVIEW_MAX_FPS)

    def _copy(self, view, channel=None, motion_scale=(1.0, 1.0)) -> _Copy:
        """A strided copy of `view` ([H, W, ...], numpy or torch) that the engine's next frames
        cannot change: every k-th element of every k-th row, at most PREVIEW_MAX_WIDTH wide."""
        k = -(-int(view.shape[1]) // PREVIEW_MAX_WIDTH)
        sub = view[::k, ::k]
        if not hasattr(sub, "clone"):
            return _Copy(sub.copy(), None, channel, motion_scale)
        if sub.device.type == "cpu":
            return _Copy(sub.clone(), None, channel, motion_scale)
        import torch

        from .handoff import to_host_async

        if self._side is None:
            self._side = torch.cuda.Stream(sub.device)
        host, event = to_host_async(sub.clone(), self._side)  # the clone is on the frame's stream, device to device
        return _Copy(host, event, channel, motion_scale)

    def copy_input(self, slot, layout, width: int, height: int) -> _Copy | None:
        """The `beside` channel's plane of an input slot, subsampled, for the next `hand_over`
        (called before the slot goes back to the engine)."""
        if self.beside is None or self.beside not in layout.names:
            return None
        t0 = time.perf_counter()
        channel = layout[self.beside]
        copy = self._copy(layout.view(slot, width, height)[channel.name], channel,
                          layout.motion_scale(width, height) if channel.name == "motion" else (1.0, 1.0))
        self.input_copies += 1
        self.handover_s += time.perf_counter() - t0
        return copy

    def hand_over(self, session: int, output, width: int, height: int, fmt: str, beside: _Copy | None = None) -> None:
        """Publish a snapshot: a subsampled copy of an output slot's bytes ([H * W * bytes per
        pixel] uint8, numpy or torch) and the input plane `copy_input` took of the same frame."""
        t0 = time.perf_counter()
        bpp = 4 if fmt == "rgba8" else 8
        raw = output[: width * height * bpp]
        if hasattr(raw, "clone") and raw.device.type == "cpu":
            raw = raw.numpy()  # a view: numpy's strided copy is the faster on the host
        # One whole pixel per element: a strided gather of words, not of bytes.
        if hasattr(raw, "clone"):
            import torch

            pixels = raw.view(torch.int32 if bpp == 4 else torch.int64).view(height, width)
        else:
            pixels = raw.view("<u4" if bpp == 4 else "<u8").reshape(height, width)
        self._number += 1
        self._snapshot = _Snapshot(self._number, session, self._copy(pixels), fmt, beside)
        self._handed = time.perf_counter()
        self.handovers += 1
        self.handover_s += self._handed - t0

    # --- this thread's side ---------------------------------------------------------------

    def jpeg(self, kind: str = "frame") -> tuple[int, int, str, bytes] | None:
        """(number, session, what it shows, JPEG bytes) of the newest snapshot's output (`kind`
        "frame") or input view ("beside"), encoded once per snapshot; None if there is none."""
        self._asked = time.perf_counter()
        snap = self._snapshot  # one read of the mailbox: this snapshot stays whole whatever the loop does
        if snap is None or (kind == "beside" and snap.beside is None):
            return None
        what = "output" if kind == "frame" else snap.beside.channel.name
        cached = self._jpeg.get(kind)
        if cached is not None and cached[0] == snap.number:
            return snap.number, snap.session, what, cached[1]
        import numpy as np
        from PIL import Image

        if kind == "frame":
            arr = snap.output.numpy()
            h, w = arr.shape
            if snap.fmt == "rgba8":
                rgb = arr.view(np.uint8).reshape(h, w, 4)[..., :3]
            else:
                half = np.nan_to_num(arr.view(np.float16).reshape(h, w, 4)[..., :3].astype(np.float32))
                rgb = (np.clip(half, 0, 1) * 255 + 0.5).astype(np.uint8)
        else:
            from ..interop.layout import FORMATS, numpy_dtype
            from .gbuffer_view import visualize

            arr = snap.beside.numpy()
            ch = snap.beside.channel
            arr = arr.view(numpy_dtype(FORMATS[ch.format].dtype))  # torch keeps uint32 as int32
            rgb = visualize(arr, ch, snap.beside.motion_scale)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=85)
        self._jpeg[kind] = (snap.number, buf.getvalue())
        return snap.number, snap.session, what, buf.getvalue()

    def ask(self, op: str, session: int | None = None, value=None) -> dict:
        """Queue a command for the loop and wait for its answer; ControlError if refused."""
        reply: Future = Future()
        if not self.controls.put(Command(session, op, value, source="preview", reply=reply)):
            raise ControlError("internal", "the service's command queue is full")
        try:
            return reply.result(timeout=_REPLY_S)
        except FutureTimeout:
            raise ControlError("internal", "the service did not answer in time") from None

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(preview: PreviewServer):
    class Handler(BaseHTTPRequestHandler):
        server_version = "streamstyle-preview"

        def log_message(self, fmt, *args):  # the service's log, not stderr
            log.debug("preview: " + fmt, *args)

        def _send(self, code: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path in STATIC:
                name, ctype = STATIC[path]
                body = resources.files(__package__).joinpath("static", name).read_bytes()
                self._send(200, body, ctype)
            elif path in ("/frame.jpg", "/beside.jpg"):
                got = preview.jpeg("frame" if path == "/frame.jpg" else "beside")
                if got is None:
                    self._send(204, b"", "image/jpeg")
                else:
                    number, session, what, body = got
                    self._send(200, body, "image/jpeg", {"X-Frame-Number": str(number), "X-Session": str(session),
                                                         "X-Shows": what})
            elif path == "/api/stats":
                try:
                    self._json(200, {**preview.ask("stats"), "watching": preview.watching})
                except ControlError as exc:
                    self._json(503, {"ok": False, "code": exc.code, "message": exc.message})
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self):
            if self.path != "/api/control":
                self._send(404, b"not found", "text/plain")
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if not 0 < length <= _MAX_BODY:
                    raise ValueError(f"a body of 1 to {_MAX_BODY} bytes")
                body = json.loads(self.rfile.read(length))
                op, session = body["op"], body.get("session")
                if op not in OPS or op == "stats" or not (session is None or (isinstance(session, int) and not isinstance(session, bool))):
                    raise ValueError(f"op must be one of {', '.join(o for o in OPS if o != 'stats')}; session an integer")
            except (ValueError, KeyError, TypeError) as exc:
                self._json(400, {"ok": False, "code": "bad_field", "message": str(exc)})
                return
            try:
                self._json(200, {"ok": True, **preview.ask(op, session, body.get("value"))})
            except ControlError as exc:
                self._json(400, {"ok": False, "code": exc.code, "message": exc.message})

    return Handler
