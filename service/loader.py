"""Build the service's Stylizer from its config: weights (the given checkpoint, else the shipped
default model, else an untrained preset), device, dtype, prompt encoder, cache."""

from __future__ import annotations

import logging

import torch

from ..model.cache import CacheConfig
from ..model.config import preset
from ..model.errors import ConfigError
from ..model.network import StreamStyleModel
from ..model.stylizer import Stylizer
from ..model.text import PromptEncoder
from ..model.weights import load_weights, shipped_weights
from .config import ServiceConfig, available_cpus

log = logging.getLogger("streamstyle.service")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def set_cpu_threads(config: ServiceConfig) -> int:
    """Sets torch's intra-op thread count for this process from the config (`cpu_threads`, else
    every core the process may use) and returns the count torch then reports. The service calls
    it at start-up; OMP_NUM_THREADS is not consulted, since torch's own default (the machine's
    physical cores) ignores a container's or taskset's limits and oversubscribes them."""
    torch.set_num_threads(config.threads)
    threads = torch.get_num_threads()
    log.info("CPU threads: %d (cpu_threads = %d, %d cores available)", threads, config.cpu_threads,
             available_cpus())
    return threads


def build_stylizer(config: ServiceConfig, prompts: bool = True) -> tuple[Stylizer, bool]:
    """Returns the stylizer and whether its weights are trained (loaded from a checkpoint)."""
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no CUDA device is available")
    weights = config.weights
    if not weights and config.preset is None and shipped_weights() is not None:
        weights = str(shipped_weights())  # the trained default model, unless a preset was asked for
    if weights:
        model = load_weights(weights, device=device)
        trained = True
    else:
        torch.manual_seed(config.seed)
        model = StreamStyleModel(preset(config.preset or "default")).to(device).eval()
        trained = False
    dtype = config.dtype
    if dtype == "auto":
        dtype = "bf16" if device.type == "cuda" else "fp32"
    if dtype == "fp8":
        from ..model.fp8 import scaled_mm_available, to_fp8

        if not scaled_mm_available(device):
            log.warning("dtype fp8: this device has no FP8 matrix units; the FP8 layers run emulated (slow)")
        model = to_fp8(model.to(torch.bfloat16))
    else:
        model = model.to(DTYPES[dtype])
    encoder = PromptEncoder(device=device, max_tokens=model.config.max_prompt_tokens) if prompts else None
    cache = CacheConfig(num_pages=config.cache_pages, page_elems=config.cache_page_elems,
                        evict_idle_after_s=config.evict_idle_after_s)
    stylizer = Stylizer(model, encoder, cache=cache, device=device, cuda_graphs=config.cuda_graphs)
    warm_up(stylizer)
    return stylizer, trained


def warm_up(stylizer: Stylizer) -> None:
    """One small frame through the whole path, so the first client frame pays no lazy start-up
    (kernel selection, allocator growth), and a prompt blend's arithmetic once, so that a session's
    first prompt switch does not either; then every trace of it is closed."""
    from ..model.layout import reference_layout

    size = stylizer.config.patch * 4
    layout = reference_layout(size, size)
    session = stylizer.open_session(size, size, layout)
    try:
        slot = torch.zeros(layout.slot_bytes(size, size), dtype=torch.uint8, device=stylizer.device)
        layout.view(slot, size, size)["depth"].fill_(10.0)
        stylizer.step(session, slot)
        if stylizer.prompts is not None:
            stylizer.prompts.warm_up(stylizer.config.max_prompts, stylizer.config.max_prompt_tokens)
        stylizer.sync()
    finally:
        stylizer.close_session(session)
