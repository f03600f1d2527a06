"""Presets: named looks in a TOML file (docs/operators.md, "Presets").

A look is a prompt (or a weighted blend of prompts), and optionally its steps, strength and the
frames a switch to it blends over:

    [presets.ink]
    prompt = "cel shading with ink outlines"
    steps = 2
    strength = 0.6
    blend_frames = 30

    [presets.dusk]
    blend = [["watercolor painting", 0.7], ["film noir", 0.3]]

What must hold: every value is checked by the protocol's own field rules (`interop.protocol`),
so a preset can never hold what a `prompt` or `params` message could not; a bad file raises a
`ConfigError` naming the preset and the field; `save_presets` writes a file that loads back to
the same presets, atomically (a temporary file renamed over the old one).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..interop import protocol as P
from ..interop.limits import MAX_PRESET_NAME_CHARS, MAX_PRESETS, PRESET_NAME_PATTERN
from ..model.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FIELDS = ("prompt", "blend", "steps", "strength", "blend_frames")


@dataclass(frozen=True)
class Preset:
    name: str
    prompt: str | tuple  # a string, or ((text, weight), ...)
    steps: int | None = None
    strength: float | None = None
    blend_frames: int = 0

    @property
    def params(self) -> dict:
        return {k: v for k, v in (("steps", self.steps), ("strength", self.strength)) if v is not None}

    def to_dict(self) -> dict:
        out = {"prompt": self.prompt} if isinstance(self.prompt, str) else {"blend": [list(p) for p in self.prompt]}
        return {**out, **self.params, **({"blend_frames": self.blend_frames} if self.blend_frames else {})}


def check_name(name) -> str:
    """A preset name, or P.ProtocolError(bad_field)."""
    if not (isinstance(name, str) and 1 <= len(name) <= MAX_PRESET_NAME_CHARS and re.fullmatch(PRESET_NAME_PATTERN, name)):
        raise P.ProtocolError(P.ErrorCode.BAD_FIELD, f"a preset name is 1 to {MAX_PRESET_NAME_CHARS} characters of "
                              f"{PRESET_NAME_PATTERN}, not {str(name)[:80]!r}")
    return name


def preset_from_dict(name: str, data: dict) -> Preset:
    """One preset from its table; P.ProtocolError(bad_field) naming what is wrong."""
    check_name(name)
    if not isinstance(data, dict):
        raise P.ProtocolError(P.ErrorCode.BAD_FIELD, "must be a table")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise P.ProtocolError(P.ErrorCode.BAD_FIELD, f"unknown field(s) {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    if ("prompt" in data) == ("blend" in data):
        raise P.ProtocolError(P.ErrorCode.BAD_FIELD, "needs exactly one of prompt and blend")
    if "prompt" in data:
        if not isinstance(data["prompt"], str):
            raise P.ProtocolError(P.ErrorCode.BAD_FIELD, "prompt must be a string (a weighted list is `blend`)")
        prompt = P._prompt(data["prompt"], "prompt")
    else:
        if not isinstance(data["blend"], list):
            raise P.ProtocolError(P.ErrorCode.BAD_FIELD, "blend must be a list of [text, weight]")
        prompt = P._prompt(data["blend"], "blend")
    params = P._params({k: data[k] for k in ("steps", "strength") if k in data}, "params")
    frames = P.SetPrompt.FIELDS["blend_frames"][1](data.get("blend_frames", 0), "blend_frames")
    return Preset(name, prompt, params.get("steps"), params.get("strength"), frames)


def load_presets(path: str | os.PathLike) -> dict[str, Preset]:
    """The presets of a file, by name; an absent file is no presets (save_preset creates it).
    Raises ConfigError naming the file, the preset and the problem."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"presets file {path}: {exc}") from None
    unknown = sorted(set(data) - {"presets"})
    if unknown or not isinstance(data.get("presets", {}), dict):
        raise ConfigError(f"presets file {path}: only [presets.NAME] tables belong here, not {', '.join(unknown) or 'presets'}")
    table = data.get("presets", {})
    if len(table) > MAX_PRESETS:
        raise ConfigError(f"presets file {path}: {len(table)} presets, at most {MAX_PRESETS}")
    out = {}
    for name, body in table.items():
        try:
            out[name] = preset_from_dict(name, body)
        except P.ProtocolError as exc:
            raise ConfigError(f"presets file {path}: preset {name!r}: {exc.message}") from None
    return out


def _toml_str(s: str) -> str:
    import json

    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def dumps(presets: dict[str, Preset]) -> str:
    lines = ["# StreamStyle presets (docs/operators.md); `save_preset` rewrites this file", ""]
    for name in sorted(presets):
        d = presets[name].to_dict()
        lines.append(f"[presets.{name}]")
        for k, v in d.items():
            if k == "prompt":
                lines.append(f"prompt = {_toml_str(v)}")
            elif k == "blend":
                lines.append("blend = [" + ", ".join(f"[{_toml_str(t)}, {float(w)!r}]" for t, w in v) + "]")
            else:
                lines.append(f"{k} = {v!r}")
        lines.append("")
    return "\n".join(lines)


def save_presets(path: str | os.PathLike, presets: dict[str, Preset]) -> None:
    if len(presets) > MAX_PRESETS:
        raise ConfigError(f"at most {MAX_PRESETS} presets")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps(presets))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
