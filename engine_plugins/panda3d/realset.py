"""The real-scene evaluation split: which real scenes `streamstyle eval --set real` scores, and the
rule that keeps them out of training.

What must hold: a scene named here is evaluation data only. Training's sources are the reference
engine and the capture folders it is given (model/training/trainer.py); a capture recorded from
Panda3D of one of these scenes is refused as training data unless the run says, in so many words,
that it wants evaluation scenes in training (`TrainConfig.allow_eval_scenes`). Torch-free and
Panda3D-free, so that training can check captures without importing the engine.
"""

from __future__ import annotations

from pathlib import PurePath

# Real content nobody here made: Khronos glTF samples (../shared/assets) and Panda3D's own models.
REAL_SCENES: tuple[str, ...] = ("helmet", "suzanne", "panda")
# Other names the same content goes by (a path to the file, the file's stem).
_ALIASES = {"damagedhelmet": "helmet"}


def real_scene_key(scene: str) -> str:
    """'helmet', '/x/DamagedHelmet/DamagedHelmet.gltf', 'models/panda' -> the split's name for it
    (lower case, the file's stem); a scene outside the split comes back as its own key."""
    stem = PurePath(str(scene)).stem.lower() or str(scene).lower()
    return _ALIASES.get(stem, stem)


def is_real_eval_capture(engine: dict | None) -> bool:
    """Whether a capture's manifest `engine` entry says it was recorded from a real-split scene."""
    if not isinstance(engine, dict) or engine.get("name") != "panda3d":
        return False
    return real_scene_key(engine.get("scene", "")) in REAL_SCENES


def real_scenes(spec: str = "all") -> list[str]:
    """'all' or a comma list of real-split scene names -> names; an unknown name raises ValueError."""
    if spec == "all":
        return list(REAL_SCENES)
    names = [real_scene_key(s.strip()) for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in REAL_SCENES]
    if unknown or not names:
        raise ValueError(f"unknown real scene(s) {', '.join(unknown) or spec!r}; the real split is {', '.join(REAL_SCENES)}")
    return names
