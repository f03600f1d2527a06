"""The one switch that picks each op's implementation: the PyTorch reference or a Triton kernel.

`auto` (the default) takes the Triton kernel for CUDA tensors when Triton imports and the op can
take the shapes, and the reference otherwise: always on the CPU, and whenever gradients are needed
(the kernels have no backward; training runs the reference). When `auto` cannot use a kernel it
would have used on a GPU it says so once, loudly, rather than running slow in silence.
`reference` and `triton` force a choice (tests and benchmarks compare the two).
"""

from __future__ import annotations

import functools
import warnings

import torch

_BACKEND = "auto"
CHOICES = ("auto", "reference", "triton")


def set_backend(name: str) -> None:
    global _BACKEND
    if name not in CHOICES:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(CHOICES)}")
    _BACKEND = name


def get_backend() -> str:
    return _BACKEND


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _warn_once(op: str, why: str) -> None:
    warnings.warn(f"kernels: {op} runs its PyTorch reference on the GPU because {why}", RuntimeWarning,
                  stacklevel=3)


def use_triton(op: str, tensors: tuple[torch.Tensor, ...], unsupported) -> bool:
    """Whether `op` should run its Triton kernel on these inputs. `unsupported()` returns None when
    the kernel can take them, else the reason it cannot; it is called only where Triton is
    installed (it may import the kernel module)."""
    if _BACKEND == "reference":
        return False
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if _BACKEND == "triton":
        if not triton_available():
            raise RuntimeError(f"kernels: backend 'triton' was asked for {op}, but Triton is not installed")
        supported = unsupported()
        if supported is not None or needs_grad:
            raise RuntimeError(f"kernels: backend 'triton' cannot run {op}: {supported or 'gradients are needed'}")
        return True
    on_gpu = all(t.is_cuda for t in tensors)
    if not on_gpu or needs_grad:
        return False
    if not triton_available():
        _warn_once(op, "Triton is not installed")
        return False
    supported = unsupported()
    if supported is not None:
        _warn_once(op, supported)
        return False
    return True
