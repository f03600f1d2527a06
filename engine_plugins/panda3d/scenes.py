"""Real scenes for the demo, captures and tests: a glTF file (or a named asset) on a ground plane,
with objects that move and a camera flythrough, all a function of the frame number.

Named assets are looked up, never shipped: `STREAMSTYLE_ASSETS`, then `../shared/assets` beside
the repository, then `/work/shared/assets` (DamagedHelmet and Suzanne, Khronos glTF samples with
their licence notes), and Panda3D's own models (`teapot`, `panda`, `environment`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from panda3d.core import CardMaker, Filename, Material, NodePath

NAMED = {"helmet": "DamagedHelmet/DamagedHelmet.gltf", "damagedhelmet": "DamagedHelmet/DamagedHelmet.gltf",
         "suzanne": "Suzanne/Suzanne.gltf"}
PANDA_MODELS = {"teapot": "models/teapot", "panda": "models/panda", "environment": "models/environment"}


def asset_roots() -> list[Path]:
    roots = []
    if os.environ.get("STREAMSTYLE_ASSETS"):
        roots.append(Path(os.environ["STREAMSTYLE_ASSETS"]))
    roots.append(Path(__file__).resolve().parents[2] / ".." / "shared" / "assets")
    roots.append(Path("/work/shared/assets"))
    return roots


def find_asset(name: str) -> Path | None:
    rel = NAMED.get(name.lower())
    if rel is None:
        return None
    for root in asset_roots():
        if (root / rel).is_file():
            return (root / rel).resolve()
    return None


def load_model(base, spec: str) -> NodePath:
    """A glTF/egg/bam path, a named asset, or a Panda3D model name -> a NodePath (not parented).
    Raises FileNotFoundError naming where it looked."""
    path = Path(spec)
    if not path.is_file():
        found = find_asset(spec)
        if found is not None:
            path = found
        elif spec.lower() in PANDA_MODELS:
            return base.loader.loadModel(PANDA_MODELS[spec.lower()])
        else:
            raise FileNotFoundError(f"no scene {spec!r}: not a file, and not one of {', '.join([*NAMED, *PANDA_MODELS])} "
                                    f"(looked in {', '.join(map(str, asset_roots()))})")
    if path.suffix.lower() in (".gltf", ".glb"):
        import gltf  # noqa: F401  (panda3d-gltf registers its loader)
    return base.loader.loadModel(Filename.fromOsSpecific(str(path)))


def _unit(model: NodePath, size: float) -> NodePath:
    """Scale and centre `model` so its bounds' largest side is `size`, resting on z = 0."""
    lo, hi = model.getTightBounds()
    extent = max(hi - lo) or 1.0
    holder = NodePath(f"{model.getName()}-holder")
    model.reparentTo(holder)
    s = size / extent
    model.setScale(s)
    model.setPos(-(lo.x + hi.x) / 2 * s, -(lo.y + hi.y) / 2 * s, -lo.z * s)
    return holder


@dataclass
class DemoScene:
    """The main model at the origin, two movers, a ground, and a flythrough camera."""
    root: NodePath
    hero: NodePath
    movers: list[NodePath] = field(default_factory=list)
    radius: float = 4.0

    def pose(self, base, frame: int, fps: float = 30.0, camera: bool = True, objects: bool = True) -> None:
        t = frame / fps
        if objects:
            for k, m in enumerate(self.movers):
                a = 0.9 * t + k * math.pi
                m.setPos(2.2 * math.cos(a), 2.2 * math.sin(a), 0.35 + 0.25 * math.sin(2.1 * t + k))
                m.setH(40 * t * (1 if k % 2 == 0 else -1))
        if camera:
            a = -0.35 * t - 0.6
            r = self.radius * (1.0 + 0.15 * math.sin(0.5 * t))
            base.camera.setPos(r * math.cos(a), r * math.sin(a), 1.1 + 0.5 * math.sin(0.4 * t))
            base.camera.lookAt(0, 0, 0.8)


def build_scene(base, spec: str = "helmet", movers: str | None = "suzanne") -> DemoScene:
    """`spec` as the hero (about 2 units tall), `movers` (a model spec; None for none) twice,
    orbiting it, a ground plane, lens near/far 0.05 / 200."""
    root = base.render.attachNewNode("streamstyle-scene")
    hero = _unit(load_model(base, spec), 1.8)
    hero.reparentTo(root)
    hero.setZ(0.0)
    moving = []
    if movers:
        for k in range(2):
            try:
                m = _unit(load_model(base, movers if k == 0 else "teapot"), 0.6)
            except FileNotFoundError:
                m = _unit(load_model(base, "teapot"), 0.6)
            m.reparentTo(root)
            moving.append(m)
    card = CardMaker("ground")
    card.setFrame(-20, 20, -20, 20)
    card.setHasNormals(True)
    ground = root.attachNewNode(card.generate())
    ground.setP(-90)
    mat = Material("ground")
    mat.setBaseColor((0.45, 0.42, 0.38, 1))
    mat.setRoughness(0.9)
    mat.setMetallic(0.0)
    ground.setMaterial(mat)
    base.camLens.setNearFar(0.05, 200.0)
    base.camLens.setFov(60)
    return DemoScene(root, hero, moving)
