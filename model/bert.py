"""The prompt encoder's network: a BERT encoder (all-MiniLM-L6-v2: 6 layers, width 384, 12 heads)
in plain torch, with its WordPiece tokenizer from `tokenizers`.

It computes what transformers' `BertModel(...).last_hidden_state` computes for one sentence
(absolute positions, token type 0, post-norm layers, exact GELU; tests/test_text.py pins the two to
1e-5), so the service needs neither transformers nor its import chain (about 2 s of start-up).
Weights are read from the model folder's `model.safetensors` (any float dtype, computed in float32);
a folder with only `pytorch_model.bin` is read with `torch.load(weights_only=True)`, never as
arbitrary pickle. Every tensor the network needs must be there, and nothing else but the pooler.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PromptError

# Checkpoint names (transformers' BertModel) -> ours, per layer; `pooler.*` is unused.
_LAYER_NAMES = {
    "attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
    "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn_in", "output.dense": "ffn_out", "output.LayerNorm": "ffn_norm",
}
_EMBEDDING_NAMES = {
    "embeddings.word_embeddings": "word", "embeddings.position_embeddings": "position",
    "embeddings.token_type_embeddings": "token_type", "embeddings.LayerNorm": "emb_norm",
}


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_file(cls, path: Path) -> "BertConfig":
        """The model folder's config.json (transformers' format). Raises PromptError for a model
        this network does not compute (another architecture, activation or position scheme)."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise PromptError(f"cannot read the text model's config {path}: {exc}") from None
        for key, want in (("model_type", "bert"), ("hidden_act", "gelu"), ("position_embedding_type", "absolute")):
            if raw.get(key, want) != want:
                raise PromptError(f"the text model {path.parent} has {key} {raw.get(key)!r}; this encoder "
                                  f"computes {want!r} only")
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


class _Layer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.heads = cfg.num_attention_heads
        self.q, self.k, self.v, self.attn_out = (nn.Linear(d, d) for _ in range(4))
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.ffn_in = nn.Linear(d, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, d)
        self.ffn_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x [B, L, D]; keep [B, 1, 1, L] bool (True: a real token that may be attended to)."""
        b, n, d = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))  # [B, H, L, Dh]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=1.0 / math.sqrt(d // self.heads))
        x = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(b, n, d)))
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))


class BertEncoder(nn.Module):
    """Token ids -> last hidden states, as BertModel computes them (inference only)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        d = cfg.hidden_size
        self.word = nn.Embedding(cfg.vocab_size, d)
        self.position = nn.Embedding(cfg.max_position_embeddings, d)
        self.token_type = nn.Embedding(cfg.type_vocab_size, d)
        self.emb_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids [B, L] int64, mask [B, L] (1 on real tokens, 0 on padding) -> states [B, L, D] float32."""
        n = ids.shape[1]
        x = self.word(ids) + self.position.weight[:n] + self.token_type.weight[0]
        x = self.emb_norm(x)
        keep = mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, keep)
        return x


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    st, pt = folder / "model.safetensors", folder / "pytorch_model.bin"
    try:
        if st.exists():
            from safetensors.torch import load_file

            return load_file(str(st))
        if pt.exists():
            return torch.load(pt, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors' and torch's error types vary by version
        raise PromptError(f"cannot read the text model's weights in {folder}: {exc}") from None
    raise PromptError(f"the text model folder {folder} has no model.safetensors")


def _rename(name: str) -> str | None:
    """A checkpoint tensor's name in BertEncoder, or None for one it does not use."""
    name = name.removeprefix("bert.")
    if name.startswith("pooler.") or name == "embeddings.position_ids":
        return None
    module, _, param = name.rpartition(".")
    if module in _EMBEDDING_NAMES:
        return f"{_EMBEDDING_NAMES[module]}.{param}"
    parts = module.split(".", 3)  # encoder, layer, i, rest
    if len(parts) == 4 and parts[:2] == ["encoder", "layer"] and parts[3] in _LAYER_NAMES:
        return f"layers.{parts[2]}.{_LAYER_NAMES[parts[3]]}.{param}"
    return name  # not ours: load_state_dict names it as unexpected


def load_encoder(folder: str | Path, device: torch.device) -> BertEncoder:
    """The BERT encoder of a model folder (config.json + weights), in float32 on `device`, eval mode.
    Raises PromptError if the folder is unreadable or its tensors do not fit the config exactly."""
    folder = Path(folder)
    model = BertEncoder(BertConfig.from_file(folder / "config.json"))
    state = {}
    for name, tensor in _read_tensors(folder).items():
        ours = _rename(name)
        if ours is not None:
            state[ours] = tensor.float()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        why = " ".join(str(exc).split())  # torch's message spans lines
        raise PromptError(f"the text model's weights in {folder} do not fit its config: {why}") from None
    return model.to(device).eval().requires_grad_(False)


class WordPiece:
    """all-MiniLM-L6-v2's tokenizer (its tokenizer.json): [CLS] text [SEP], truncated and padded
    to `max_tokens`, as transformers' fast tokenizer does with padding="max_length"."""

    def __init__(self, folder: str | Path, max_tokens: int):
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise PromptError(f"the prompt encoder needs tokenizers: {exc}") from None
        path = Path(folder) / "tokenizer.json"
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception
            raise PromptError(f"cannot read the text model's tokenizer {path}: {exc}") from None
        pad = self._tok.token_to_id("[PAD]")
        self._tok.enable_truncation(max_length=max_tokens)
        self._tok.enable_padding(length=max_tokens, pad_id=0 if pad is None else pad, pad_token="[PAD]")

    def __call__(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [1, max_tokens] int64 and mask [1, max_tokens] int64 of one prompt."""
        enc = self._tok.encode(text)
        return torch.tensor([enc.ids]), torch.tensor([enc.attention_mask])
