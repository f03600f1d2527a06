"""ReLU linear attention with decayed temporal state. See `reference.py`."""

from .reference import linear_attention, linear_attention_causal

__all__ = ["linear_attention", "linear_attention_causal"]
