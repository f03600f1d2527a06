"""The per-frame entry point: sessions, prompts, and one call per frame.

    stylizer = Stylizer(model, PromptEncoder())
    session = stylizer.open_session(1280, 720, layout)
    stylizer.set_prompt(session, [("ink outlines, cel shading", 0.7), ("watercolor", 0.3)])
    rgb = stylizer.step(session, frame, FrameParams(steps=2))   # [3, H, W] in [0, 1]
    stylizer.step_into(session, frame, out_slot, "rgba8")       # or straight into an engine slot
    stylizer.close_session(session)

Each session's temporal state lives in the paged cache; `step` reads it, runs `stylize_frame` and
writes the next state back. Every input is checked before anything changes, so a rejected call
(bad layout, bad size, malformed or non-finite buffers, unknown session, full cache) leaves this
session and every other exactly as they were.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import torch

from ..kernels.finite import all_finite_reference
from .cache import CacheConfig, PagedStateCache
from .errors import (InputError, LayoutError, PromptError, ResolutionError, SessionError,
                     SessionEvictedError)
from .frame import OPTIONAL_INPUTS, FrameParams, PromptContext, padded_size, stylize_frame
from .graph import on_device
from .layout import FORMATS, REQUIRED_FOR_WARP, GBufferLayout
from .network import StreamStyleModel
from .state import StateSpec
from .text import PromptEncoder, PromptLike, normalize_blend

from ..interop.limits import MAX_HEIGHT, MAX_WIDTH, check_resolution  # noqa: F401  (the contract's range)


@dataclass(frozen=True)
class Session:
    """A handle; the stylizer keeps everything else."""

    id: int
    width: int
    height: int
    layout: GBufferLayout = field(repr=False)


@dataclass
class _Record:
    session: Session
    spec: StateSpec
    prompt: PromptContext
    generator: torch.Generator
    frames: int = 0
    reset_next: bool = False  # a hard prompt switch: the next frame starts afresh (set_prompt)
    prompt_parts: tuple | None = None  # the prompt's normalised (text, weight) parts; None: no prompt


def null_context(model: StreamStyleModel, device: torch.device) -> PromptContext:
    """The context of no prompt: one zero token that takes all the attention, a zero pooled vector."""
    cfg = model.config
    tokens = torch.zeros(1, cfg.context_tokens, cfg.text_dim, device=device)
    bias = torch.full((1, cfg.context_tokens), float("-inf"), device=device)
    bias[0, 0] = 0.0
    return PromptContext(tokens=tokens, bias=bias, pooled=torch.zeros(1, cfg.text_dim, device=device))


class Stylizer:
    def __init__(self, model: StreamStyleModel, prompts: PromptEncoder | None = None,
                 cache: CacheConfig = CacheConfig(), device: str | torch.device | None = None,
                 check_finite: bool = True, clock: Callable[[], float] = time.monotonic,
                 cuda_graphs: bool = False):
        """`check_finite` rejects frames holding NaN or infinity before they reach the state; it
        costs one device-to-host read per frame, which a latency-critical caller that validates
        upstream may turn off. `clock` times idleness for cache eviction."""
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.prompts = prompts
        self.cache = PagedStateCache(cache, self.device, clock=clock)
        self.check_finite = check_finite
        self._records: dict[int, _Record] = {}
        self._ids = itertools.count(1)
        self._null = null_context(model, self.device)
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        # The channels a frame must carry (each once): conditioning, decoder guide, warp inputs.
        self._needed = tuple(dict.fromkeys(self.config.cond_channels + self.config.guide_channels + REQUIRED_FOR_WARP))
        self._graphs: dict[tuple, object] = {}  # (layout, width, height, steps) -> FrameGraph

    def check_size(self, width: int, height: int) -> None:
        """The contract's size check, then this model's own: at least one token (its stride)."""
        check_resolution(width, height)
        p = self.config.patch
        for name, v, limit in (("width", width, MAX_WIDTH), ("height", height, MAX_HEIGHT)):
            if v < p:
                raise ResolutionError(f"{name} {v} is outside {p}..{limit} (this model's token stride is {p})")

    def open_session(self, width: int, height: int, layout: GBufferLayout, seed: int = 0) -> Session:
        """Validate the size and layout, take cache pages. Raises ResolutionError, LayoutError,
        CacheFullError; sessions evicted to make room are reported by `evicted_sessions`."""
        self.check_size(width, height)
        if not isinstance(layout, GBufferLayout):
            raise LayoutError(f"layout must be a GBufferLayout, not {type(layout).__name__}")
        layout.validate(required=self._needed, width=width, height=height)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise InputError(f"seed must be an integer, got {seed!r}")
        spec = StateSpec(self.config, *padded_size(self.config, width, height))  # e.g. 1080 runs as 1088
        sid = next(self._ids)
        evicted = self.cache.open(sid, spec.numel)
        for gone in evicted:
            self._records.pop(gone, None)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        session = Session(sid, width, height, layout)
        self._records[sid] = _Record(session, spec, self._null, gen)
        return session

    def _record(self, session: Session) -> _Record:
        sid = session.id if isinstance(session, Session) else session
        rec = self._records.get(sid)
        if rec is None:
            if self.cache.was_evicted(sid):
                raise SessionEvictedError(f"session {sid} was evicted from the temporal cache after "
                                          "being idle; open a new session")
            raise SessionError(f"unknown or closed session {sid!r}")
        return rec

    def close_session(self, session: Session) -> None:
        rec = self._record(session)
        self.cache.close(rec.session.id)
        del self._records[rec.session.id]
        s = rec.session
        if self._graphs and not any((r.session.layout, r.session.width, r.session.height) == (s.layout, s.width, s.height)
                                    for r in self._records.values()):
            # The last session of this shape: its graphs (and their memory pools) go with it.
            self._graphs = {k: g for k, g in self._graphs.items() if k[:3] != (s.layout, s.width, s.height)}

    def set_prompt(self, session: Session, prompt: PromptLike | None, reset: bool = False) -> None:
        """Switch the session's prompt from its next frame on. None means no prompt. A string, or
        [(text, weight), ...] for a blend (weights are normalised). With `reset`, a switch to a
        different prompt also makes the next frame start afresh, as `FrameParams.reset` does: without
        a reset the shipped model's old look lingers in its history for tens of frames (1-4 dB below a session started in the new style on the
        frames after the switch: benchmarks/NOTES.md, v0.16). A hard switch wants it; the steps of
        a gradual blend do not. Stays pending until a frame is accepted."""
        rec = self._record(session)
        if prompt is None:
            context, parts = self._null, None
        elif self.prompts is None:
            raise PromptError("this stylizer has no prompt encoder")
        else:
            parts = tuple(normalize_blend(prompt, self.config.max_prompts))
            context = self.prompts.parts_context(parts, self.config.max_prompts, self.config.max_prompt_tokens)
        if reset and parts != rec.prompt_parts:
            rec.reset_next = True
        rec.prompt, rec.prompt_parts = context, parts

    def prompts_ready(self, prompt: PromptLike) -> None:
        """Encode (and cache) a prompt or blend now, so that a later switch costs nothing and a bad
        prompt fails here. Raises PromptError."""
        if self.prompts is None:
            raise PromptError("this stylizer has no prompt encoder")
        self.prompts.context(prompt, self.config.max_prompts, self.config.max_prompt_tokens)

    def warm_up(self, session: Session, steps: int = 2, out_format: str | None = None) -> bool:
        """Do now what the session's first frame at `steps` would otherwise pay for: compile the
        kernels and capture its CUDA graph (a second or more the first time in a process), for
        `step` (out_format None) or `step_into` with that format. The session's state is not
        touched. Returns True if a graph was captured (False on the CPU, without graphs, or when
        this shape already has one)."""
        rec = self._record(session)
        if not self.cuda_graphs:
            return False
        s = rec.session
        key = (s.layout, s.width, s.height, steps, out_format)
        if key in self._graphs:
            return False
        self._graphs[key] = self._new_graph(s, steps, out_format)
        return True

    def _new_graph(self, s: Session, steps: int, out_format: str | None):
        from .graph import FrameGraph

        finite = ()
        if self.check_finite:
            present = {ch.name for ch in s.layout.channels}
            names = self._needed + tuple(n for n in OPTIONAL_INPUTS if n in present)
            finite = tuple(n for n in names if FORMATS[s.layout[n].format][0].is_floating_point)
        return FrameGraph(self.model, s.layout, s.width, s.height, steps, self.device, self.cache.pool,
                          out_format=out_format, finite=finite, capture=self.device.type == "cuda")

    def reseed(self, session: Session, seed: int) -> None:
        """Restart the session's noise sequence from `seed`."""
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise InputError(f"seed must be an integer, got {seed!r}")
        self._record(session).generator.manual_seed(seed)

    def sync(self) -> None:
        """Wait for this stylizer's device work (before memory it used may be released)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def pages_in_use(self, session: Session) -> int:
        return len(self.cache.pages_of(self._record(session).session.id))

    def _planes(self, rec: _Record, frame: torch.Tensor | Mapping[str, torch.Tensor],
                check_finite: bool = True) -> dict[str, torch.Tensor]:
        s = rec.session
        layout = s.layout
        if isinstance(frame, torch.Tensor):
            planes = layout.view(frame.to(self.device) if frame.device != self.device else frame, s.width, s.height)
        elif isinstance(frame, Mapping):
            planes = dict(frame)
        else:
            raise InputError(f"a frame is a slot tensor or a mapping of channel tensors, not {type(frame).__name__}")
        out = {}
        present = {ch.name for ch in layout.channels}
        for name in self._needed + tuple(n for n in OPTIONAL_INPUTS if n in present):
            if name not in planes:
                raise InputError(f"frame lacks channel {name!r}")
            x = planes[name]
            ch = layout[name]
            dtype, comps, _ = FORMATS[ch.format]
            if not isinstance(x, torch.Tensor):
                raise InputError(f"channel {name!r} must be a tensor")
            if tuple(x.shape) != (s.height, s.width, comps):
                raise InputError(f"channel {name!r} has shape {tuple(x.shape)}; the layout says "
                                 f"{(s.height, s.width, comps)} ({ch.format})")
            if x.dtype != dtype:
                raise InputError(f"channel {name!r} is {x.dtype}; the layout says {dtype} ({ch.format})")
            out[name] = x.to(self.device).unsqueeze(0)
        if self.check_finite and check_finite:
            floats = [x for x in out.values() if x.is_floating_point()]
            # One reduction and one device-to-host read for the whole frame; which channels are
            # bad is worked out only when something is.
            if floats and not bool(all_finite_reference(floats)):
                self._refuse_nonfinite(out)
        return out

    @staticmethod
    def _refuse_nonfinite(planes: Mapping[str, torch.Tensor]) -> None:
        bad = [n for n, x in planes.items() if x.is_floating_point() and not bool(torch.isfinite(x).all())]
        raise InputError(f"frame has NaN or infinite values in: {', '.join(bad)}")

    @torch.no_grad()
    def step(self, session: Session, frame: torch.Tensor | Mapping[str, torch.Tensor],
             params: FrameParams = FrameParams()) -> torch.Tensor:
        """Stylize one frame. `frame` is the slot's bytes ([N] uint8, read through the session's
        layout) or {channel: [H, W, components]} tensors in the layout's formats.
        Returns RGB [3, H, W] float32 in [0, 1]."""
        return self._step(session, frame, params)

    @torch.no_grad()
    def step_into(self, session: Session, frame: torch.Tensor | Mapping[str, torch.Tensor], out: torch.Tensor,
                  fmt: str, params: FrameParams = FrameParams()) -> None:
        """`step`, with the frame written straight into an engine output slot: `out` (uint8 bytes,
        on this device) receives H x W pixels of interleaved RGBA in `fmt` ("rgba8" or "rgba16f").
        On a GPU the write is part of the decoder's last pass (and of the session's CUDA graph).
        Raises InputError for an unknown format or a slot too small; nothing changes then."""
        from ..interop.layout import output_bytes
        from ..interop.limits import OUTPUT_FORMATS

        if fmt not in OUTPUT_FORMATS:
            raise InputError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, not {fmt!r}")
        s = self._record(session).session
        need = output_bytes(s.width, s.height, fmt)
        if not isinstance(out, torch.Tensor) or out.dtype != torch.uint8 or out.numel() < need \
                or not on_device(out, self.device):
            raise InputError(f"the output must be a uint8 tensor of at least {need} bytes on {self.device} "
                             f"for a {s.width}x{s.height} {fmt} frame")
        self._step(session, frame, params, out=out, fmt=fmt)

    def _step(self, session, frame, params, out=None, fmt=None):
        rec = self._record(session)
        if not isinstance(params, FrameParams):
            raise InputError("params must be a FrameParams")
        params.validate()
        if rec.reset_next and not params.reset:
            params = replace(params, reset=True)
        graphed = self.cuda_graphs and isinstance(frame, torch.Tensor)
        s = rec.session
        if graphed:
            # Host time here is device idle time (the service runs one frame at a time): only the
            # slot's size is checked; the finiteness test runs inside the replay, and the channels
            # are named only when it fails.
            s.layout.check_slot(frame, s.width, s.height)
            key = (s.layout, s.width, s.height, params.steps, fmt)
            graph = self._graphs.get(key)
            if graph is None:
                graph = self._graphs[key] = self._new_graph(s, params.steps, fmt)
            slot = frame if frame.device == self.device else frame.to(self.device)
            graph.bind(self.cache.device_table(s.id))  # the gather and the scatter run in the replay
            graph.load(slot, rec.prompt, params.strength, params.reset)
            graph.noise.normal_(generator=rec.generator)  # what torch.randn draws: same as the eager path
            result, finite = graph.replay()  # a refused frame leaves the session's pages as they were
            if out is not None:
                dst = out[: result.numel()]
                # The graph's buffer is reused by the next frame. A refused frame leaves the slot as
                # it was, chosen on the device in one pass: no host read between the replay and it.
                if finite is None:
                    dst.copy_(result)
                else:
                    torch.where(finite, result, dst, out=dst)
                rgb = None
            else:
                rgb = result[0].clone()  # (already cropped)
            if finite is not None and not bool(finite):  # the one wait, after everything is queued
                self._refuse_nonfinite(self._planes(rec, slot, check_finite=False))
            rec.frames += 1
            rec.reset_next = False
            return rgb
        planes = self._planes(rec, frame)
        flat = self.cache.read(s.id)
        noise = torch.randn(rec.spec.shapes()["latent"], generator=rec.generator, device=self.device)
        rgb, nxt = stylize_frame(self.model, s.layout, planes, s.width, s.height, rec.prompt, rec.spec.unflatten(flat),
                                 noise, params, out=None if out is None else (out, fmt))
        self.cache.write(s.id, rec.spec.flatten(nxt))
        rec.frames += 1
        rec.reset_next = False
        return None if rgb is None else rgb[0]  # (already cropped to the session's size)
