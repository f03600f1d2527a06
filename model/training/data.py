"""Training clips: consecutive frames of one scene in one style with one prompt phrasing.

`ReferenceClips` renders them on the fly with the reference engine (on the training device), from
the chosen split's seeds and phrasings; clip i is a pure function of (base seed, i), so a resumed
run sees the data it would have seen. `CaptureClips` reads clips from capture folders (a studio's
own recordings or `streamstyle render` output) with the prompts each capture lists.

`ClipBank` keeps rendered shots (G-buffer planes and every style's target) on the training device
and draws clips from them with a fresh style and phrasing each time, replacing one shot with a new
render every `refresh` draws. Rendering is the slow part of a reference clip (the renderer is
host-bound, see benchmarks/NOTES.md), and one render serves all nine styles; which shot a slot holds
after n draws is a function of n, so a resumed run still sees the data it would have seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ...engine_plugins.capture import CaptureReader
from ...engine_plugins.panda3d.realset import REAL_SCENES, is_real_eval_capture
from ...engine_plugins.reference_engine import CameraPath, Renderer, Scene
from ...engine_plugins.reference_engine.gbuffers import to_planes
from ...engine_plugins.reference_engine.oracles import STYLES, style_names
from ...engine_plugins.reference_engine.prompts import split
from ..layout import GBufferLayout, reference_layout

CAMERAS = ("orbit", "dolly", "strafe", "handheld")


@dataclass
class Clip:
    style: str
    prompt: str
    layout: GBufferLayout
    width: int
    height: int
    planes: list[dict[str, torch.Tensor]]  # per frame {channel: [H, W, C]} in engine formats
    targets: list[torch.Tensor]  # per frame [H, W, 3] float in [0, 1]
    cut: list[bool]


class ReferenceClips:
    def __init__(self, width: int, height: int, frames: int, styles: str = "all", split_name: str = "train",
                 device: str | torch.device = "cpu", seed: int = 0, fps: float = 15.0):
        self.args = dict(width=width, height=height, frames=frames, styles=styles, split_name=split_name,
                         device=str(device), seed=seed, fps=fps)  # to rebuild it in a worker process
        self.width, self.height, self.frames, self.fps = width, height, frames, fps
        self.styles = style_names(styles)
        self.split = split(split_name)
        self.device = torch.device(device)
        self.seed = seed
        self.layout = reference_layout(width, height, surface=True)  # the reference engine has a surface channel

    def _shot(self, rng: random.Random):
        scene_seed = rng.randrange(self.split.seeds.start, self.split.seeds.stop)
        camera = rng.choice(CAMERAS)
        start = rng.randrange(0, 120)
        scene = Scene.generate(scene_seed)
        r = Renderer(scene, CameraPath(camera, seed=scene_seed, extent=scene.extent), self.width, self.height,
                     fps=self.fps, device=self.device)
        return r.render_many(list(range(start, start + self.frames)))  # one pass per clip

    def clip(self, index: int) -> Clip:
        rng = random.Random(self.seed * 1_000_003 + index)
        style = rng.choice(self.styles)
        prompt = rng.choice(self.split.phrasings[style])
        planes, targets, cuts = [], [], []
        for k, f in enumerate(self._shot(rng)):
            planes.append(to_planes(f, self.layout))
            targets.append(STYLES[style](f))
            cuts.append(k == 0 or f.cut)
        return Clip(style, prompt, self.layout, self.width, self.height, planes, targets, cuts)

    def shot(self, index: int) -> "Shot":
        """Shot `index` (scene, camera, start: a function of the seed and index) with its planes and
        every style's targets (float16), ready for `ClipBank`."""
        rng = random.Random(self.seed * 1_000_003 + index + 7_777_777)
        frames = self._shot(rng)
        planes = [to_planes(f, self.layout) for f in frames]
        targets = {name: [fn(f).half() for f in frames] for name, fn in STYLES.items() if name in self.styles}
        return Shot(planes, targets, [k == 0 or f.cut for k, f in enumerate(frames)])


@dataclass
class Shot:
    planes: list[dict[str, torch.Tensor]]
    targets: dict[str, list[torch.Tensor]]  # style -> per frame [H, W, 3] float16
    cut: list[bool]

    def to(self, device) -> "Shot":
        return Shot([{k: v.to(device) for k, v in p.items()} for p in self.planes],
                    {k: [t.to(device) for t in ts] for k, ts in self.targets.items()}, list(self.cut))


def _shot_worker(args: dict, first: int, step: int, queue, consumed, ahead: int) -> None:
    """Render shots first, first + step, ... in order, never more than `ahead` past the highest
    index the bank has taken; each goes to the queue on the CPU (shared memory)."""
    import time as _time

    try:
        torch.set_num_threads(1)
        src = ReferenceClips(**args)
        index = first
        while True:
            while index > consumed.value + ahead:
                _time.sleep(0.01)
            queue.put((index, src.shot(index).to("cpu"), None))
            index += step
    except Exception as exc:  # reported to the trainer, which raises it
        queue.put((-1, None, f"{type(exc).__name__}: {exc}"))


