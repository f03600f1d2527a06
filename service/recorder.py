"""Recording a session (the `record` message, docs/operators.md "Recording"): its output as an MP4,
its inputs as a capture ready for fine-tuning, each on its own writer thread.

`start` and `stop` are what the `record` command does to a session (`SessionState.recorder`,
`.capture`). A `Recorder` owns a `handoff.FrameRing` and a thread. The loop `offer`s each frame the session
produced: one copy into a free preallocated buffer (a memcpy on the CPU; on a GPU copies queued
on the ring's side stream), handed over without a lock the writer can hold. The thread writes what
it is handed: `VideoRecorder` encodes the output with ffmpeg (imageio-ffmpeg, the `video`
extra); `CaptureRecorder` appends the input slot's planes (colour and every G-buffer channel, in
the engine's formats), the output as the look's style target, and the frame's metadata to a
capture through `engine_plugins.capture.CaptureWriter` (the one capture writer).

What must hold:
- the loop never waits for a writer: a frame that finds no free buffer (the writer is behind) is
  left out of the recording and counted (`dropped`), never the game frame. The writer allocates
  its buffers and opens its file on its own thread; the service answers the `record` that
  started it once it is `ready` (or failed: `error`), and the one that stops it (`stop` only
  tells the writer to finish) once it has `finished` writing;
- a capture holds one look per take: a take is the frames between two prompt (or preset) changes,
  in `<folder>/take-NNN/`, each a capture of its own whose style target is the service's output
  under that prompt (a blend, no prompt or a blend in progress: a take without targets, since a
  training clip has one prompt). The first frame of a take, a frame after a left-out one and a
  frame with `params.reset` are marked as cuts: no history is valid there;
- a capture frame's time is the session's time since the recording started: the sum of the
  frames' `dt` (1 / RECORD_FPS where a frame has none), left-out frames included.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import torch

from .. import __version__
from ..engine_plugins.capture import CaptureWriter, FrameMeta
from ..interop.errors import ErrorCode
from ..interop.layout import output_bytes
from ..interop.limits import DEFAULT_RECORD_WHAT, RECORD_FPS
from .control import ControlError
from .handoff import FrameRing

log = logging.getLogger("streamstyle.service")


def rgba8(raw: torch.Tensor, width: int, height: int, fmt: str) -> np.ndarray:
    """An output slot's first frame ([>= H * W * bytes per pixel] uint8, on the host) as
    [H, W, 4] uint8: rgba16f is clipped to [0, 1] (no tone mapping: the service writes display
    values)."""
    arr = raw.numpy()
    if fmt == "rgba8":
        return arr[: width * height * 4].reshape(height, width, 4)
    half = arr[: width * height * 8].view(np.float16).reshape(height, width, 4).astype(np.float32)
    return (np.clip(np.nan_to_num(half), 0, 1) * 255 + 0.5).astype(np.uint8)


class Recorder:
    """One recording of one session: the loop offers frames, the thread writes them."""

    what = ""  # "output" or "inputs"

    def __init__(self, path: str, ring: FrameRing):
        self.path, self.ring = path, ring
        self.taken = 0  # the loop's counts: frames handed to the writer, frames left out
        self.dropped = 0
        self.written = 0  # the writer's: frames written, frames it could not write
        self.failed = 0
        self.error: str | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"streamstyle-record-{self.what}", daemon=True)
        self._thread.start()

    # --- the loop's side ---------------------------------------------------------------------

    def _offer(self, sources: dict, item) -> bool:
        if not self._stopped and self.error is None and self.ring.put(sources, item):
            self.taken += 1
            return True
        self.dropped += 1
        return False

    def stop(self) -> None:
        """No more frames: the writer writes what it was handed and closes its files. Never waits."""
        if not self._stopped:
            self._stopped = True
            self.ring.close()

    @property
    def ready(self) -> bool:
        return self.ring.ready

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # --- the writer's side -------------------------------------------------------------------

    def _open(self) -> None:
        pass

    def _write(self, bufs: dict, item) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _fail(self, what: str, exc: Exception) -> None:
        if self.error is None:
            self.error = f"{what}: {type(exc).__name__}: {exc}"
            log.error("recording %s: %s; frames from here on are left out", self.path, self.error)

    def _run(self) -> None:
        try:
            self.ring.allocate()
            self._open()
            self.ring.open()
        except Exception as exc:
            self.ring.ready = False  # the loop leaves every later frame out; its start is answered with the error
            self._fail("could not start", exc)
            return
        while True:
            got = self.ring.get()
            if got is None:
                break
            i, bufs, item = got
            try:
                if self.error is None:
                    self._write(bufs, item)
                    self.written += 1
                else:
                    self.failed += 1
            except Exception as exc:
                self.failed += 1
                self._fail("writing failed", exc)
            finally:
                self.ring.give_back(i)
        try:
            self._close()
        except Exception as exc:
            self._fail("closing failed", exc)
        self.ring.release()  # the loop puts no more (it stopped this recorder): the buffers can go now
        log.info("recording %s: %d frames written, %d left out", self.path, self.written, self.dropped + self.failed)

    def result(self) -> dict:
        raise NotImplementedError


def mp4_writer(path: str, width: int, height: int, fps: float = RECORD_FPS):
    """The MP4 encoder recordings (and `streamstyle eval-media`'s video) are written with: a started
    imageio-ffmpeg generator that takes [height, width, 4] uint8 RGBA frames by `send` and
    finishes the file on `close`. Needs the video extra (imageio-ffmpeg)."""
    import imageio_ffmpeg  # the video extra; a missing one refuses the `record` up front

    writer = imageio_ffmpeg.write_frames(str(path), (width, height), pix_fmt_in="rgba", fps=fps,
                                         macro_block_size=2, ffmpeg_log_level="error")
    writer.send(None)  # starts ffmpeg
    return writer


class VideoRecorder(Recorder):
    """The session's output as an MP4 (H.264, RECORD_FPS, one video frame per frame)."""

    what = "output"

    def __init__(self, path: str, width: int, height: int, fmt: str, device):
        import imageio_ffmpeg  # noqa: F401  (the video extra; a missing one refuses the `record` up front)

        self.width, self.height, self.fmt = width, height, fmt
        super().__init__(path, FrameRing({"output": output_bytes(width, height, fmt)}, device, staged=("output",)))

    def offer(self, output) -> bool:
        """Hand a copy of the finished output slot ([>= output bytes] uint8) to the encoder."""
        return self._offer({"output": output}, None)

    def _open(self) -> None:
        self._writer = mp4_writer(self.path, self.width, self.height)

    def _write(self, bufs: dict, item) -> None:
        self._writer.send(np.ascontiguousarray(rgba8(bufs["output"], self.width, self.height, self.fmt)))

    def _close(self) -> None:
        if hasattr(self, "_writer"):
            self._writer.close()
            # imageio-ffmpeg does not raise when ffmpeg could not open its output: look for the file.
            if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
                raise RuntimeError("ffmpeg wrote no file (its error is in the service's output)")

    def result(self) -> dict:
        out = {"recorded": self.path, "frames": self.written, "skipped": self.dropped + self.failed}
        return {**out, "error": self.error} if self.error else out


def _matrix(numbers) -> torch.Tensor:
    return torch.eye(4) if numbers is None else torch.tensor(numbers, dtype=torch.float32).view(4, 4)


class CaptureRecorder(Recorder):
    """The session's inputs, with its output as the style target, as captures (one per take)."""

    what = "inputs"

    def __init__(self, folder: str, session: int, width: int, height: int, layout, fmt: str, device):
        os.makedirs(folder)  # a new folder: its name carries the start time; an unwritable one refuses the record
        self.session, self.width, self.height, self.layout, self.fmt = session, width, height, layout, fmt
        self.takes: list[str] = []  # the writer's: each take's capture folder
        self._writer = None
        self._look = None
        self._style: str | None = None
        self._time = 0.0  # the loop's: session time since the start, left-out frames included
        self._gap = False  # the loop's: the last frame offered was left out
        super().__init__(folder, FrameRing({"input": layout.slot_bytes(width, height),
                                            "output": output_bytes(width, height, fmt)}, device, staged=("output",)))

    def offer(self, input_slot, output_slot, msg, params: dict, prompt, preset: str | None, blending: bool) -> bool:
        """Hand copies of the frame's input and output slots and its metadata to the writer.
        params: the frame's parameters as it ran (steps, strength, and any others it carried);
        prompt: the session's (str, tuple of (text, weight), or None); blending: mid-blend."""
        t = self._time
        self._time += msg.dt if msg.dt is not None else 1.0 / RECORD_FPS
        item = (msg.seq, msg.dt, t, msg.view, msg.proj, msg.jitter, params, prompt, preset, blending,
                self._gap or bool(params.get("reset")))
        ok = self._offer({"input": input_slot, "output": output_slot}, item)
        self._gap = not ok
        return ok

    def _next_take(self, look) -> None:
        if self._writer is not None:
            self._writer.close()
        prompt, preset, blending = look
        folder = os.path.join(self.path, f"take-{len(self.takes):03d}")
        one_prompt = isinstance(prompt, str) and not blending
        self._style = (preset or "look") if one_prompt else None
        wire = prompt if prompt is None or isinstance(prompt, str) else [[t, w] for t, w in prompt]
        engine = {"name": "streamstyle-service", "version": __version__, "session": self.session,
                  "take": len(self.takes), "prompt": wire, "preset": preset, "blending": blending,
                  "targets": "the service's output" if one_prompt else None}
        self._writer = CaptureWriter(folder, self.width, self.height, float(RECORD_FPS), self.layout,
                                     styles={self._style: [prompt]} if one_prompt else None, engine=engine)
        self.takes.append(folder)
        self._look = look

    def _write(self, bufs: dict, item) -> None:
        seq, dt, t, view, proj, jitter, params, prompt, preset, blending, cut = item
        look = (prompt, preset, blending)
        if self._writer is None or look != self._look:
            self._next_take(look)
            cut = True  # the take's first frame: its previous frame is not in this capture
        planes = self.layout.view(bufs["input"], self.width, self.height)
        targets = None
        if self._style is not None:
            targets = {self._style: torch.from_numpy(rgba8(bufs["output"], self.width, self.height, self.fmt)[..., :3])}
        wire = prompt if prompt is None or isinstance(prompt, str) else [[p, w] for p, w in prompt]
        info = {"seq": seq, "dt": dt, "prompt": wire, "preset": preset, "blending": blending, "params": params}
        meta = FrameMeta(time=t, cut=cut, view=_matrix(view), proj=_matrix(proj),
                         jitter=tuple(jitter) if jitter is not None else (0.0, 0.0), info=info)
        self._writer.append(planes, targets=targets, meta=meta)  # copies: the buffer goes back at once

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def result(self) -> dict:
        out = {"capture": self.path, "captures": list(self.takes), "capture_frames": self.written,
               "capture_dropped": self.dropped + self.failed}
        return {**out, "capture_error": self.error} if self.error else out


class Finishing:
    """Recorders told to stop, and the answer their stop gets once every one has finished."""

    error = None  # a stop always succeeds; a writer's failure is a field of the answer

    def __init__(self, recorders: list[Recorder]):
        self.recorders = recorders

    @property
    def finished(self) -> bool:
        return all(r.finished for r in self.recorders)

    def join(self) -> None:
        for r in self.recorders:
            r.join()

    def undo(self) -> None:
        pass

    def result(self) -> dict:
        out: dict = {}
        for r in self.recorders:
            out.update(r.result())
        return out or {"recording": None, "frames": 0}


class Starting:
    """Recorders just started, and the answer their start gets once every one is ready to take
    frames; `error` if one could not start (`on_failed` then undoes the whole start)."""

    def __init__(self, recorders: list[Recorder], answer: dict, on_failed):
        self.recorders, self.answer, self.on_failed = recorders, answer, on_failed

    @property
    def finished(self) -> bool:  # `finished` too: a recorder stopped before it was ever ready
        return all(r.ready or r.error is not None or r.finished for r in self.recorders)

    def join(self) -> None:
        for r in self.recorders:
            while not (r.ready or r.error is not None or r.finished):
                r.join(0.01)

    @property
    def error(self) -> str | None:
        return "; ".join(f"{r.path}: {r.error}" for r in self.recorders if r.error is not None) or None

    def undo(self) -> None:
        self.on_failed()

    def result(self) -> dict:
        return self.answer


# What `record.what` starts or stops: the session's attributes that hold its recorders.
PARTS = {"output": ("recorder",), "inputs": ("capture",), "both": ("recorder", "capture")}


def stop(state, what: str | None) -> Finishing:
    """Stop a session's recordings (`what`; None: all) without waiting; the answer comes with
    the returned `Finishing` once their files are complete."""
    names = PARTS[what or "both"]
    stopping = [getattr(state, n) for n in names if getattr(state, n) is not None]
    for n in names:
        setattr(state, n, None)
    for rec in stopping:
        rec.stop()
    return Finishing(stopping)


def start(state, what: str | None, folder: str, device) -> Starting:
    """Start a session's recordings (`what`; None: the output) in `folder`, named
    session<id>-<UTC time>(.mp4). What already records goes on. All or nothing: ControlError
    `recording_unavailable`, and nothing started, if one cannot start here; the returned
    `Starting` is answered once the writers are ready (or undoes the start if one fails then)."""
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    stem = os.path.join(folder, f"session{state.id}-{stamp}")
    started = []
    try:
        os.makedirs(folder, exist_ok=True)
        if "recorder" in PARTS[what or DEFAULT_RECORD_WHAT] and state.recorder is None:
            state.recorder = VideoRecorder(stem + ".mp4", state.width, state.height, state.output_format, device)
            started.append("recorder")
        if "capture" in PARTS[what or DEFAULT_RECORD_WHAT] and state.capture is None:
            state.capture = CaptureRecorder(stem, state.id, state.width, state.height, state.handle.layout,
                                            state.output_format, device)
            started.append("capture")
    except (ModuleNotFoundError, OSError) as exc:
        for n in started:
            getattr(state, n).stop()
            setattr(state, n, None)
        if isinstance(exc, ModuleNotFoundError):
            raise ControlError(ErrorCode.RECORDING_UNAVAILABLE, "recording the output needs the video extra: "
                               "pip install 'streamstyle[video]'") from None
        raise ControlError(ErrorCode.RECORDING_UNAVAILABLE, f"cannot record to {stem}: {exc}") from None
    answer = {}
    if state.recorder is not None:
        answer["recording"] = state.recorder.path
    if state.capture is not None:
        answer["capture"] = state.capture.path
    new = [getattr(state, n) for n in started]

    def undo():  # a writer could not start: the whole start is undone, as a refusal would leave it
        for n, rec in zip(started, new):
            rec.stop()
            if getattr(state, n) is rec:
                setattr(state, n, None)

    return Starting(new, answer, undo)
