"""Weights I/O: safetensors plus a JSON config; pickle is never loaded.

A checkpoint is a folder holding `model.safetensors` and `config.json`; the config is also stored in
the safetensors metadata, so the `.safetensors` file alone is enough to load. Loading checks the
tensors against the config and names every missing, unexpected or mis-shaped tensor.
"""

from __future__ import annotations

import dataclasses

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .errors import CheckpointError, ConfigError
from .network import StreamStyleModel

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"}
SHIPPED = Path(__file__).resolve().parent / "weights" / "default"  # the trained default model (docs/model-card.md)


def shipped_weights() -> Path | None:
    """The folder of the shipped default weights, or None where they are not installed."""
    return SHIPPED if (SHIPPED / WEIGHTS_FILE).exists() else None


def save_weights(model: StreamStyleModel, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write `path/model.safetensors` and `path/config.json`; returns the folder. `dtype` (e.g.
    torch.bfloat16 for shipping) converts floating tensors; loading converts them back to the
    model's dtype."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    config_json = model.config.to_json()
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"streamstyle_config": config_json})
    (folder / CONFIG_FILE).write_text(config_json + "\n")
    return folder


def _refuse_pickle(file: Path) -> None:
    head = file.open("rb").read(9) if file.is_file() else b""
    # A safetensors file opens with its header's length (u64, little-endian) and then the header's
    # "{": that length's first byte may be 0x80 (a pickle's first byte) or its first two "PK" (a
    # zip's), so those bytes alone do not make a pickle.
    length = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    safetensors = head[8:9] == b"{" and 0 < length <= file.stat().st_size - 8
    if file.suffix.lower() in PICKLE_SUFFIXES or (not safetensors and (head[:1] == b"\x80" or head[:2] == b"PK")):
        raise CheckpointError(f"{file} is a pickle-based checkpoint (torch.save); StreamStyle loads "
                              "safetensors only, since unpickling can run arbitrary code. Convert it "
                              "with safetensors.torch.save_file in a trusted environment.")


def _locate(path: Path) -> tuple[Path, Path | None]:
    if path.is_dir():
        weights = path / WEIGHTS_FILE
        if not weights.exists():
            pickles = [p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
            if pickles:
                _refuse_pickle(path / pickles[0])
            raise CheckpointError(f"{path} holds no {WEIGHTS_FILE}")
        return weights, path / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    _refuse_pickle(path)
    sibling = path.with_name(CONFIG_FILE)
    return path, sibling if sibling.exists() else None


def load_weights(path: str | Path, device: str | torch.device = "cpu", partial: bool = False,
                 changes: dict | None = None) -> StreamStyleModel:
    """Load a checkpoint folder or `.safetensors` file onto `device`, in eval mode. `partial`
    (fine-tuning from an older model, e.g. a version-1 checkpoint without the refiner): tensors
    the config's model lacks are ignored, missing ones keep their fresh initialisation (listed in
    `model.partial_load`), and shape mismatches still fail. `changes`: config fields replaced before
    the model is built (`train --refiner-depth`: with `partial`, the passes it adds start fresh)."""
    weights, config_file = _locate(Path(path))
    try:
        tensors = load_file(str(weights))
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types, which vary by version
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None
    text = config_file.read_text() if config_file is not None else metadata.get("streamstyle_config")
    if text is None:
        raise CheckpointError(f"{weights} has no config: neither {CONFIG_FILE} beside it nor one in its metadata")
    try:
        config = ModelConfig.from_json(text)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint config is invalid: {exc}") from None
    if changes:
        try:
            config = dataclasses.replace(config, **changes).validate()
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(f"the changed config is invalid: {exc}") from None
    model = StreamStyleModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs config {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(tensors)) if tensors[k].shape != expected[k].shape]
    if partial and not shapes:
        keep = {k: v for k, v in tensors.items() if k in expected}
        model.load_state_dict(keep, strict=False)
        model.partial_load = {"missing": missing, "ignored": unexpected}
        return model.to(device).eval()
    if missing or unexpected or shapes:
        def few(items):
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
        parts = []
        if missing:
            parts.append(f"missing tensors: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors: {few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {few(shapes)}")
        raise CheckpointError(f"checkpoint {weights} does not match its config "
                              f"({config.name!r}): " + "; ".join(parts))
    model.load_state_dict(tensors)
    return model.to(device).eval()


def read_config(path: str | Path) -> ModelConfig:
    """The config of a checkpoint without loading its tensors."""
    weights, config_file = _locate(Path(path))
    try:
        if config_file is not None:
            return ModelConfig.from_json(config_file.read_text())
        with safe_open(str(weights), framework="pt") as f:
            text = (f.metadata() or {}).get("streamstyle_config")
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint config is invalid: {exc}") from None
    except Exception as exc:  # safetensors' own error types vary by version
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None
    if text is None:
        raise CheckpointError(f"{weights} has no config: neither {CONFIG_FILE} beside it nor one in its metadata")
    try:
        return ModelConfig.from_json(text)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint config is invalid: {exc}") from None
