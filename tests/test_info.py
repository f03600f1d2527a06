"""model-info's analytic counts against what torch actually runs."""

import json
import subprocess
import sys

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from streamstyle.model.config import preset
from streamstyle.model.frame import FrameParams, stylize_frame
from streamstyle.model.info import dit_step_flops, frame_once_flops, model_info
from streamstyle.model.layout import reference_layout
from streamstyle.model.network import StreamStyleModel
from streamstyle.model.state import StateSpec
from streamstyle.model.stylizer import null_context


@pytest.mark.parametrize("w, h, steps", [(64, 64, 1), (96, 48, 3)])
def test_flop_count_matches_torch_flop_counter(frame_factory, gen, w, h, steps):
    model = StreamStyleModel(preset("tiny")).eval()
    cfg = model.config
    layout = reference_layout(w, h)
    planes = {k: v.unsqueeze(0) for k, v in frame_factory(w, h, layout).items()}
    state = StateSpec(cfg, w, h).zeros()
    noise = torch.randn(state.latent.shape, generator=gen)
    ctx = null_context(model, torch.device("cpu"))
    # The math backend spells attention out as matrix products, which the counter sees on every
    # device (the fused CPU kernel is not counted).
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        stylize_frame(model, layout, planes, w, h, ctx, state, noise, FrameParams(steps=steps))
    measured = counter.get_total_flops()
    predicted = steps * dit_step_flops(cfg, w, h) + frame_once_flops(cfg, w, h)
    assert abs(predicted - measured) / measured < 0.03, (predicted, measured)


def test_info_scales_with_size_and_state_is_constant_in_time():
    small = model_info(preset("default"), 1280, 720)
    big = model_info(preset("default"), 1920, 1088)
    assert small["tokens_per_frame"] == 80 * 45 and big["tokens_per_frame"] == 120 * 68
    assert big["flops_per_frame"] > 2 * small["flops_per_frame"]
    assert small["parameters"] == big["parameters"]
    assert small["state_bytes_per_session"] < big["state_bytes_per_session"]


def test_model_info_command_in_a_real_process():
    out = subprocess.run([sys.executable, "-m", "streamstyle", "model-info", "--preset", "tiny",
                          "--size", "64x48", "--size", "720p", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    infos = json.loads(out.stdout)
    assert [(i["width"], i["height"]) for i in infos] == [(64, 48), (1280, 720)]
    bad = subprocess.run([sys.executable, "-m", "streamstyle", "model-info", "--preset", "huge"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "[bad_config]: unknown preset 'huge'" in bad.stderr
