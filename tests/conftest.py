"""Shared fixtures: seeded generators, tiny models, synthetic frames in an engine layout.

Triton kernels run under the interpreter when there is no GPU (TRITON_INTERPRET must be set before
triton is first imported, so it is set here, at collection). Tests marked `gpu` skip cleanly
without a CUDA device.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from streamstyle.model.config import preset  # noqa: E402
from streamstyle.model.layout import GBufferLayout, reference_layout  # noqa: E402
from streamstyle.model.network import StreamStyleModel  # noqa: E402
from streamstyle.model.text import TABLE_FORMAT, PromptEncoder  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded from the test's name: fresh per test, reproducible."""
    g = torch.Generator()
    g.manual_seed(zlib.crc32(request.node.nodeid.encode()))  # not hash(): salted per process
    return g


def perturb(model: torch.nn.Module, gen: torch.Generator, scale: float = 0.2) -> torch.nn.Module:
    """Push every parameter away from its initial value so that no path through the network is
    silently inert (a zero-initialised gate would make many tests pass vacuously)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


@pytest.fixture
def tiny_model(gen) -> StreamStyleModel:
    """`tiny` with weights drawn from the test's own generator: its initialisation draws from the
    global generator, which nothing seeds, so each run had other weights and the rounding-level
    comparisons of tests/test_frame_function.py failed on some of them (2 of 5 runs)."""
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        model = StreamStyleModel(preset("tiny"))
    return perturb(model, gen).eval()


def make_frame(layout: GBufferLayout, width: int, height: int, gen: torch.Generator,
               depth: torch.Tensor | None = None, motion: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Random but plausible planes in `layout`'s formats: {channel: [H, W, format components]}."""
    from streamstyle.model.layout import FORMATS

    planes = {}
    for ch in layout.channels:
        dtype, comps, unorm = FORMATS[ch.format]
        shape = (height, width, comps)
        if ch.offset in {c.offset for c in layout.channels if c.name in planes}:
            continue  # shares a plane already made
        if unorm:
            x = torch.randint(0, 256, shape, generator=gen, dtype=torch.int32).to(torch.uint8)
        elif dtype == torch.int32:
            x = torch.randint(0, 40, shape, generator=gen, dtype=torch.int32)
        else:
            x = (torch.rand(shape, generator=gen) * 2.0).to(dtype)
        for c in layout.channels:
            if c.offset == ch.offset:
                planes[c.name] = x
    planes["depth"] = (torch.rand(height, width, 1, generator=gen) * 20 + 1) if depth is None else depth
    planes["motion"] = torch.zeros(height, width, 2, dtype=torch.float16) if motion is None else motion
    planes["normals"] = (torch.rand(height, width, 4, generator=gen) * 2 - 1).to(torch.float16)
    return planes


@pytest.fixture
def frame_factory(gen):
    def factory(width: int, height: int, layout: GBufferLayout | None = None, **kw):
        layout = layout or reference_layout(width, height)
        return make_frame(layout, width, height, gen, **kw)
    return factory


def random_prompt_table(cfg, folder: Path, gen: torch.Generator, device: str = "cpu") -> PromptEncoder:
    """An encoder over a table of three prompts, "a", "b" and "c", of random tokens at the model's
    tokens per prompt (lengths 5, all, 9): prompts that need no text model, so that a test runs the
    same wherever it runs (the GPU machine carries a table of the shipped model's length instead)."""
    n, t = 3, cfg.max_prompt_tokens
    path = Path(folder) / "prompts.safetensors"
    pooled = torch.nn.functional.normalize(torch.randn(n, cfg.text_dim, generator=gen), dim=1)
    save_file({"tokens": (torch.randn(n, t, cfg.text_dim, generator=gen) * 3).half(),
               "lengths": torch.tensor([5, t, 9], dtype=torch.int32), "pooled": pooled},
              str(path), metadata={"format": TABLE_FORMAT, "prompts": json.dumps(["a", "b", "c"]), "max_tokens": str(t)})
    return PromptEncoder(device=device, max_tokens=t, table=path)
