"""`StreamStyle`: what a Panda3D game adds to have its frames stylized live.

    from streamstyle.engine_plugins.panda3d import StreamStyle
    style = StreamStyle(base, address="ipc:///tmp/streamstyle.sock", prompt="watercolor painting")
    style.bind_keys()        # optional: F1 on/off, F2 view, F3 next prompt, [ ] strength, - = steps

Every frame, after the game's own tasks and before Panda renders, the G-buffer pass takes the
previous frame's matrices; after Panda renders, the frame's G-buffers are read back, written into a
free slot of the shared ring and submitted, and whatever the service has answered is taken in. The
window shows a fullscreen composite: the newest stylized frame while the service keeps answering
(one arrived within `fallback_ms`), the engine's own frame otherwise. The service
being slow, gone or restarting changes only which of the two the player sees.

What must hold: the game thread never blocks on the service (the client lives on its own thread,
see link.py); a frame is submitted only when a slot is free; nothing non-finite is sent.
"""

from __future__ import annotations

import enum
import time
from typing import Any, Sequence

import numpy as np
from panda3d.core import CardMaker, NodePath, Shader, Texture

from . import glsl
from .gbuffer import GBufferPass, Lighting
from .link import ServiceLink


class View(enum.IntEnum):
    ENGINE = 0  # the engine's own frame
    STYLIZED = 1
    SIDE_BY_SIDE = 2  # engine left, stylized right


Prompt = str | Sequence[tuple[str, float]]  # a prompt, or a blend of (prompt, weight)


