"""The whole network built from one config: the Hybrid DiT and the full-resolution refiner."""

from __future__ import annotations

import torch.nn as nn

from .config import ModelConfig
from .dit import HybridDiT
from .refiner import Refiner


class StreamStyleModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        self.dit = HybridDiT(config)
        self.refiner = Refiner(config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
