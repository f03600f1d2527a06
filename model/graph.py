"""One CUDA graph per session shape: the whole per-frame step captured once, replayed every frame.

Eager PyTorch pays a kernel launch from Python for every op, and at 720p and 1080p that host time,
not the GPU, sets the frame time (benchmarks/NOTES.md). A `FrameGraph` captures the frame function
itself, `frame.stylize_frame` (no variant of it), for one (layout, size, steps) with static buffers
for everything that changes per frame: the slot's bytes, the session's page table, the noise, the
prompt context, and the strength and the cut flag as [1] tensors in its `FrameParams`. A frame is
then a few copies into those buffers and one replay. Prompt and parameter changes touch only buffer
contents, never the graph.

What the graph adds around the frame function: the session's state gathered from the paged cache's
pool through the bound page table, the slot's finiteness test, and the next state scattered back
through the same table, guarded on the device by that test (a refused frame leaves the pool as it
was). One graph serves every session of its shape: `bind` copies a session's page ids into the
graph's table (a device-to-device copy, only when the session differs from the last replay's).
Until bound, the table points at the cache's null page (the warm-up runs there). What stays
outside, per frame: the slot's copy in (by the driver where cuda-bindings is installed), the noise
draw (each session has its own generator; a captured draw would read the generator registered at
capture), and the output's copy into the engine's slot (its address changes with the ring slot).

On the CPU (`capture` False) `replay` runs the same body uncaptured: how CI checks the buffers,
the bindings and the guarded write without a GPU.
"""

from __future__ import annotations

import torch

from ..kernels.finite import all_finite
from ..kernels.paged import paged_gather, paged_scatter
from .frame import FrameParams, PromptContext, padded_size, stylize_frame
from .layout import GBufferLayout
from .network import StreamStyleModel
from .state import StateSpec


def on_device(t: torch.Tensor, device: torch.device) -> bool:
    """Whether tensor `t` lives on `device`, where a device without an index ("cuda") names the
    current one (a tensor's own device always has its index: "cuda" != "cuda:0" as devices)."""
    if t.device.type != device.type:
        return False
    if device.type != "cuda":
        return True
    return t.device.index == (device.index if device.index is not None else torch.cuda.current_device())