class StreamStyle:
    """Attach StreamStyle to a ShowBase.

    address: the service (`streamstyle serve --bind ...`). prompt: a string, [(prompt, weight)], or
    None for a service without prompts.
    size: G-buffer and stylized size (default: the window's). steps (1-4), strength (0-1): the
    service's per-frame parameters. prompts: the list F3 cycles through. fallback_ms: how long
    after the newest stylized frame arrived it is still shown; past that (the service is late, gone
    or restarting) the player sees the engine's own frame.
    """

    def __init__(self, base, address: str, prompt: Prompt | None = "watercolor painting", size: tuple[int, int] | None = None,
                 steps: int = 2, strength: float | None = None, prompts: Sequence[Prompt] = (),
                 fallback_ms: float = 500.0, blend_frames: int = 8, lighting: Lighting = Lighting(),
                 deadline_ms: float | None = None, seed: int = 0, enabled: bool = True, start: bool = True):
        self.base = base
        w, h = size or (base.win.getXSize(), base.win.getYSize())
        self.gbuffer = GBufferPass(base, w, h, lighting=lighting)
        self.width, self.height = self.gbuffer.width, self.gbuffer.height
        self.prompts = list(prompts) or [prompt]
        self.prompt = prompt
        self.blend_frames = blend_frames
        self.fallback_ms = fallback_ms
        self.enabled = enabled
        self.view = View.STYLIZED
        self.frame = 0
        self.shown_stylized = 0  # frames the player saw stylized
        self.shown_engine = 0  # frames the player saw the engine's own frame
        self.nonfinite = 0
        self._dt = 1 / 60
        self._last_time = None
        params: dict[str, Any] = {"steps": int(steps)}
        if strength is not None:
            params["strength"] = float(strength)
        if deadline_ms is not None:
            params["deadline_ms"] = float(deadline_ms)
        self.params = params
        self.link = ServiceLink(address, self.width, self.height, self.gbuffer.layout, prompt=_wire(prompt),
                                params=params, seed=seed)
        self._styled_tex = Texture("streamstyle-output")
        self._styled_tex.setup2dTexture(self.width, self.height, Texture.T_unsigned_byte, Texture.F_rgba8)
        self._styled_tex.setRamImageAs(np.zeros((self.height, self.width, 4), np.uint8).tobytes(), "RGBA")
        self._shown_seq = -1
        self._valid = False
        self._composite = self._make_composite()
        self._saved_cam_active = base.camNode.isActive()
        base.camNode.setActive(False)  # the composite replaces the game camera's view of the window
        self._tasks = [base.taskMgr.add(self._before_render, "streamstyle-before-render", sort=49),
                       base.taskMgr.add(self._after_render, "streamstyle-after-render", sort=51)]
        self._keys: list[str] = []
        if start:
            self.link.start()

    # --- controls -------------------------------------------------------------------------

    def set_prompt(self, prompt: Prompt, blend_frames: int | None = None) -> None:
        """Switch prompt (a string, or a blend [(prompt, weight), ...]), blended over frames."""
        self.prompt = prompt
        self.link.set_prompt(_wire(prompt), self.blend_frames if blend_frames is None else blend_frames)

    def blend(self, weights: dict[str, float], blend_frames: int | None = None) -> None:
        """Blend several prompts: {"watercolor painting": 0.7, "neon glow": 0.3}."""
        self.set_prompt([(p, float(w)) for p, w in weights.items()], blend_frames)

    def next_prompt(self, step: int = 1) -> None:
        i = self.prompts.index(self.prompt) if self.prompt in self.prompts else -1
        self.set_prompt(self.prompts[(i + step) % len(self.prompts)])

    def set_steps(self, steps: int) -> None:
        self.params["steps"] = int(min(4, max(1, steps)))
        self.link.set_params(steps=self.params["steps"])

    def set_strength(self, strength: float) -> None:
        self.params["strength"] = float(min(1.0, max(0.0, strength)))
        self.link.set_params(strength=self.params["strength"])

    def toggle(self) -> None:
        self.enabled = not self.enabled

    def set_view(self, view: View) -> None:
        self.view = View(view)

    def cycle_view(self) -> None:
        self.set_view(View((int(self.view) + 1) % len(View)))

    def bind_keys(self) -> None:
        """F1 on/off, F2 engine / stylized / side by side, F3 / shift-F3 next / previous prompt,
        [ and ] strength down / up, - and = steps down / up."""
        bindings = {"f1": self.toggle, "f2": self.cycle_view, "f3": self.next_prompt,
                    "shift-f3": lambda: self.next_prompt(-1),
                    "[": lambda: self.set_strength(self.params.get("strength", 0.5) - 0.1),
                    "]": lambda: self.set_strength(self.params.get("strength", 0.5) + 0.1),
                    "-": lambda: self.set_steps(self.params["steps"] - 1),
                    "=": lambda: self.set_steps(self.params["steps"] + 1)}
        for key, fn in bindings.items():
            self.base.accept(key, fn)
            self._keys.append(key)

    # --- what the player sees --------------------------------------------------------------

    def _make_composite(self) -> NodePath:
        card = CardMaker("streamstyle-composite")
        card.setFrameFullscreenQuad()
        quad = self.base.render2d.attachNewNode(card.generate())
        quad.setBin("background", -1000)
        quad.setDepthTest(False)
        quad.setDepthWrite(False)
        quad.setShader(Shader.make(Shader.SL_GLSL, glsl.COMPOSITE_VERT, glsl.COMPOSITE_FRAG), 10000)
        quad.setShaderInput("ss_raw", self.gbuffer.textures["color"])
        quad.setShaderInput("ss_styled", self._styled_tex)
        quad.setShaderInput("ss_mode", 0.0)
        quad.setShaderInput("ss_styled_valid", 0.0)
        quad.setShaderInput("ss_exposure", 1.0)
        return quad

    @property
    def showing_stylized(self) -> bool:
        """Whether the frame being rendered now shows the service's output."""
        return bool(self._valid) and self.enabled and self.view != View.ENGINE

    def _before_render(self, task):
        self.frame += 1
        now = time.monotonic()
        if self._last_time is not None:
            self._dt = max(1e-4, now - self._last_time)
        self._last_time = now
        self.gbuffer.begin_frame()
        out = self.link.latest()
        if out is not None and out.seq != self._shown_seq:
            self._styled_tex.setRamImageAs(out.image[::-1].tobytes(), "RGBA")  # GL textures: bottom row first
            self._shown_seq = out.seq
        fresh = out is not None and (now - out.received) * 1000 <= self.fallback_ms
        self._valid = fresh and self.enabled
        self._composite.setShaderInput("ss_mode", float(self.view if self.enabled else View.ENGINE))
        self._composite.setShaderInput("ss_styled_valid", 1.0 if self._valid else 0.0)
        if self.showing_stylized:
            self.shown_stylized += 1
        else:
            self.shown_engine += 1
        return task.cont

    def _after_render(self, task):
        if not self.enabled:
            return task.cont
        taken = self.link.take_slot()
        if taken is None:
            return task.cont  # no free slot (service busy, late or gone): not stylized, never waited for
        slot, views = taken
        frame = self.gbuffer.read()
        self.nonfinite += frame.nonfinite
        self.gbuffer.write_slot(frame, views)
        self.link.submit(slot, tag=self.frame, view=frame.view, proj=frame.proj, dt=self._dt)
        return task.cont

    def close(self) -> None:
        for t in self._tasks:
            self.base.taskMgr.remove(t)
        for key in self._keys:
            self.base.ignore(key)
        self.link.stop()
        self._composite.removeNode()
        self.gbuffer.destroy()
        self.base.camNode.setActive(self._saved_cam_active)

    def __enter__(self) -> "StreamStyle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _wire(prompt: Prompt | None):
    if prompt is None or isinstance(prompt, str):
        return prompt
    return [(str(p), float(w)) for p, w in prompt]
