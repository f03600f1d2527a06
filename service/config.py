"""Service configuration: one frozen dataclass, from defaults, a JSON file and command-line flags."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..model.errors import ConfigError


def default_bind() -> str:
    """ipc:// in a per-user runtime folder on Linux, loopback TCP elsewhere."""
    if sys.platform.startswith("linux"):
        base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(tempfile.gettempdir(), f"streamstyle-{os.getuid()}")
        return f"ipc://{os.path.join(base, 'streamstyle.sock')}"
    return "tcp://127.0.0.1:5599"


@dataclass(frozen=True)
class ServiceConfig:
    bind: str = ""  # "" means default_bind()
    device: str = "cpu"
    weights: str | None = None  # a checkpoint; None: `preset` if set, else the shipped default model
    preset: str | None = None  # serve this preset with untrained weights (when no `weights`)
    seed: int = 0  # initialises untrained weights reproducibly
    heartbeat_ms: int = 500
    # A client whose connection closes (killed, crashed) is reaped within one heartbeat; one that
    # stays connected but says nothing for this long (hung) is reaped too.
    reap_after_ms: int = 10000
    max_sessions: int = 16
    deadline_ms: float = 0.0  # 0: 100 ms on a GPU, 5000 ms on the CPU
    cache_pages: int = 512
    cache_page_elems: int = 65536
    evict_idle_after_s: float | None = None
    dtype: str = "auto"  # auto: bf16 on a GPU, fp32 on the CPU; fp8: bf16 with FP8 block GEMMs (model/fp8.py)
    cuda_graphs: bool = True  # one CUDA graph per session shape and step count (GPU only)
    # Python's garbage collector runs between frames (after "done" is sent), not mid-frame when
    # allocations happen to cross its threshold; what start-up loaded is frozen out of its scans.
    gc_between_frames: bool = True
    curve_secret_key: str | None = None  # Z85 keys; required for a non-loopback bind
    curve_public_key: str | None = None

    @property
    def address(self) -> str:
        return self.bind or default_bind()

    @property
    def frame_deadline_ms(self) -> float:
        if self.deadline_ms > 0:
            return self.deadline_ms
        return 100.0 if self.device.startswith("cuda") else 5000.0

    def validate(self) -> "ServiceConfig":
        addr = self.address
        scheme = urlparse(addr).scheme
        if scheme not in ("ipc", "tcp", "inproc"):
            raise ConfigError(f"bind address {addr!r} must be ipc://, tcp:// or inproc://")
        if scheme == "tcp" and not self.is_loopback(addr) and not (self.curve_secret_key and self.curve_public_key):
            raise ConfigError(f"refusing to bind {addr}: a non-loopback address needs CURVE keys "
                              "(curve_secret_key and curve_public_key in the config file)")
        if self.heartbeat_ms < 10 or self.reap_after_ms < 2 * self.heartbeat_ms:
            raise ConfigError("heartbeat_ms must be >= 10 and reap_after_ms at least twice it")
        if self.max_sessions < 1:
            raise ConfigError("max_sessions must be >= 1")
        if self.dtype not in ("auto", "fp32", "bf16", "fp16", "fp8"):
            raise ConfigError("dtype must be auto, fp32, bf16, fp16 or fp8")
        return self

    @staticmethod
    def is_loopback(addr: str) -> bool:
        host = urlparse(addr).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @classmethod
    def load(cls, path: str | None, **overrides) -> "ServiceConfig":
        data = {}
        if path:
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"config file {path} must hold a JSON object")
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ConfigError(f"config file {path}: unknown settings {', '.join(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data).validate()
        except TypeError as exc:
            raise ConfigError(f"bad service config: {exc}") from None
