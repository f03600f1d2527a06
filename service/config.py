"""Service configuration: one frozen dataclass, from defaults, a JSON file and command-line flags."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..interop.errors import DeviceError
from ..interop.limits import (DEFAULT_DEADLINE_MS_CPU, DEFAULT_DEADLINE_MS_GPU, DEFAULT_HEARTBEAT_MS,
                              DEFAULT_REAP_AFTER_MS, MIN_HEARTBEAT_MS, check_device_name)
from ..interop.limits import default_bind  # noqa: F401  (the contract's; re-exported)
from ..model.errors import ConfigError


@dataclass(frozen=True)
class ServiceConfig:
    bind: str = ""  # "" means default_bind()
    device: str = "cpu"
    weights: str | None = None  # a checkpoint; None: `preset` if set, else the shipped default model
    preset: str | None = None  # serve this preset with untrained weights (when no `weights`)
    seed: int = 0  # initialises untrained weights reproducibly
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    # A client whose connection closes (killed, crashed) is reaped within one heartbeat; one that
    # stays connected but says nothing for this long (hung) is reaped too.
    reap_after_ms: int = DEFAULT_REAP_AFTER_MS
    max_sessions: int = 16
    deadline_ms: float = 0.0  # 0: DEFAULT_DEADLINE_MS_GPU (100) on a GPU, DEFAULT_DEADLINE_MS_CPU (5000) on the CPU
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
        return DEFAULT_DEADLINE_MS_GPU if self.device.startswith("cuda") else DEFAULT_DEADLINE_MS_CPU

    def validate(self) -> "ServiceConfig":
        addr = self.address
        scheme = urlparse(addr).scheme
        if scheme not in ("ipc", "tcp", "inproc"):
            raise ConfigError(f"bind address {addr!r} must be ipc://, tcp:// or inproc://")
        if scheme == "tcp" and not self.is_loopback(addr) and not (self.curve_secret_key and self.curve_public_key):
            raise ConfigError(f"refusing to bind {addr}: a non-loopback address needs CURVE keys "
                              "(curve_secret_key and curve_public_key in the config file)")
        if self.heartbeat_ms < MIN_HEARTBEAT_MS or self.reap_after_ms < 2 * self.heartbeat_ms:
            raise ConfigError(f"heartbeat_ms must be >= {MIN_HEARTBEAT_MS} and reap_after_ms at least twice it")
        try:
            check_device_name(self.device)
        except DeviceError as exc:
            raise ConfigError(exc.message) from None
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
