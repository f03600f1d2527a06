"""Every limit lives in interop/limits.py; everything else takes it from there and agrees.

The size check is one function run up front by every command and by the service's open; the
device is checked the same way; every error class carries a code from the contract's list.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from streamstyle.interop import errors as contract_errors
from streamstyle.interop import limits, protocol as P
from streamstyle.interop.errors import DeviceError, ErrorCode, ResolutionError, StreamStyleError
from streamstyle.interop.layout import output_bytes

ROOT = Path(__file__).resolve().parents[1]


# --- the model and the kernels within the contract -----------------------------------------

def test_every_preset_is_within_the_contract():
    from streamstyle.model.config import PRESETS, preset

    for name in PRESETS:
        cfg = preset(name)
        assert 1 <= cfg.max_prompts <= limits.MAX_PROMPT_PARTS, name
        assert cfg.patch >= limits.MIN_WIDTH and cfg.patch >= limits.MIN_HEIGHT, name


def test_the_model_takes_its_limits_from_the_contract():
    from streamstyle.model import sampler, stylizer, text

    assert sampler.MAX_STEPS is limits.MAX_STEPS
    assert text.MAX_PROMPT_CHARS is limits.MAX_PROMPT_CHARS
    assert (stylizer.MAX_WIDTH, stylizer.MAX_HEIGHT) == (limits.MAX_WIDTH, limits.MAX_HEIGHT)


def test_the_writeback_kernel_implements_exactly_the_contracts_output_formats(gen):
    from streamstyle.kernels.writeback import FORMATS
    from streamstyle.kernels.writeback.reference import output_bytes as kernel_bytes

    assert tuple(FORMATS) == limits.OUTPUT_FORMATS == tuple(limits.OUTPUT_BYTES_PER_PIXEL)
    w, h = int(torch_randint(gen, 1, 50)), int(torch_randint(gen, 1, 50))
    for fmt in limits.OUTPUT_FORMATS:
        assert kernel_bytes(w, h, fmt) == output_bytes(w, h, fmt) == w * h * limits.OUTPUT_BYTES_PER_PIXEL[fmt]
    with pytest.raises(ValueError, match="rgba8, rgba16f"):
        output_bytes(w, h, "bgra8")


def torch_randint(gen, lo, hi):
    import torch

    return torch.randint(lo, hi, (1,), generator=gen).item()


def test_the_service_defaults_are_the_contracts():
    from streamstyle.service.config import ServiceConfig, default_bind

    cfg = ServiceConfig()
    assert (cfg.heartbeat_ms, cfg.reap_after_ms) == (limits.DEFAULT_HEARTBEAT_MS, limits.DEFAULT_REAP_AFTER_MS)
    assert ServiceConfig(device="cpu").frame_deadline_ms == limits.DEFAULT_DEADLINE_MS_CPU
    assert ServiceConfig(device="cuda").frame_deadline_ms == limits.DEFAULT_DEADLINE_MS_GPU
    assert default_bind is limits.default_bind
    from streamstyle.model.errors import ConfigError

    with pytest.raises(ConfigError, match="cpu, cuda or cuda:N"):
        ServiceConfig(device="gpu0").validate()
    ServiceConfig(device="cuda:1").validate()  # a name is checked here; presence by the command


def test_no_second_copy_of_the_size_limits():
    """7680 and 4320 are written once in the code (limits.py) and nowhere in the docs' prose (tests
    may state what they expect)."""
    hits = []
    for path in list(ROOT.rglob("*.py")) + list(ROOT.rglob("*.md")):
        if path.name == "limits.py" or {"runs", "tests"} & set(path.relative_to(ROOT).parts):
            continue
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.search(r"\b(7680|4320)\b", line) and "limits" not in line:
                hits.append(f"{path.relative_to(ROOT)}:{i}")
    table = {f"docs/protocol.md:{i}" for i, line in enumerate((ROOT / "docs/protocol.md").read_text().splitlines(), 1)
             if line.startswith("| frame size |")}
    assert set(hits) <= table, hits


# --- the one size check ------------------------------------------------------------------

@pytest.mark.parametrize("w, h", [(0, 0), (100000, 100000), (7, 64), (64, 7), (7681, 64), (64, 4321),
                                  (-16, 16), (True, 16), (16.0, 16), ("16", 16)])
def test_check_resolution_refuses_sizes_outside_the_contract(w, h):
    with pytest.raises(ResolutionError) as info:
        limits.check_resolution(w, h)
    assert info.value.code == ErrorCode.BAD_RESOLUTION == "bad_resolution"


def test_check_resolution_takes_the_bounds():
    for w, h in [(limits.MIN_WIDTH, limits.MIN_HEIGHT), (limits.MAX_WIDTH, limits.MAX_HEIGHT), (1920, 1080)]:
        assert limits.check_resolution(w, h) == (w, h)


def _open(width, height):
    ring = {"backend": "shm", "slots": 3, "inputs": [{"handle": "x", "offset": 0, "size": 1}] * 3,
            "outputs": [{"handle": "x", "offset": 0, "size": 1}] * 3, "sync": {"handle": "x", "offset": 64}}
    return msgpack.packb({"type": "open", "req": 1, "width": width, "height": height,
                          "layout": {"channels": []}, "ring": ring})


def test_the_protocol_refuses_a_size_outside_the_contract_as_bad_resolution():
    for w, h in [(0, 0), (100000, 100000), (limits.MAX_WIDTH + 1, 64)]:
        with pytest.raises(P.ProtocolError) as info:
            P.parse_request(_open(w, h))
        assert info.value.code == ErrorCode.BAD_RESOLUTION
    assert P.parse_request(_open(limits.MAX_WIDTH, limits.MAX_HEIGHT)).width == limits.MAX_WIDTH
    with pytest.raises(P.ProtocolError) as info:
        P.parse_request(_open(16.5, 16))
    assert info.value.code == ErrorCode.BAD_FIELD  # not an integer at all


def test_the_service_open_runs_the_contracts_check_and_the_models_stride():
    from streamstyle.model.config import ModelConfig
    from streamstyle.model.network import StreamStyleModel
    from streamstyle.model.stylizer import Stylizer

    cfg = ModelConfig(name="stride16", width=32, depth=1, heads=2, patch=16, latent_stride=4, decoder_width=8,
                      max_prompt_tokens=16).validate()
    sty = Stylizer(StreamStyleModel(cfg))
    for w, h in [(0, 0), (100000, 100000)]:
        with pytest.raises(ResolutionError, match="frame sizes run from"):
            sty.check_size(w, h)  # the contract's message: the same check as every command's
    with pytest.raises(ResolutionError, match="token stride is 16"):
        sty.check_size(limits.MIN_WIDTH, 16)  # in the contract's range, below this model's stride
    sty.check_size(16, 16)


# --- the command line: sizes and devices refused before anything starts -----------------

def _cli(argv, capsys):
    from streamstyle.tools.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("argv", [
    ["demo", "--size", "0x0", "--no-video"], ["demo", "--size", "100000x100000", "--no-video"],
    ["bench", "--sizes", "720p,0x0", "--device", "cpu"], ["bench", "--sizes", "100000x100000", "--device", "cpu"],
    ["model-info", "--size", "0x0"], ["model-info", "--size", "1280x720", "--size", "100000x100000"],
    ["render", "--seed", "1", "--frames", "1", "--size", "0x0", "--out", "unused"],
    ["eval", "--size", "100000x100000", "--device", "cpu"],
    ["train", "--size", "0", "--device", "cpu"],
])
def test_every_command_refuses_a_bad_size_up_front(argv, capsys, monkeypatch):
    import streamstyle.tools.cli as cli

    started = []
    monkeypatch.setattr(cli, "cmd_demo", lambda args: started.append(args) or 0)
    monkeypatch.setattr(cli, "cmd_bench", lambda args: started.append(args) or 0)
    code, err = _cli(argv, capsys)
    assert code == 2 and len(err) == 1 and "[bad_resolution]" in err[0], err
    assert not started


@pytest.mark.parametrize("device, words", [("gpu", "cpu, cuda or cuda:N"), ("cuda:x", "cpu, cuda or cuda:N"),
                                           ("cuda", "CUDA is not available"), ("cuda:3", "CUDA is not available")])
def test_every_command_refuses_a_bad_device_up_front(device, words, capsys, monkeypatch):
    import torch

    import streamstyle.tools.cli as cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    started = []
    monkeypatch.setattr(cli, "cmd_demo", lambda args: started.append(args) or 0)
    monkeypatch.setattr(cli, "cmd_serve", lambda args: started.append(args) or 0)
    for argv in (["demo", "--device", device, "--no-video"], ["serve", "--device", device],
                 ["render", "--seed", "1", "--frames", "1", "--size", "64x64", "--out", "x", "--device", device]):
        code, err = _cli(argv, capsys)
        assert code == 2 and len(err) == 1 and "[bad_device]" in err[0] and words in err[0], (argv, err)
    assert not started


def test_a_device_index_past_the_machines_gpus_is_refused(monkeypatch):
    import torch

    from streamstyle.tools.cli import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == "cuda:1" and check_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="2 CUDA device"):
        check_device("cuda:2")


def test_demo_size_0x0_in_a_real_process_exits_2_with_one_line():
    run = subprocess.run([sys.executable, "-m", "streamstyle", "demo", "--size", "0x0", "--no-video"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT.parent)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamstyle: error [bad_resolution]"), run.stderr
    assert "starting the service" not in run.stdout


# --- prompts and blends --------------------------------------------------------------------

def _prompt(prompt):
    return P.parse_request(msgpack.packb({"type": "prompt", "req": 1, "session": 1, "prompt": prompt}))


def test_the_blend_rules_are_the_contracts_on_both_sides():
    from streamstyle.model.errors import PromptError
    from streamstyle.model.text import normalize_blend

    for weight in (0.0, 1e-300, 1e300, -1.0, limits.MIN_BLEND_WEIGHT / 2, limits.MAX_BLEND_WEIGHT * 2):
        with pytest.raises(P.ProtocolError):
            _prompt([["a", weight]])
    for weight in (0.0, -1.0, float("nan"), float("inf")):  # the model refuses these too
        with pytest.raises(PromptError):
            normalize_blend([("a", weight)], max_parts=limits.MAX_PROMPT_PARTS)
    edge = [["a", limits.MIN_BLEND_WEIGHT], ["b", limits.MAX_BLEND_WEIGHT]]
    assert len(_prompt(edge).prompt) == 2
    parts = normalize_blend([tuple(p) for p in edge], max_parts=limits.MAX_PROMPT_PARTS)
    assert min(w for _, w in parts) > 0
    assert len(_prompt([["a", 1.0]] * limits.MAX_PROMPT_PARTS).prompt) == limits.MAX_PROMPT_PARTS
    with pytest.raises(P.ProtocolError):
        _prompt([["a", 1.0]] * (limits.MAX_PROMPT_PARTS + 1))
    assert _prompt("x" * limits.MAX_PROMPT_CHARS).prompt
    with pytest.raises(P.ProtocolError):
        _prompt("x" * (limits.MAX_PROMPT_CHARS + 1))
    with pytest.raises(PromptError, match=str(limits.MAX_PROMPT_CHARS)):
        normalize_blend("x" * (limits.MAX_PROMPT_CHARS + 1), max_parts=1)


def test_the_protocol_re_exports_the_contracts_names():
    for name in ("PROTOCOL_VERSION", "MAX_MESSAGE_BYTES", "MIN_SLOTS", "MAX_SLOTS", "OUTPUT_FORMATS", "BACKENDS"):
        assert getattr(P, name) is getattr(limits, name)
    assert P.ErrorCode is ErrorCode


def test_the_constants_are_plain_for_the_c_header():
    """UPPER_CASE names hold ints, floats, strings or tuples of strings (one dict, bytes per pixel)."""
    for name, value in vars(limits).items():
        if name.isupper() and not name.startswith("_"):
            ok = isinstance(value, (int, float, str)) or (
                isinstance(value, tuple) and all(isinstance(v, str) for v in value)) or (
                isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, int) for k, v in value.items()))
            assert ok, name


# --- error codes: one list -------------------------------------------------------------------

def _error_classes():
    import streamstyle.engine_plugins.capture  # noqa: F401  (its errors)
    import streamstyle.model.errors  # noqa: F401

    seen, todo = set(), [StreamStyleError]
    while todo:
        cls = todo.pop()
        seen.add(cls)
        todo += [c for c in cls.__subclasses__() if c not in seen]
    return seen


def test_every_error_class_carries_a_contract_code():
    classes = _error_classes()
    assert {c.__name__ for c in classes} >= {"LayoutError", "ResolutionError", "InputError", "RingError", "DeviceError",
                                             "PromptError", "CacheFullError", "SessionError", "SessionEvictedError",
                                             "CheckpointError", "ConfigError", "CaptureError", "ChunkError"}
    for cls in classes:
        assert cls.code in ErrorCode.all(), cls


def test_what_the_per_frame_path_and_the_rings_raise_are_wire_codes():
    from streamstyle.model import errors as model_errors

    local = {model_errors.CheckpointError, model_errors.ConfigError, DeviceError}
    for cls in _error_classes():
        if cls.__module__ in ("streamstyle.model.errors", "streamstyle.interop.errors") and cls not in local:
            assert cls.code in ErrorCode.wire(), cls
    assert contract_errors.RingError.code == ErrorCode.BAD_RING
    assert len(set(ErrorCode.all())) == len(ErrorCode.all()) and ErrorCode.LOCAL < set(ErrorCode.all())


def test_no_error_code_is_spelled_out_elsewhere():
    """Error classes take codes from ErrorCode, not string literals."""
    for path in [ROOT / "model/errors.py", ROOT / "engine_plugins/capture.py", ROOT / "interop/errors.py"]:
        for line in path.read_text().splitlines():
            if re.match(r"\s+code = ", line):
                assert "ErrorCode." in line, (path.name, line)
    assert inspect.getsource(contract_errors.RingError).count("ErrorCode.BAD_RING") == 1
