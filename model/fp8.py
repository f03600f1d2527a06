"""FP8 (e4m3) weights and activations for the transformer blocks' matrix products.

`to_fp8(model)` replaces the token-wise linear layers of every Hybrid block (linear-attention qkv
and output, cross-attention query and output, Mix-FFN expand and project: nearly all of the FLOPs)
with `Fp8Linear`: the weight is quantized once, one scale per output row; the activation is
quantized per frame, one scale per token row, on the device (no host sync, so it captures into a
CUDA graph). On a GPU with FP8 tensor cores (compute capability 8.9+: Ada, Hopper) the product is
`torch._scaled_mm` with row-wise scales into bf16; elsewhere the same quantized values are
multiplied in float32, so the CPU shows exactly the quantization error the GPU path has (up to
accumulation order). Everything else (embeddings, adaLN, norms, the decoder, the state) stays in
the model's dtype.

Meant for the `large` preset, where the blocks' GEMMs dominate; the quality cost against bf16 is
measured by `streamstyle bench --dtype fp8` (relative error of a frame against float32).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from ..kernels.quantize import FP8, FP8_MAX, quantize_rows  # noqa: F401  (FP8, FP8_MAX: re-exported)


def scaled_mm_available(device: torch.device) -> bool:
    return (device.type == "cuda" and hasattr(torch, "_scaled_mm")
            and torch.cuda.get_device_capability(device) >= (8, 9))


class Fp8Linear(nn.Module):
    """A linear layer with float8 weights (row-wise scales) and float8 activations (per-token
    scales). Inference only."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", q.contiguous())  # [N, K]
        self.register_buffer("weight_scale", scale.view(1, -1).contiguous())  # [1, N]
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.out_dtype = linear.weight.dtype if linear.weight.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        self.fused_bias = True  # the bias added by the FP8 GEMM's epilogue (off if refused)
        self.fast = (self.in_features % 16 == 0 and self.out_features % 16 == 0
                     and scaled_mm_available(linear.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        # Row-major activations: an input produced from transposed views (the Mix-FFN's gate is)
        # reshapes to a column-major matrix, elementwise ops keep that layout, and cuBLASLt's FP8
        # product takes only row-major A with column-major B.
        a = x.reshape(-1, self.in_features).contiguous()
        qa, sa = quantize_rows(a)  # one Triton pass on a GPU
        out = None
        if self.fast and a.is_cuda:
            bias = self.bias if self.fused_bias and self.bias is not None and self.bias.dtype == self.out_dtype else None
            try:
                out = torch._scaled_mm(qa, self.weight_fp8.t(), scale_a=sa, scale_b=self.weight_scale, bias=bias,
                                       out_dtype=self.out_dtype)
                if bias is not None:
                    return out.to(x.dtype).reshape(*shape[:-1], self.out_features)
            except RuntimeError as exc:  # e.g. an FP8 GEMM the installed torch does not offer
                if bias is not None:  # try again without the fused bias before giving up on FP8
                    self.fused_bias = False
                    return self.forward(x)
                self.fast = False
                warnings.warn(f"fp8: torch._scaled_mm refused row-wise scales ({exc}); this layer now runs "
                              "the emulated FP8 product (correct, not fast)", RuntimeWarning, stacklevel=2)
        if out is None:  # the same quantized operands, multiplied in float32
            out = (qa.float() * sa) @ (self.weight_fp8.float() * self.weight_scale.t()).t()
        out = out.to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, scaled_mm={self.fast}"


BLOCK_LINEARS = (("attn", "qkv"), ("attn", "proj"), ("cross", "q"), ("cross", "proj"), ("ffn", "expand"),
                 ("ffn", "project"))


@torch.no_grad()
def to_fp8(model: nn.Module) -> nn.Module:
    """Swap the blocks' linear layers for `Fp8Linear`, in place; returns the model. Run after the
    model is on its device and in its dtype (bf16 on a GPU). Idempotent."""
    for block in model.dit.blocks:
        for parent, name in BLOCK_LINEARS:
            owner = getattr(block, parent)
            layer = getattr(owner, name)
            if isinstance(layer, nn.Linear):
                setattr(owner, name, Fp8Linear(layer))
    model.fp8 = True
    return model
