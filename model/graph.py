"""One CUDA graph per session shape: the whole per-frame step captured once, replayed every frame.

Eager PyTorch pays a kernel launch from Python for every op, and at 720p and 1080p that host time,
not the GPU, sets the frame time (benchmarks/NOTES.md). A `FrameGraph` captures the frame function
itself, `frame.stylize_frame` (no variant of it), for one (layout, size, steps) with static buffers
for everything that changes per frame: the slot's bytes, the session's flattened state, the noise,
the prompt context, and the strength and the cut flag as [1] tensors in its `FrameParams`. A frame
is then a few copies into those buffers and one replay. Prompt and parameter changes touch only
buffer contents, never the graph. What the graph adds around the frame function is the slot's
finiteness test, on the device, choosing the old state where it fails.
"""

from __future__ import annotations

import torch

from ..kernels.finite import all_finite
from .frame import FrameParams, PromptContext, padded_size, stylize_frame
from .layout import GBufferLayout
from .network import StreamStyleModel
from .state import StateSpec


class FrameGraph:
    def __init__(self, model: StreamStyleModel, layout: GBufferLayout, width: int, height: int, steps: int,
                 device: torch.device, out_format: str | None = None, finite: tuple[str, ...] = ()):
        """`out_format` None: the graph's output is RGB [1, 3, H, W] float; "rgba8" / "rgba16f": the
        frame in that engine format (bytes), written by the decoder's last pass. `finite`: float
        channels of the slot tested for NaN / infinity inside the replay (`replay` returns the flag;
        where it is False the next state is the loaded one, unchanged)."""
        if device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
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
        self.state = torch.zeros(self.spec.numel, device=device)
        self.noise = torch.zeros(self.spec.shapes()["latent"], device=device)
        self.tokens = torch.zeros(1, cfg.context_tokens, cfg.text_dim, device=device)
        self.bias = torch.full((1, cfg.context_tokens), float("-inf"), device=device)
        self.bias[0, 0] = 0.0
        self.pooled = torch.zeros(1, cfg.text_dim, device=device)
        self.strength = torch.full((1,), 0.5, device=device)
        self.cut = torch.zeros(1, device=device)  # 1.0 on a camera cut
        self._prompt = None  # the PromptContext last copied in (by identity)
        self._scalars = (0.5, 0.0)  # strength, cut as the buffers hold them
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):  # warm up outside the capture: lazy inits, autotuning, allocator
                self._body()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.rgb, self.new_state, self.ok = self._body()

    def _body(self):
        views = self.layout.view(self.slot, self.width, self.height)
        ok = all_finite([views[n] for n in self.finite]) if self.finite else None  # one read of each plane
        planes = {k: v.unsqueeze(0) for k, v in views.items()}
        out = None if self.packed is None else (self.packed, self.out_format)
        rgb, nxt = stylize_frame(self.model, self.layout, planes, self.width, self.height,
                                 PromptContext(self.tokens, self.bias, self.pooled), self.spec.unflatten(self.state),
                                 self.noise, FrameParams(steps=self.steps, strength=self.strength, reset=self.cut), out=out)
        nxt = self.spec.flatten(nxt)
        if ok is not None:
            nxt = torch.where(ok, nxt, self.state)  # a refused frame leaves the state as it was
        return (self.packed if out is not None else rgb), nxt, ok

    def load(self, slot: torch.Tensor, prompt: PromptContext, strength: float, reset: bool) -> None:
        """Copy a frame's inputs into the graph's buffers: the slot's bytes always; the prompt
        context and the two scalars only when they differ from the last frame's (each copy is a
        launch from the host, with the device idle until the replay is queued). The session's
        state and noise go straight into `state` and `noise` (see `Stylizer`)."""
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

    def replay(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run the captured frame on the loaded buffers. Returns views of the graph's output
        buffers (RGB [1, 3, H, W], or the frame's bytes in `out_format`; the next flat state; a
        device bool, True when the `finite` channels are, or None without them), valid until the
        next replay. Reading the flag waits for the replay."""
        self.graph.replay()
        return self.rgb, self.new_state, self.ok

    def run(self, slot: torch.Tensor, state: torch.Tensor, noise: torch.Tensor, prompt: PromptContext,
            strength: float, reset: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`load`, the state and noise copied in, and `replay`."""
        self.load(slot, prompt, strength, reset)
        self.state.copy_(state, non_blocking=True)
        self.noise.copy_(noise, non_blocking=True)
        return self.replay()
