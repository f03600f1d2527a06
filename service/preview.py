"""The live preview page: an HTTP server thread on an opt-in loopback port (`serve --preview`).

It serves the page's static files (shipped in the package: `service/static/`), the watched
session's newest output as a JPEG, the service's `stats`, and takes the page's controls.

What must hold:
- the loop never encodes: after a frame of the watched session is done, and only while a page
  has asked for a frame in the last `_IDLE_S` and at most `PREVIEW_MAX_FPS` times a second, the
  loop copies the output slot's pixels, subsampled to at most `PREVIEW_MAX_WIDTH` wide
  (`hand_over`: one strided host copy on a shared-memory ring, one device-to-device copy on a
  CUDA ring) and hands the copy over under a lock; this thread turns it into a JPEG when a page
  asks;
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from ..interop.limits import PREVIEW_MAX_FPS, PREVIEW_MAX_WIDTH
from .control import OPS, Command, ControlError, ControlQueue

log = logging.getLogger("streamstyle.service")

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
_IDLE_S = 2.0  # a page that has not asked for a frame this long is gone: the loop stops copying
_REPLY_S = 5.0  # how long a request waits for the loop (a frame on the CPU can take a while)
_MAX_BODY = 64 * 1024


class PreviewServer:
    def __init__(self, controls: ControlQueue, host: str, port: int):
        self.controls = controls
        self.watching: int | None = None  # the session shown; None: the first that sends a frame
        self._lock = threading.Lock()
        self._snapshot = None  # (number, session, bytes or tensor, width, height, format)
        self._number = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._asked = 0.0  # time.perf_counter() of the last frame request
        self._handed = 0.0
        self.handovers = 0
        self.handover_s = 0.0  # the loop's total time in hand_over, for the cost report
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
        return (session == self.watching and now - self._asked < _IDLE_S
                and now - self._handed >= 1.0 / PREVIEW_MAX_FPS)

    def hand_over(self, session: int, output, width: int, height: int, fmt: str) -> None:
        """Copy every k-th pixel of every k-th row (at most PREVIEW_MAX_WIDTH wide) of an output
        slot's bytes ([H * W * bytes per pixel] uint8, numpy or torch): a copy the engine's next
        frames cannot change."""
        t0 = time.perf_counter()
        bpp = 4 if fmt == "rgba8" else 8
        k = -(-width // PREVIEW_MAX_WIDTH)
        raw = output[: width * height * bpp]
        if hasattr(raw, "clone") and raw.device.type == "cpu":
            raw = raw.numpy()  # a view: numpy's strided copy is the faster on the host
        if hasattr(raw, "clone"):  # torch, on the ring's GPU: a device-to-device copy
            import torch

            copy = raw.view(torch.int32 if bpp == 4 else torch.int64).view(height, width)[::k, ::k].clone()
        else:  # one whole pixel per element: a strided gather of words, not of bytes
            copy = raw.view("<u4" if bpp == 4 else "<u8").reshape(height, width)[::k, ::k].copy()
        with self._lock:
            self._number += 1
            self._snapshot = (self._number, session, copy, int(copy.shape[1]), int(copy.shape[0]), fmt)
        self._handed = time.perf_counter()
        self.handovers += 1
        self.handover_s += self._handed - t0

    # --- this thread's side ---------------------------------------------------------------

    def jpeg(self) -> tuple[int, int, bytes] | None:
        """(number, session, JPEG bytes) of the newest snapshot, encoded once per snapshot."""
        self._asked = time.perf_counter()
        with self._lock:
            snap = self._snapshot
        if snap is None:
            return None
        number, session, data, w, h, fmt = snap
        if self._jpeg is not None and self._jpeg[0] == number:
            return number, session, self._jpeg[1]
        import numpy as np
        from PIL import Image

        arr = np.ascontiguousarray(data.cpu().numpy() if hasattr(data, "cpu") else data)
        if fmt == "rgba8":
            rgb = arr.view(np.uint8).reshape(h, w, 4)[..., :3]
        else:
            half = np.nan_to_num(arr.view(np.float16).reshape(h, w, 4)[..., :3].astype(np.float32))
            rgb = (np.clip(half, 0, 1) * 255 + 0.5).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=85)
        self._jpeg = (number, buf.getvalue())
        return number, session, self._jpeg[1]

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
            elif path == "/frame.jpg":
                got = preview.jpeg()
                if got is None:
                    self._send(204, b"", "image/jpeg")
                else:
                    number, session, body = got
                    self._send(200, body, "image/jpeg", {"X-Frame-Number": str(number), "X-Session": str(session)})
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
