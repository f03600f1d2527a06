"""Recording a session's output to MP4 on a writer thread (the `record` message, docs/operators.md).

What must hold:
- the loop only copies the finished output slot (`offer`: one host memcpy on a shared-memory
  ring, one device-to-device copy on a CUDA ring) and queues the copy; encoding (ffmpeg through
  imageio-ffmpeg, the `video` extra) runs on this module's thread;
- the queue is bounded (`RECORD_QUEUE_FRAMES`): when the encoder falls behind, a frame is left
  out of the recording and counted (`skipped`), never waited for;
- `stop` drains the queue, closes the file and returns the frames written.
"""

from __future__ import annotations

import logging
import queue
import threading

from ..interop.limits import RECORD_FPS, RECORD_QUEUE_FRAMES

log = logging.getLogger("streamstyle.service")


def mp4_writer(path: str, width: int, height: int, fps: float = RECORD_FPS):
    """The MP4 encoder recordings (and `streamstyle eval-media`'s video) are written with: a started
    imageio-ffmpeg generator that takes [height, width, 4] uint8 RGBA frames by `send` and
    finishes the file on `close`. Needs the video extra (imageio-ffmpeg)."""
    import imageio_ffmpeg  # the video extra; a missing one refuses the `record` up front

    writer = imageio_ffmpeg.write_frames(str(path), (width, height), pix_fmt_in="rgba", fps=fps,
                                         macro_block_size=2, ffmpeg_log_level="error")
    writer.send(None)  # starts ffmpeg
    return writer


class Recorder:
    def __init__(self, path: str, width: int, height: int, fmt: str):
        self.path, self.width, self.height, self.fmt = path, width, height, fmt
        self.written = 0
        self.skipped = 0
        self._q: queue.Queue = queue.Queue(RECORD_QUEUE_FRAMES)
        self._writer = mp4_writer(path, width, height)
        self._thread = threading.Thread(target=self._run, name="streamstyle-recorder", daemon=True)
        self._thread.start()

    def offer(self, output) -> None:
        """Queue a copy of an output slot's pixels ([H * W * bytes per pixel] uint8)."""
        n = self.width * self.height * (4 if self.fmt == "rgba8" else 8)
        copy = output[:n].clone() if hasattr(output, "clone") and output.device.type != "cpu" else \
            (output[:n].numpy() if hasattr(output, "numpy") else output[:n]).copy()
        try:
            self._q.put_nowait(copy)
        except queue.Full:
            self.skipped += 1

    def _run(self) -> None:
        import numpy as np

        while True:
            item = self._q.get()
            if item is None:
                return
            arr = np.ascontiguousarray(item.cpu().numpy() if hasattr(item, "cpu") else item)
            if self.fmt == "rgba8":
                rgba = arr.reshape(self.height, self.width, 4)
            else:
                half = np.nan_to_num(arr.view(np.float16).reshape(self.height, self.width, 4).astype(np.float32))
                rgba = (np.clip(half, 0, 1) * 255 + 0.5).astype(np.uint8)
            try:
                self._writer.send(np.ascontiguousarray(rgba))
                self.written += 1
            except Exception:
                log.error("recording %s: the encoder failed; frames from here on are left out", self.path)
                self.skipped += 1

    def stop(self) -> int:
        self._q.put(None)
        self._thread.join()
        self._writer.close()
        log.info("recording %s: %d frames written, %d left out", self.path, self.written, self.skipped)
        return self.written
