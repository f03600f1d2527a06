"""Service configuration: one frozen dataclass, from defaults, a TOML (or JSON) file and
command-line flags, in that order.

Every setting is checked by name, type and value before anything starts; a bad one raises
`ConfigFieldError` (a `ConfigError`, code `bad_config`) naming the field and where it came from
(the file, or the command line). `to_toml` writes the effective config back in the file format
(`streamstyle serve --print-config`); what it writes loads back to the same config.
The file format is documented in docs/protocol.md ("Service configuration").
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import sys
import tempfile
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..interop.errors import DeviceError
from ..interop.limits import (DEFAULT_DEADLINE_MS_CPU, DEFAULT_DEADLINE_MS_GPU, DEFAULT_HEARTBEAT_MS,
                              DEFAULT_REAP_AFTER_MS, MAX_DEVICE, MAX_PORT, MIN_HEARTBEAT_MS, MIN_PORT,
                              check_device_name)
from ..interop.limits import default_bind  # noqa: F401  (the contract's; re-exported)
from ..model.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 takes the same parser from PyPI (pyproject's tomli)
    import tomli as tomllib


class ConfigFieldError(ConfigError):
    """One service setting is unknown, of the wrong type or out of range. `field` names it;
    `source` says where its value came from (a file's path, "command line"), when known."""

    def __init__(self, field: str, problem: str, source: str | None = None):
        self.field, self.problem, self.source = field, problem, source
        super().__init__(f"{source}: {field}: {problem}" if source else f"{field}: {problem}")

    def at(self, source: str) -> "ConfigFieldError":
        return self if self.source else ConfigFieldError(self.field, self.problem, source)


def available_cpus() -> int:
    """Cores this process may run on: its CPU affinity (taskset, cpusets), capped by a cgroup v2
    CPU quota (a container's --cpus), which affinity does not show."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


@dataclass(frozen=True)
class ServiceConfig:
    bind: str = ""  # "" means default_bind()
    device: str = "cpu"
    # One service process per device behind `bind` (docs/operators.md, "Several GPUs"): 0, and no
    # `gpus`, is one service in this process. N: N workers on `device` (on `cuda`: one on each of
    # GPUs 0..N-1). `gpus` ("0,1"): one worker on each GPU listed; `device` is then not used.
    workers: int = 0
    gpus: str = ""
    weights: str | None = None  # a checkpoint; None: `preset` if set, else the shipped default model
    preset: str | None = None  # serve this preset with untrained weights (when no `weights`)
    seed: int = 0  # initialises untrained weights reproducibly
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    # A client whose connection closes (killed, crashed) is reaped within one heartbeat; one that
    # stays connected but says nothing for this long (hung) is reaped too.
    reap_after_ms: int = DEFAULT_REAP_AFTER_MS
    max_sessions: int = 16
    deadline_ms: float = 0.0  # 0: DEFAULT_DEADLINE_MS_GPU (100) on a GPU, DEFAULT_DEADLINE_MS_CPU (5000) on the CPU
    cache_pages: int = 1024  # 256 MiB of 256 KiB pages: 1280x720 takes 41, 1920x1080 90, 3840x2160 351 (mostly the full-resolution history, bf16)
    cache_page_elems: int = 65536
    evict_idle_after_s: float | None = None
    dtype: str = "auto"  # auto: bf16 on a GPU, fp32 on the CPU; fp8: bf16 with FP8 block GEMMs (model/fp8.py)
    cuda_graphs: bool = True  # one CUDA graph per session shape and step count (GPU only)
    # Python's garbage collector runs between frames (after "done" is sent), not mid-frame when
    # allocations happen to cross its threshold; what start-up loaded is frozen out of its scans.
    gc_between_frames: bool = True
    curve_secret_key: str | None = None  # Z85 keys; required for a non-loopback bind
    curve_public_key: str | None = None
    # torch's intra-op threads; 0: every core this process may use (available_cpus()), whatever
    # OMP_NUM_THREADS says. A demo's engine on the same machine wants one core left to it.
    cpu_threads: int = 0
    # The studio side (docs/operators.md), each off at 0: a Prometheus scrape port, an OSC (UDP)
    # control port, a live preview page's HTTP port; all bound to `studio_host`.
    metrics_port: int = 0
    osc_port: int = 0
    preview_port: int = 0
    # Loopback unless the CURVE keys are set (the operator has opted into a networked service).
    studio_host: str = "127.0.0.1"
    presets: str | None = None  # a presets file (TOML, docs/operators.md); `save_preset` writes it
    recordings_dir: str = "recordings"  # where `record` writes session<id>-<UTC time>.mp4

    @property
    def address(self) -> str:
        return self.bind or default_bind()

    @property
    def worker_devices(self) -> tuple[str, ...]:
        """The device of each worker behind a multi-worker front; () for a single service."""
        if self.gpus:
            return tuple(f"cuda:{i}" for i in _gpu_list(self.gpus))
        if self.device == "cuda":
            return tuple(f"cuda:{i}" for i in range(self.workers))
        return (self.device,) * self.workers

    @property
    def frame_deadline_ms(self) -> float:
        if self.deadline_ms > 0:
            return self.deadline_ms
        return DEFAULT_DEADLINE_MS_GPU if self.device.startswith("cuda") else DEFAULT_DEADLINE_MS_CPU

    @property
    def threads(self) -> int:
        """torch's intra-op thread count for this config (`cpu_threads`, 0 resolved)."""
        return self.cpu_threads or available_cpus()

    def validate(self) -> "ServiceConfig":
        """Checks every field's type, then the values; raises ConfigFieldError naming the field."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            problem = _type_problem(getattr(self, f.name), hints[f.name])
            if problem:
                raise ConfigFieldError(f.name, problem)
        for name in ("deadline_ms", "evict_idle_after_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigFieldError(name, f"must be a finite number >= 0, got {value!r}")
        for name in ("cache_pages", "cache_page_elems"):
            if getattr(self, name) < 1:
                raise ConfigFieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.cpu_threads < 0:
            raise ConfigFieldError("cpu_threads", f"must be >= 0 (0: every core available), got {self.cpu_threads}")
        addr = self.address
        scheme = urlparse(addr).scheme
        if scheme not in ("ipc", "tcp", "inproc"):
            raise ConfigFieldError("bind", f"address {addr!r} must be ipc://, tcp:// or inproc://")
        if scheme == "tcp" and not self.is_loopback(addr) and not (self.curve_secret_key and self.curve_public_key):
            raise ConfigFieldError("bind", f"refusing to bind {addr}: a non-loopback address needs CURVE keys "
                                   "(curve_secret_key and curve_public_key in the config file)")
        if self.heartbeat_ms < MIN_HEARTBEAT_MS:
            raise ConfigFieldError("heartbeat_ms", f"must be >= {MIN_HEARTBEAT_MS}, got {self.heartbeat_ms}")
        if self.reap_after_ms < 2 * self.heartbeat_ms:
            raise ConfigFieldError("reap_after_ms", f"must be at least twice heartbeat_ms ({self.heartbeat_ms}), "
                                   f"got {self.reap_after_ms}")
        try:
            check_device_name(self.device)
        except DeviceError as exc:
            raise ConfigFieldError("device", exc.message) from None
        for name in ("metrics_port", "osc_port", "preview_port"):
            if not MIN_PORT <= getattr(self, name) <= MAX_PORT:
                raise ConfigFieldError(name, f"must be a port in {MIN_PORT}..{MAX_PORT} (0: off), got {getattr(self, name)}")
        if self.metrics_port and self.metrics_port == self.preview_port:  # both TCP (OSC is UDP)
            raise ConfigFieldError("preview_port", f"metrics_port and preview_port are both {self.preview_port}")
        if not (self.is_loopback_host(self.studio_host) or (self.curve_secret_key and self.curve_public_key)):
            raise ConfigFieldError("studio_host", f"refusing to serve metrics, OSC or the preview on {self.studio_host!r}: "
                                   "a non-loopback host needs the service's CURVE keys set")
        if not 0 <= self.workers <= MAX_WORKERS:
            raise ConfigFieldError("workers", f"must be in 0..{MAX_WORKERS} (0: one service, no workers), got {self.workers}")
        if self.gpus:
            try:
                gpus = _gpu_list(self.gpus)
            except ValueError as exc:
                raise ConfigFieldError("gpus", str(exc)) from None
            if self.workers and self.workers != len(gpus):
                raise ConfigFieldError("workers", f"is {self.workers} but gpus lists {len(gpus)} GPUs (one worker each)")
        if self.max_sessions < 1:
            raise ConfigFieldError("max_sessions", f"must be >= 1, got {self.max_sessions}")
        if self.dtype not in ("auto", "fp32", "bf16", "fp16", "fp8"):
            raise ConfigFieldError("dtype", f"must be auto, fp32, bf16, fp16 or fp8, got {self.dtype!r}")
        return self

    @staticmethod
    def is_loopback(addr: str) -> bool:
        return ServiceConfig.is_loopback_host(urlparse(addr).hostname or "")

    @staticmethod
    def is_loopback_host(host: str) -> bool:
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @classmethod
    def load(cls, path: str | os.PathLike | None, **overrides) -> "ServiceConfig":
        """Defaults, then the file at `path` (TOML; JSON if it ends in .json or starts with `{`),
        then `overrides` (the command line; None means not given). Raises ConfigError for an
        unreadable file and ConfigFieldError, naming the field and its source, for a bad setting."""
        data, origin = {}, {}
        if path:
            data = read_config_file(path)
            origin = dict.fromkeys(data, str(path))
        known = {f.name: f for f in dataclasses.fields(cls)}
        for name, value in overrides.items():
            if value is not None:
                data[name], origin[name] = value, "command line"
        for name in data:
            if name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                raise ConfigFieldError(name, "unknown setting" + (f" (did you mean {near[0]!r}?)" if near else ""),
                                       origin[name])
        hints = typing.get_type_hints(cls)
        for name, value in data.items():
            if float in _allowed(hints[name]) and isinstance(value, int) and not isinstance(value, bool):
                data[name] = float(value)  # TOML's `deadline_ms = 100` is a float setting
        try:
            return cls(**data).validate()
        except ConfigFieldError as exc:
            raise exc.at(origin.get(exc.field, "defaults")) from None

    def to_toml(self) -> str:
        """The config in the file's format: every field, in declaration order. Unset optional
        fields and the CURVE secret key are written as comments (the key is never printed), and
        automatic values say what they resolve to here."""
        resolved = {"bind": f"default: {default_bind()}",
                    "deadline_ms": f"auto: {self.frame_deadline_ms:g} ms on {self.device}",
                    "cpu_threads": f"auto: {available_cpus()} (the cores this process may use)"}
        lines = ["# streamstyle serve: the effective service configuration (defaults, file, flags)"]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "curve_secret_key" and value is not None:
                lines.append(f"# {f.name} = (set; not shown)")
            elif value is None:
                lines.append(f"# {f.name} = (unset)")
            else:
                line = f"{f.name} = {_toml_value(value)}"
                if f.name in resolved and not value:
                    line += f"  # {resolved[f.name]}"
                lines.append(line)
        return "\n".join(lines) + "\n"


MAX_WORKERS = 64  # worker processes behind one front


def _gpu_list(text: str) -> list[int]:
    """ "0,1" -> [0, 1]: distinct CUDA device indices within the contract's device range."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 0 <= int(part) <= MAX_DEVICE:
            raise ValueError(f"must be a comma list of GPU indices 0..{MAX_DEVICE}, like \"0,1\"; got {text!r}")
        if int(part) in out:
            raise ValueError(f"lists GPU {part} twice")
        out.append(int(part))
    return out


def read_config_file(path: str | os.PathLike) -> dict:
    """The settings of one config file as a dict (not yet checked). Raises ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    as_json = path.suffix.lower() == ".json" or text.lstrip().startswith("{")  # no TOML document starts so
    try:
        data = json.loads(text) if as_json else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {'JSON' if as_json else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return data


def _allowed(hint) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _type_problem(value, hint) -> str | None:
    """None if `value` fits the field's annotation, else what is wrong. bool is not a number."""
    allowed = _allowed(hint)
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if kind is bool and isinstance(value, bool):
            return None
        if kind in (int, float) and isinstance(value, int) and not isinstance(value, bool):
            return None
        if kind is float and isinstance(value, float):
            return None
        if kind is str and isinstance(value, str):
            return None
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "unset"}
    want = " or ".join(names.get(k, getattr(k, "__name__", str(k))) for k in allowed)
    return f"must be {want}, got {value!r} ({type(value).__name__})"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    # A TOML basic string: JSON's escapes are TOML's, but for DEL, which TOML also wants escaped.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