def driver_memcpy():
    """cuda.bindings' `cuMemcpyDtoDAsync` (dst, src, bytes, stream) -> (CUresult,), or None
    without cuda-bindings (the `cuda` extra): a device-to-device copy issued in ~27 us of host time
    where torch's `copy_` takes ~70 (H200 host, benchmarks/NOTES.md v0.20), with the device idle
    meanwhile, since the service runs one frame at a time."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return None
    return driver.cuMemcpyDtoDAsync


class FrameGraph:
    def __init__(self, model: StreamStyleModel, layout: GBufferLayout, width: int, height: int, steps: int,
                 device: torch.device, pool: torch.Tensor, out_format: str | None = None,
                 finite: tuple[str, ...] = (), capture: bool | None = None):
        """`pool`: the paged cache's [P, E] float32 pool, where the bound session's state lives.
        `out_format` None: the graph's output is RGB [1, 3, H, W] float; "rgba8" / "rgba16f": the
        frame in that engine format (bytes), written by the decoder's last pass. `finite`: float
        channels of the slot tested for NaN / infinity inside the replay (`replay` returns the flag;
        where it is False the session's pages are not written). `capture` (default: on a CUDA
        device) False runs the body eagerly at each replay."""
        capture = device.type == "cuda" if capture is None else capture
        if capture and device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        if pool.dim() != 2 or pool.dtype != torch.float32 or not on_device(pool, device):
            raise ValueError(f"the cache pool must be [P, E] float32 on {device}")
        self.capture = capture
        cfg = model.config
        self.model, self.layout, self.width, self.height, self.steps = model, layout, width, height, steps
        self.out_format = out_format
        self.finite = tuple(finite)
        self.packed = None
        if out_format is not None:
            from ..interop.layout import output_bytes

            self.packed = torch.zeros(output_bytes(width, height, out_format), dtype=torch.uint8, device=device)
        self.spec = StateSpec(cfg, *padded_size(cfg, width, height))  # the network's size
        self.slot = torch.zeros(layout.slot_bytes(width, height), dtype=torch.uint8, device=device)
        for name, plane in layout.view(self.slot, width, height).items():
            if plane.is_floating_point():
                plane.fill_(1.0)  # finite, positive depth for the warm-up
        self.pool = pool
        self._memcpy = driver_memcpy() if capture else None
        self.pages = torch.zeros(-(-self.spec.numel // pool.shape[1]), dtype=torch.int64, device=device)  # null page
        self._bound = None  # the device table last copied into `pages` (held, so its id is not reused)
        self.state = torch.zeros(self.spec.numel, device=device)  # the gathered state of the last replay
        self.noise = torch.zeros(self.spec.shapes()["latent"], device=device)
        self.tokens = torch.zeros(1, cfg.context_tokens, cfg.text_dim, device=device)
        self.bias = torch.full((1, cfg.context_tokens), float("-inf"), device=device)
        self.bias[0, 0] = 0.0
        self.pooled = torch.zeros(1, cfg.text_dim, device=device)
        self.strength = torch.full((1,), 0.5, device=device)
        self.cut = torch.zeros(1, device=device)  # 1.0 on a camera cut
        self._prompt = None  # the PromptContext last copied in (by identity)
        self._scalars = (0.5, 0.0)  # strength, cut as the buffers hold them
        if not capture:
            return
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):  # warm up outside the capture: lazy inits, autotuning, allocator
                self._body()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.result, self.ok = self._body()

    def _body(self):
        paged_gather(self.pool, self.pages, self.spec.numel, out=self.state)
        views = self.layout.view(self.slot, self.width, self.height)
        ok = all_finite([views[n] for n in self.finite]) if self.finite else None  # one read of each plane
        planes = {k: v.unsqueeze(0) for k, v in views.items()}
        out = None if self.packed is None else (self.packed, self.out_format)
        rgb, nxt = stylize_frame(self.model, self.layout, planes, self.width, self.height,
                                 PromptContext(self.tokens, self.bias, self.pooled), self.spec.unflatten(self.state),
                                 self.noise, FrameParams(steps=self.steps, strength=self.strength, reset=self.cut), out=out)
        paged_scatter(self.pool, self.pages, self.spec.flatten(nxt), keep=ok)  # refused: pages untouched
        return (self.packed if out is not None else rgb), ok

    def bind(self, table: torch.Tensor) -> None:
        """Point the graph at a session's pages: `table` its device page ids (`PagedStateCache.
        device_table`), copied in only when it is not the table of the last bind."""
        if table is self._bound:
            return
        if table.shape != self.pages.shape or table.dtype != self.pages.dtype or table.device != self.pages.device:
            raise ValueError(f"a page table of {tuple(table.shape)} {table.dtype} on {table.device} bound to a graph "
                             f"of {self.pages.numel()} int64 pages on {self.pages.device}")
        self.pages.copy_(table, non_blocking=True)
        self._bound = table

    def load(self, slot: torch.Tensor, prompt: PromptContext, strength: float, reset: bool) -> None:
        """Copy a frame's inputs into the graph's buffers: the slot's bytes always; the prompt
        context and the two scalars only when they differ from the last frame's (each copy is a
        launch from the host, with the device idle until the replay is queued). The session's
        pages come through `bind`, its noise goes straight into `noise` (see `Stylizer`)."""
        if self._memcpy is not None:  # the driver's copy: a third of copy_'s host time (v0.20)
            if slot.dtype != torch.uint8 or slot.numel() < self.slot.numel() or not slot.is_contiguous() \
                    or slot.device != self.slot.device:
                raise ValueError(f"a frame graph's slot must be {self.slot.numel()} contiguous bytes or more on "
                                 f"{self.slot.device}, got {slot.numel()} {slot.dtype} on {slot.device}")
            err = self._memcpy(self.slot.data_ptr(), slot.data_ptr(), self.slot.numel(),
                               torch.cuda.current_stream(self.slot.device).cuda_stream)[0]
            if int(err) != 0:
                raise RuntimeError(f"the slot's copy into the frame graph failed: {err}")
        else:
            self.slot.copy_(slot[: self.slot.numel()], non_blocking=True)
        if prompt is not self._prompt:
            last = self._prompt
            for buf, src, before in zip((self.tokens, self.bias, self.pooled), (prompt.tokens, prompt.bias, prompt.pooled),
                                        (last.tokens, last.bias, last.pooled) if last is not None else (None,) * 3):
                if src is not before:  # a blend's frames share one token block
                    buf.copy_(src, non_blocking=True)
            self._prompt = prompt
        scalars = (float(strength), 1.0 if reset else 0.0)
        if scalars != self._scalars:
            self.strength.fill_(scalars[0])
            self.cut.fill_(scalars[1])
            self._scalars = scalars

    def replay(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the captured frame on the loaded buffers and the bound session's pages (its next
        state is written back to them). Returns views of the graph's output buffers (RGB
        [1, 3, H, W], or the frame's bytes in `out_format`; a device bool, True when the `finite`
        channels are, or None without them), valid until the next replay. Reading the flag waits
        for the replay."""
        if not self.capture:
            return self._body()
        self.graph.replay()
        return self.result, self.ok

    def run(self, slot: torch.Tensor, table: torch.Tensor, noise: torch.Tensor, prompt: PromptContext,
            strength: float, reset: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`bind`, `load`, the noise copied in, and `replay`."""
        self.bind(table)
        self.load(slot, prompt, strength, reset)
        self.noise.copy_(noise, non_blocking=True)
        return self.replay()