class ShotWorkers:
    """`workers` processes rendering a `ReferenceClips`' shots ahead of the bank, in index order, so
    that rendering (host-bound Python, see benchmarks/NOTES.md) overlaps the training step instead of
    stalling it. `take(i)` returns shot i, exactly as `source.shot(i)` would, on the source's device."""

    def __init__(self, source: ReferenceClips, workers: int, first: int = 0, ahead: int = 64):
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.source, self.device = source, torch.device(source.args["device"])
        self.queue = ctx.Queue(maxsize=8)  # little shared memory in flight
        self.consumed = ctx.Value("q", first)
        self.arrived: dict[int, Shot] = {}
        self.procs = [ctx.Process(target=_shot_worker, args=(source.args, first + w, workers, self.queue,
                                                             self.consumed, ahead), daemon=True)
                      for w in range(workers)]
        for proc in self.procs:
            proc.start()

    def take(self, index: int, timeout: float = 600.0) -> Shot:
        import queue as _queue

        with self.consumed.get_lock():  # the workers may run `ahead` past the shot wanted now
            self.consumed.value = max(self.consumed.value, index)
        while index not in self.arrived:
            try:
                i, shot, error = self.queue.get(timeout=timeout)
            except _queue.Empty:
                raise RuntimeError(f"no rendered shot arrived in {timeout:.0f} s (waiting for shot {index})") from None
            if error is not None:
                self.close()
                raise RuntimeError(f"a shot-rendering worker failed: {error}")
            self.arrived[i] = shot.to(self.device)  # off the shared-memory queue at once
        return self.arrived.pop(index)

    def close(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(timeout=5)


class ClipBank:
    """Clips drawn from `size` rendered shots of `source` (a `ReferenceClips`), each draw a random
    shot in a random style and phrasing; every `refresh` draws one slot gets a newly rendered shot
    (slots in turn), so the bank turns over once every size * refresh draws."""

    def __init__(self, source: ReferenceClips, size: int, refresh: int = 4, seed: int = 0):
        if size < 1 or refresh < 1:
            raise ValueError("the clip bank needs size >= 1 and refresh >= 1")
        self.source, self.size, self.refresh, self.seed = source, size, refresh, seed
        self._slots: dict[int, tuple[int, Shot]] = {}
        self.renders = 0
        self.workers: ShotWorkers | None = None

    def start_workers(self, workers: int, first_draw: int = 0) -> None:
        """Render shots in `workers` background processes from here on (the draws stay the same).
        `first_draw` is the next draw index (a resumed run's), so no worker renders a shot that no
        slot will hold again."""
        first = min(self.shot_index(s, first_draw) for s in range(self.size))
        self.workers = ShotWorkers(self.source, workers, first=first, ahead=self.size + 64)

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None

    def shot_index(self, slot: int, draws: int) -> int:
        """The shot that `slot` holds once `draws` clips have been drawn."""
        replaced = draws // self.refresh  # replacement k puts shot size + k into slot k % size
        if replaced <= slot:
            return slot
        last = slot + self.size * ((replaced - 1 - slot) // self.size)
        return self.size + last

    def clip(self, index: int) -> Clip:
        rng = random.Random(self.seed * 1_000_003 + index + 3_333_333)
        slot = rng.randrange(self.size)
        want = self.shot_index(slot, index)
        held = self._slots.get(slot)
        if held is None or held[0] != want:
            shot = self.workers.take(want) if self.workers is not None else self.source.shot(want)
            self._slots[slot] = held = (want, shot)
            self.renders += 1
        shot = held[1]
        style = rng.choice(sorted(shot.targets))
        prompt = rng.choice(self.source.split.phrasings[style])
        src = self.source
        return Clip(style, prompt, src.layout, src.width, src.height, shot.planes,
                    [t.float() for t in shot.targets[style]], shot.cut)


class CaptureClips:
    """Clips cut from capture folders that hold style targets. Each capture's manifest lists its
    styles and their phrasings; a clip takes `frames` consecutive frames of one capture."""

    def __init__(self, folders: Sequence[str | Path], frames: int, seed: int = 0, allow_eval_scenes: bool = False):
        self.readers = [CaptureReader(f) for f in folders]
        held = [str(r.path) for r in self.readers if is_real_eval_capture(r.manifest.get("engine"))]
        if held and not allow_eval_scenes:
            # The real-scene evaluation split only means something if no such scene was trained on.
            raise ValueError(f"{', '.join(held)}: recorded from a scene of the real-scene evaluation split "
                             f"({', '.join(REAL_SCENES)}); training on it would void `eval --set real` "
                             f"(allow_eval_scenes / --allow-eval-scenes if that is really meant)")
        self.frames, self.seed = frames, seed
        usable = [r for r in self.readers if r.styles and len(r) >= frames]
        if not usable:
            raise ValueError(f"no capture among {', '.join(map(str, folders))} has style targets and "
                             f"at least {frames} frames")
        self.readers = usable

    def clip(self, index: int) -> Clip:
        rng = random.Random(self.seed * 1_000_003 + index)
        reader = rng.choice(self.readers)
        style = rng.choice(sorted(reader.styles))
        phrasings = reader.styles[style] or [style]
        prompt = rng.choice(phrasings)
        start = rng.randrange(0, len(reader) - self.frames + 1)
        frames = [reader[start + k] for k in range(self.frames)]
        return Clip(style, prompt, reader.layout, reader.width, reader.height,
                    [f.planes for f in frames], [f.targets[style].float() / 255 for f in frames],
                    [k == 0 or f.meta.cut for k, f in enumerate(frames)])


class MixedClips:
    """Draws from several sources by weight (e.g. the reference engine and a studio's captures)."""

    def __init__(self, sources: Sequence[tuple[object, float]], seed: int = 0):
        self.sources = [s for s, w in sources if w > 0]
        self.weights = [w for _, w in sources if w > 0]
        self.seed = seed

    def clip(self, index: int) -> Clip:
        rng = random.Random(self.seed * 7_919 + index)
        return rng.choices(self.sources, weights=self.weights)[0].clip(index)
