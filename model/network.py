"""The whole network built from one config: the Hybrid DiT and the guided decoder."""

from __future__ import annotations

import torch.nn as nn

from .config import ModelConfig
from .decoder import GuidedDecoder
from .dit import HybridDiT


class StreamStyleModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        self.dit = HybridDiT(config)
        self.decoder = GuidedDecoder(config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
