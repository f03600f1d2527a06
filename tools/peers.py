"""Peers for `streamstyle bench --peers`, timed on the same card with random weights (speed does
not depend on the weights' values): the `peers` extra installs diffusers.

- StreamDiffusion's setup: SD-turbo's UNet (Stable Diffusion 2.1's architecture) and TAESD, 512x512,
  one step from the noised input, the whole step captured in one CUDA graph as StreamDiffusion does
  (fp16).
- SANA's setup: the 600M linear DiT (28 blocks, width 1152) and DC-AE (32x down, 32 channels) at our
  frame size, 1 and 2 flow steps, bf16; the DiT steps and the decode are also reported apart.

`scale="tiny"` builds the same architectures a few channels wide, for tests on the CPU.
"""

from __future__ import annotations

import statistics
from typing import Callable

import torch

from .bench import Timer, pct


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise RuntimeError("--peers needs diffusers: pip install 'streamstyle[peers]'") from None
    diffusers.utils.logging.set_verbosity_error()  # random weights: no advice about loading dtypes
    return diffusers


def sd_turbo_unet(scale: str):
    d = _diffusers()
    if scale == "tiny":
        return d.UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                      cross_attention_dim=32, attention_head_dim=(2, 4), norm_num_groups=8,
                                      use_linear_projection=True)
    return d.UNet2DConditionModel(  # stabilityai/sd-turbo: the SD 2.1 UNet
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)


def taesd(scale: str):
    d = _diffusers()
    if scale == "tiny":
        return d.AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8))
    return d.AutoencoderTiny()  # madebyollin/taesd: the defaults


def sana_600m(scale: str):
    d = _diffusers()
    if scale == "tiny":
        return d.SanaTransformer2DModel(num_attention_heads=2, attention_head_dim=8, num_layers=2,
                                        num_cross_attention_heads=2, cross_attention_head_dim=8,
                                        cross_attention_dim=16, caption_channels=32, sample_size=8)
    return d.SanaTransformer2DModel(  # Efficient-Large-Model/Sana_600M_1024px
        in_channels=32, out_channels=32, num_attention_heads=36, attention_head_dim=32, num_layers=28,
        num_cross_attention_heads=16, cross_attention_head_dim=72, cross_attention_dim=1152,
        caption_channels=2304, mlp_ratio=2.5, sample_size=32, patch_size=1)


def dc_ae(scale: str):
    d = _diffusers()
    blocks = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3
    if scale == "tiny":
        return d.AutoencoderDC(latent_channels=32, attention_head_dim=8, encoder_block_types=blocks,
                               decoder_block_types=blocks, encoder_block_out_channels=(8, 8, 8, 8, 32, 32),
                               decoder_block_out_channels=(8, 8, 8, 8, 32, 32),
                               encoder_layers_per_block=(1, 1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1, 1),
                               upsample_block_type="interpolate", downsample_block_type="Conv")
    return d.AutoencoderDC(  # mit-han-lab/dc-ae-f32c32-sana-1.0
        in_channels=3, latent_channels=32, attention_head_dim=32, encoder_block_types=blocks,
        decoder_block_types=blocks, encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
        decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
        encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
        encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        upsample_block_type="interpolate", downsample_block_type="Conv", decoder_norm_types="rms_norm",
        decoder_act_fns="silu", scaling_factor=0.41407)


def _time(fn: Callable[[], object], device: torch.device, reps: int) -> tuple[float, float]:
    timer = Timer(device)
    for _ in range(3):
        fn()
    times = sorted(timer(fn) for _ in range(reps))
    return statistics.median(times), pct(times, 0.99)


@torch.no_grad()
def stream_diffusion(device: torch.device, scale: str = "full", reps: int = 50) -> dict:
    """SD-turbo UNet + TAESD at 512x512 (tiny: 64x64), one step, as one CUDA graph on a GPU."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    with torch.device(device):  # random init on the card itself: seconds, not a minute of host time
        unet, vae = sd_turbo_unet(scale).to(device, dtype).eval(), taesd(scale).to(device, dtype).eval()
    size = 512 if scale == "full" else 64
    lat = torch.randn(1, 4, size // 8, size // 8, device=device, dtype=dtype)
    ctx = torch.randn(1, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    t = torch.tensor([999], device=device)
    alpha, sigma = 0.0047, 0.9976  # the scheduler's coefficients at the one timestep, constants in the graph
    out = {}

    def step():
        eps = unet(lat, t, encoder_hidden_states=ctx, return_dict=False)[0]
        x0 = (lat - sigma * eps) / alpha
        out["img"] = vae.decode(x0, return_dict=False)[0]

    fn = step
    if device.type == "cuda":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        fn = graph.replay
    p50, p99 = _time(fn, device, reps)
    assert out["img"].shape[-2:] == (size, size)
    graphed = ", graph" if device.type == "cuda" else ""
    return {"peer": f"StreamDiffusion (SD-turbo UNet + TAESD{graphed})", "size": f"{size}x{size}", "steps": 1,
            "p50_ms": p50, "p99_ms": p99}


@torch.no_grad()
def sana(device: torch.device, w: int, h: int, scale: str = "full", reps: int = 20) -> list[dict]:
    """SANA 600M + DC-AE at w x h (multiples of 32): 1 and 2 Euler steps and the decode, timed apart
    and together, eager (bf16 on a GPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        dit, vae = sana_600m(scale).to(device, dtype).eval(), dc_ae(scale).to(device, dtype).eval()
    lat = torch.randn(1, 32, h // 32, w // 32, device=device, dtype=dtype)
    ctx = torch.randn(1, 300, dit.config.caption_channels, device=device, dtype=dtype)
    name = f"SANA ({'600M DiT' if scale == 'full' else 'tiny DiT'} + DC-AE)"

    def steps(k):
        def run():
            x = lat
            for i in range(k):
                t = torch.full((1,), 1000.0 * (1 - i / k), device=device)
                v = dit(x, encoder_hidden_states=ctx, timestep=t, return_dict=False)[0]
                x = x - v / k
            return x
        return run

    decode = lambda: vae.decode(lat, return_dict=False)[0]  # noqa: E731
    rows = []
    dec50, dec99 = _time(decode, device, reps)
    rows.append({"peer": f"{name}: DC-AE decode", "size": f"{w}x{h}", "steps": 0, "p50_ms": dec50, "p99_ms": dec99})
    for k in (1, 2):
        p50, p99 = _time(steps(k), device, reps)
        rows.append({"peer": f"{name}: DiT only", "size": f"{w}x{h}", "steps": k, "p50_ms": p50, "p99_ms": p99})
        both50, both99 = _time(lambda k=k: vae.decode(steps(k)(), return_dict=False)[0], device, reps)
        rows.append({"peer": name, "size": f"{w}x{h}", "steps": k, "p50_ms": both50, "p99_ms": both99})
    return rows


def run_peers(device: torch.device, sizes: list[tuple[int, int]], scale: str = "full", log=print,
              max_pixels: int = 1920 * 1088) -> list[dict]:
    """StreamDiffusion once, SANA at each size up to `max_pixels` (DC-AE's activations beyond 1080p
    take tens of GiB). Sizes are rounded up to multiples of 32 for SANA's latent."""
    rows = [stream_diffusion(device, scale)]
    log(str(rows[-1]))
    for w, h in sizes:
        if w * h > max_pixels:
            log(f"SANA skipped at {w}x{h}: over {max_pixels} pixels")
            continue
        w32, h32 = -(-w // 32) * 32, -(-h // 32) * 32
        for row in sana(device, w32, h32, scale):
            rows.append(row)
            log(str(row))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows
