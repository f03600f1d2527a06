"""What a model costs per frame at a size: parameters, tokens, FLOPs, bytes, state.

FLOPs count the matrix work (linear layers, convolutions, attention products) as 2 * multiply-adds,
the same rule torch's FlopCounterMode uses; element-wise work is left out. Per step: one DiT forward.
Per frame: `steps` DiT forwards plus what runs once (G-buffer embedding, the full-resolution refiner).

Bytes are a floor, what an ideally fused implementation must move through device memory (bf16
weights and activations): per step the DiT weights once, and per block the residual stream read and
written once, the per-token modulation read once, and the Mix-FFN's expanded activations written and
read once (its depthwise conv needs neighbours); per frame the engine's raw G-buffer planes read
once, the RGBA8 output written once, the decoder's weights, and the temporal state read and written
once. Benchmarks divide measured time by max(FLOPs / matmul rate, bytes / bandwidth).
"""

from __future__ import annotations

from .cache import CacheConfig
from .config import ModelConfig
from .dit import cond_channel_count
from .layout import SEMANTIC_CHANNELS, reference_layout
from .network import StreamStyleModel
from .state import StateSpec

BF16 = 2


def count_parameters(config: ModelConfig) -> dict[str, int]:
    import torch

    with torch.device("meta"):
        model = StreamStyleModel(config)
    return {"dit": sum(p.numel() for p in model.dit.parameters()),
            "refiner": sum(p.numel() for p in model.refiner.parameters())}


def dit_step_flops(config: ModelConfig, width: int, height: int) -> int:
    c = config
    lp, d, hid = c.latent_patch, c.width, c.hidden
    t = (width // c.patch) * (height // c.patch)
    lc = c.context_tokens
    f = 2 * t * d * (c.latent_channels * lp * lp)  # x patch embed
    f += 2 * t * (256 * d + d * d)  # noise-level MLP
    f += 2 * d * c.text_dim  # pooled prompt
    f += 2 * t * d * 6 * d  # shared adaLN-single projection
    block = 2 * t * d * 3 * d  # qkv
    block += 2 * 2 * t * c.heads * c.head_dim * c.head_dim + 2 * t * d  # state update, read-out, normaliser
    block += 2 * t * d * d  # attention out
    block += 2 * 2 * t * d * d + 2 * lc * c.text_dim * 2 * d + 2 * 2 * t * lc * d  # cross-attention
    block += 2 * t * d * 2 * hid + 2 * t * 2 * hid * 9 + 2 * t * hid * d  # Mix-FFN
    f += c.depth * block
    f += 2 * t * d * 2 * d + 2 * t * d * (lp * lp * c.latent_channels)  # final layer
    return f


def frame_once_flops(config: ModelConfig, width: int, height: int) -> int:
    c = config
    t = (width // c.patch) * (height // c.patch)
    n = width * height
    g = 2 * t * c.width * cond_channel_count(c) * c.latent_patch ** 2  # G-buffer embed
    guide = sum(SEMANTIC_CHANNELS[x] for x in c.guide_channels)
    c_in = 3 + guide + 3 + 1 + 2 + 2 + c.id_features + 2 * c.surface_features  # model/refiner.py
    k = c.refiner_width
    passes = 2 * n * k * k * 9 + 2 * n * k * k  # one residual 3x3 + 1x1 pass
    ref = 2 * n * k * c_in * 9 + 2 * n * k * k + c.refiner_depth * passes + 2 * n * k * k * 9 + 2 * n * 4 * k
    return g + ref


def model_info(config: ModelConfig, width: int, height: int, steps: int = 2,
               cache: CacheConfig = CacheConfig()) -> dict:
    c = config
    from .frame import padded_size

    width, height = padded_size(c, width, height)  # what the network runs at (1080 -> 1088)
    params = count_parameters(c)
    tokens = (width // c.patch) * (height // c.patch)
    step_flops = dit_step_flops(c, width, height)
    once_flops = frame_once_flops(c, width, height)
    spec = StateSpec(c, width, height)
    act = tokens * BF16
    block_bytes = act * (2 * c.width + 6 * c.width + 2 * 2 * c.hidden) \
        + 2 * 4 * c.heads * (c.head_dim ** 2 + c.head_dim)
    latent_bytes = 2 * (width // c.latent_stride) * (height // c.latent_stride) * c.latent_channels * BF16
    step_bytes = params["dit"] * BF16 + c.depth * block_bytes + latent_bytes
    frame_io = reference_layout(width, height).slot_bytes(width, height) + 4 * width * height
    # The refiner's inputs and middle layer, written and read once; each residual pass writes its
    # output and the sum, and reads its input twice (the conv and the sum).
    middle = (4 + 4 * c.refiner_depth) * width * height * c.refiner_width * BF16
    once_bytes = frame_io + params["refiner"] * BF16 + 2 * spec.nbytes + middle
    return {
        "preset": c.name,
        "width": width, "height": height, "steps": steps,
        "parameters": params["dit"] + params["refiner"],
        "parameters_dit": params["dit"], "parameters_refiner": params["refiner"],
        "token_stride": c.patch,
        "tokens_per_frame": tokens,
        "latent_size": [width // c.latent_stride, height // c.latent_stride],
        "flops_per_step": step_flops,
        "flops_per_frame": steps * step_flops + once_flops,
        "bytes_per_step": step_bytes,
        "bytes_per_frame": steps * step_bytes + once_bytes,
        "state_bytes_per_session": spec.nbytes,
        "cache_pages_per_session": cache.pages_for(spec.numel),
        "cache_page_bytes": cache.page_bytes,
    }


def format_info(info: dict) -> str:
    def si(x: float, unit: str) -> str:
        for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if x >= scale:
                return f"{x / scale:.2f} {prefix}{unit}"
        return f"{x:.0f} {unit}"

    rows = [
        ("preset", info["preset"]),
        ("frame", f"{info['width']}x{info['height']}, {info['steps']} steps"),
        ("parameters", f"{info['parameters']:,} (DiT {info['parameters_dit']:,}, refiner {info['parameters_refiner']:,})"),
        ("token stride", f"{info['token_stride']} px"),
        ("tokens per frame", f"{info['tokens_per_frame']:,}"),
        ("latent", "x".join(map(str, info["latent_size"]))),
        ("FLOPs per step", si(info["flops_per_step"], "FLOP")),
        ("FLOPs per frame", si(info["flops_per_frame"], "FLOP")),
        ("bytes per step (floor)", si(info["bytes_per_step"], "B")),
        ("bytes per frame (floor)", si(info["bytes_per_frame"], "B")),
        ("state per session", f"{si(info['state_bytes_per_session'], 'B')} in "
                              f"{info['cache_pages_per_session']} pages of {si(info['cache_page_bytes'], 'B')}"),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
