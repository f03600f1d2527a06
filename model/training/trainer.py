"""`streamstyle train`: the training loop.

AdamW with warm-up and cosine decay, gradient clipping, bf16 autocast on a GPU, an EMA of the
weights (what ships), a tqdm bar with loss and throughput, and `metrics.jsonl` in the output folder.

Checkpoints (every `checkpoint_every` steps, at the end, and at the step boundary where `run` is
told to stop) hold `model.safetensors` + `config.json` (the EMA weights: a loadable model on their
own), `raw.safetensors` (the trained weights), `optimizer.safetensors` and `train_state.json` (step
and settings, the global batch among them). Resuming from a folder with all of them continues the
run exactly: every step's data and noise are a function of (seed, step), whatever the number of
processes (the global batch must stay the same). A folder with the weights alone is enough too:
the optimizer then starts afresh.

Data-parallel (`distributed.Ranks`, under torchrun or `streamstyle train --nproc N`): each rank
renders and trains on its share of every step's global batch through DistributedDataParallel,
which averages the gradients; every rank keeps the same optimizer state. Rank 0 alone keeps the
EMA, writes metrics.jsonl and checkpoints and shows the progress bar; the others wait at a barrier
while it writes. Stops (signal, time limit, `stop_after`) are agreed by all ranks at a step boundary.
A checkpoint holds the bare model's weights, never the wrapper's, so it loads with any number of
processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from ..config import preset
from ...interop.limits import MAX_STEPS, MIN_STEPS
from ..errors import ConfigError
from ..network import StreamStyleModel
from ..stylizer import null_context
from ..weights import load_weights, save_weights
from .data import CaptureClips, ClipBank, MixedClips, ReferenceClips
from .distributed import Ranks, agree, barrier, mean_over_ranks
from .objective import ObjectiveConfig, StepRandomness, batch_loss


@dataclass(frozen=True)
class TrainConfig:
    out: str = "runs/default"
    preset: str = "default"
    init: str | None = None  # start from these weights (fine-tuning)
    resume: str | None = None  # continue the run saved in this folder
    device: str = "cpu"
    precision: str = "auto"  # auto: bf16 autocast on a GPU, fp32 on the CPU
    size: int = 256
    frames: int = 4  # frames per clip
    batch: int = 4  # clips per step
    steps: int = 2000
    lr: float = 3e-4
    refiner_lr_scale: float = 1.0  # the refiner's learning rate over `lr`
    freeze_dit: bool = False  # train the refiner alone on what the frozen DiT produces (`dit_latents`)
    # with freeze_dit: the share of a step's clips whose refiner input is the oracle's own latent
    # instead of the frozen DiT's (drawn per clip and step from the run's seed), so that the refiner
    # learns to use a good latent as well as to correct the DiT's
    exact_latents: float = 0.0
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.999
    seed: int = 0
    styles: str = "all"
    pool: int = 0  # > 0: cycle through this many distinct clips (tests, overfitting checks)
    data: tuple[str, ...] = ()  # capture folders to train on as well
    reference_weight: float = 1.0  # share of clips from the reference engine when `data` is given
    allow_eval_scenes: bool = False  # True: captures of the real-scene evaluation split may be trained on
    checkpoint_every: int = 500
    bank: int = 0  # > 0: draw reference clips from this many rendered shots (see ClipBank)
    refresh: int = 4  # with a bank: one new shot every this many clips drawn
    workers: int = 0  # with a bank: render shots in this many background processes
    distill: float = 0.25  # the last share of the steps runs the few-step sampler (1, 2, 4 steps)
    sampler_steps: tuple[int, ...] = (1, 2, 4)
    time_limit: float = 0.0  # > 0: checkpoint and stop after this many seconds (resume continues)
    stop_after: int = 0  # > 0: checkpoint and stop after this many steps of the schedule (resume continues)
    # with time_limit: once this invocation has run FIT_AFTER steps, `steps` (the cosine's length)
    # becomes the step it is at plus as many as the rest of the time limit holds at the pace of
    # those steps, so that the rate reaches its floor as the time runs out on a host of any speed
    # (the fitted length is saved with the run; a resume keeps it unless --steps is given)
    fit_steps: bool = False
    prompts: bool = True  # False: every clip uses the empty prompt (no text encoder needed)
    # True: the DiT's blocks (when it learns) and the refiner run through torch.compile
    # (`compile_for_training`): the same arithmetic in fewer, fused kernels
    compile: bool = False
    # None: the model's own; a number: the refiner's residual middle passes (ModelConfig.refiner_depth),
    # for a fresh model or one grown from `init` (the passes it adds start as the identity)
    refiner_depth: int | None = None
    # None: the model's own; a number: the rank of the refiner's per-style object colours
    # (ModelConfig.id_colours), for a fresh model or one grown from `init` (they start at zero)
    id_colours: int | None = None
    # above 0: the objective's token-grid term at this weight (`losses.grid_loss`; the CLI's --grid-weight)
    grid_weight: float = 0.0
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def validate(self, world: int = 1) -> "TrainConfig":
        """Checks the settings, for a run of `world` processes (the global batch must split evenly)."""
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError("precision must be auto, bf16 or fp32")
        for name in ("size", "frames", "batch", "steps", "checkpoint_every", "refresh"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.workers < 0 or (self.workers and not self.bank):
            raise ConfigError("workers render shots for the clip bank: give bank > 0 with workers")
        if self.bank < 0:
            raise ConfigError("bank must be 0 (off) or a number of shots")
        if not (self.grid_weight >= 0 and math.isfinite(self.grid_weight)):
            raise ConfigError(f"grid_weight must be a finite number, 0 or more, got {self.grid_weight}")
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError("distill is the share of steps in few-step mode: from 0 to 1")
        if not self.sampler_steps or any(not MIN_STEPS <= k <= MAX_STEPS for k in self.sampler_steps):
            raise ConfigError(f"sampler_steps must name step counts from {MIN_STEPS} to {MAX_STEPS}")
        if not 0.0 <= self.exact_latents <= 1.0 or (self.exact_latents and not self.freeze_dit):
            raise ConfigError("exact_latents is the share (0 to 1) of clips given the oracle's latent instead of "
                              "the frozen DiT's: it needs freeze_dit")
        if self.refiner_depth is not None and (isinstance(self.refiner_depth, bool)
                                               or not isinstance(self.refiner_depth, int) or self.refiner_depth < 0):
            raise ConfigError(f"refiner_depth must be a non-negative integer, got {self.refiner_depth!r}")
        if self.id_colours is not None and (isinstance(self.id_colours, bool)
                                            or not isinstance(self.id_colours, int) or self.id_colours < 0):
            raise ConfigError(f"id_colours must be a non-negative integer, got {self.id_colours!r}")
        if self.init and (self.refiner_depth is not None or self.id_colours is not None):
            from ..weights import read_config

            had = read_config(self.init)
            if self.refiner_depth is not None and self.refiner_depth < had.refiner_depth:
                raise ConfigError(f"{self.init} has {had.refiner_depth} residual refiner passes: a refiner_depth of "
                                  f"{self.refiner_depth} would drop trained ones (give {had.refiner_depth} or more)")
            if self.id_colours is not None and had.id_colours and self.id_colours != had.id_colours:
                raise ConfigError(f"{self.init} has object colours of rank {had.id_colours}: an id_colours of "
                                  f"{self.id_colours} would drop them (give {had.id_colours})")
        if self.fit_steps and self.time_limit <= 0:
            raise ConfigError("fit_steps fits the schedule's length to the time limit: give time_limit too")
        if self.freeze_dit and not self.pool:
            raise ConfigError("freeze_dit trains the refiner on the frozen DiT's latents, computed once per clip of "
                              "a fixed pool: give pool > 0 (a number of clips)")
        Ranks(world=world, local_world=world).check_batch(self.batch)
        batch = saved_batch(self.resume) if self.resume else None
        if batch is not None and batch != self.batch:
            raise ConfigError(f"{self.resume} is a run with a global batch of {batch} clips, and this one has "
                              f"{self.batch}: resume with --batch {batch} (any number of processes), or "
                              f"start a new run from its weights with --init")
        return self

    @property
    def model_changes(self) -> dict:
        """The model config's fields this run sets (`refiner_depth`, `id_colours`): a fresh
        model's, or those a model grown from `init` gets (what they add starts fresh)."""
        return {k: getattr(self, k) for k in ("refiner_depth", "id_colours") if getattr(self, k) is not None}

    @property
    def distill_from(self) -> int:
        """The first step of the few-step phase."""
        return self.steps - int(round(self.steps * self.distill))


def _lr(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# The schedule's fit (TrainConfig.fit_steps): the pace is measured over this invocation's steps
# FIT_SKIP to FIT_AFTER (its first steps fill the clip bank and warm the kernels up).
FIT_SKIP, FIT_AFTER = 2, 10


def fitted_steps(step: int, seconds_per_step: float, seconds_left: float) -> int:
    """The schedule's length that ends as the time runs out: `step`, where the run is, plus the
    whole steps `seconds_left` holds at `seconds_per_step` (at least one more)."""
    if not seconds_per_step > 0:
        raise ValueError(f"the pace must be a positive number of seconds a step, got {seconds_per_step}")
    return step + max(1, int(max(0.0, seconds_left) / seconds_per_step))


def saved_batch(folder: str | Path) -> int | None:
    """The global batch of the run checkpointed in `folder` (None: no training state there)."""
    state_file = Path(folder) / "train_state.json"
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    batch = state.get("batch", state.get("config", {}).get("batch"))
    return None if batch is None else int(batch)


# What a resumed run takes from its command line rather than from its saved settings: where and how
# long this invocation runs. Everything else (what the run learns from and how) is the saved run's.
RESUME_PER_INVOCATION = frozenset({"resume", "device", "time_limit", "stop_after", "compile", "fit_steps"})
# Saved settings a resume may change when the command line names them: how far the schedule goes,
# how often it checkpoints, where it writes, how many processes render its shots.
RESUME_MAY_CHANGE = frozenset({"out", "steps", "checkpoint_every", "workers"})


def _saved_value(default, value):
    """A setting read back from train_state.json (JSON lists, nested objects) as `default`'s type."""
    if dataclasses.is_dataclass(default) and isinstance(value, dict):
        names = {f.name for f in dataclasses.fields(default)}
        return dataclasses.replace(default, **{k: _saved_value(getattr(default, k), v)
                                               for k, v in value.items() if k in names})
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def resumed_config(cfg: TrainConfig, given: "set[str] | frozenset[str]" = frozenset()) -> TrainConfig:
    """The settings a run resumed from `cfg.resume` continues with: the saved run's own (its
    train_state.json), so that `--resume FOLDER` alone continues the same run. `given` names the
    settings the command line gave (TrainConfig field names); of those, `RESUME_PER_INVOCATION`
    always come from `cfg`, `RESUME_MAY_CHANGE` replace the saved value, and any other must equal the
    saved one. `out` stays the resumed folder unless given. A folder with weights alone (no
    train_state.json) has no saved settings: `cfg` is returned as it is. Raises ConfigError for a
    given setting that would change what the run learns (its lr, pool, freeze_dit, ...)."""
    state_file = Path(cfg.resume) / "train_state.json" if cfg.resume else None
    if state_file is None or not state_file.exists():
        return cfg
    saved = json.loads(state_file.read_text()).get("config") or {}
    values = {}
    for f in dataclasses.fields(TrainConfig):
        mine = getattr(cfg, f.name)
        if f.name in RESUME_PER_INVOCATION or f.name not in saved:
            values[f.name] = mine
            continue
        theirs = _saved_value(mine, saved[f.name])
        if f.name == "out":
            values[f.name] = mine if f.name in given else cfg.resume
        elif f.name == "batch":  # `validate` compares it with the saved global batch (any process count)
            values[f.name] = mine if f.name in given else theirs
        elif f.name not in given:
            values[f.name] = theirs
        elif mine != theirs and f.name not in RESUME_MAY_CHANGE:
            option = "--" + f.name.replace("_", "-")
            raise ConfigError(f"{option} {mine} differs from the resumed run's {theirs} ({cfg.resume}): a resumed "
                              f"run continues with its own settings; leave {option} out, or start a new run "
                              f"from its weights with --init {cfg.resume}")
        else:
            values[f.name] = mine
    return TrainConfig(**values)


def compile_for_training(model: StreamStyleModel, dit: bool = True) -> None:
    """Run the parts of `model` that training differentiates through torch.compile, in place: each
    DiT block (with `dit`; the twelve share one compiled graph, their weights its inputs) and the
    refiner. With gradients the kernels' reference paths run (kernels/backend.py), some 60,000
    small kernel launches a few-step training step; compiling fuses the blocks' and the refiner's,
    with the same arithmetic up to the fused kernels' rounding (tested). Measured on an H200
    (benchmarks/NOTES.md v0.14): 3% off the step and 22% off its peak memory, so what it buys is
    room for a larger batch; the first step pays the compilation (about a minute). A frozen DiT is
    left as it is: it runs without gradients, through the Triton kernels."""
    if dit:
        for block in model.dit.blocks:
            block.compile()
    model.refiner.compile()


class _BatchLoss(torch.nn.Module):
    """`batch_loss` as a module's forward: DistributedDataParallel averages gradients only for work
    done inside its wrapped module's forward. The model is the only child, so the wrapper's
    parameters are the model's and nothing of the wrapper reaches a checkpoint."""

    def __init__(self, model: StreamStyleModel):
        super().__init__()
        self.model = model

    def forward(self, clips, prompts, rand: StepRandomness, objective: ObjectiveConfig, latents=None):
        return batch_loss(self.model, clips, prompts, rand, objective, latents)


def _source(cfg: TrainConfig, device):
    size = cfg.size
    ref = ReferenceClips(size, size, cfg.frames, styles=cfg.styles, device=device, seed=cfg.seed)
    if cfg.bank:
        ref = ClipBank(ref, cfg.bank, cfg.refresh, seed=cfg.seed)
    if not cfg.data:
        return ref
    caps = CaptureClips(cfg.data, cfg.frames, seed=cfg.seed, allow_eval_scenes=cfg.allow_eval_scenes)
    if cfg.reference_weight <= 0:
        return caps
    return MixedClips([(ref, cfg.reference_weight), (caps, 1.0)], seed=cfg.seed)


class Trainer:
    """The training loop of one process. `ranks` says which share of each step it trains on; with
    more than one rank the process group must be joined first (`distributed.process_group`)."""

    def __init__(self, cfg: TrainConfig, log=print, ranks: Ranks = Ranks()):
        self.cfg = cfg.validate(ranks.world)
        self.ranks = ranks
        self.device = ranks.device(cfg.device)
        self.log = log if ranks.is_main else (lambda *_: None)
        self.out = Path(cfg.out)
        self.step = 0
        self.stop_signal = 0  # the largest value `stop` gave on any rank when the run was stopped by it
        if cfg.resume:
            self.model = load_weights(cfg.resume, device=self.device)
            raw = Path(cfg.resume) / "raw.safetensors"
            if raw.exists():
                self.model.load_state_dict(load_file(str(raw), device=str(self.device)))
        elif cfg.init:
            grow = cfg.model_changes or None
            self.model = load_weights(cfg.init, device=self.device, partial=True, changes=grow)
            info = getattr(self.model, "partial_load", None)
            if info and (info["missing"] or info["ignored"]):
                fresh = sorted({k.split(".")[0] for k in info["missing"]})
                self.log(f"init from {cfg.init}: {len(info['missing'])} tensors start fresh "
                         f"({', '.join(fresh)}), {len(info['ignored'])} of the checkpoint unused")
        else:
            torch.manual_seed(cfg.seed)
            config = preset(cfg.preset)
            if cfg.model_changes:
                config = dataclasses.replace(config, **cfg.model_changes).validate()
            self.model = StreamStyleModel(config).to(self.device)
        self.model.train()
        if cfg.compile:
            compile_for_training(self.model, dit=not cfg.freeze_dit)
        self.ema = None  # only rank 0 keeps the EMA
        if ranks.is_main:
            self.ema = {k: v.detach().clone().float() for k, v in self.model.state_dict().items()}
        # The refiner learns at `refiner_lr_scale` times the DiT's rate (it starts fresh when a
        # run fine-tunes an older DiT; the DiT's own rate stays gentle).
        refiner = [p for n, p in self.model.named_parameters() if n.startswith("refiner.")]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("refiner.")]
        groups = [{"params": rest, "lr_scale": 1.0}, {"params": refiner, "lr_scale": cfg.refiner_lr_scale}]
        if cfg.freeze_dit:  # only the refiner learns; the rest keeps its weights (and its EMA them)
            for p in rest:
                p.requires_grad_(False)
            groups = groups[1:]
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        self._latents: dict[int, list[torch.Tensor]] = {}  # freeze_dit: each pool clip's DiT latents
        if cfg.resume:
            self._resume(Path(cfg.resume))
        self.source = _source(cfg, self.device)
        self._pool: dict[int, object] = {}
        self.prompts = None
        if cfg.prompts:
            from ..text import PromptEncoder

            self.prompts = PromptEncoder(device=self.device, max_tokens=self.model.config.max_prompt_tokens)
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16)
        self._loss = _BatchLoss(self.model)
        if ranks.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Inputs are rendered on this rank's device already: nothing for DDP to move. The gradients
            # live in DDP's buckets (no second copy). A step that drops the ids or surface channel
            # (the same on every rank) leaves their refiner inputs without gradients.
            self._loss = DistributedDataParallel(self._loss, device_ids=None, gradient_as_bucket_view=True,
                                                 find_unused_parameters=True)

    def _resume(self, folder: Path) -> None:
        state_file = folder / "train_state.json"
        if not state_file.exists():
            self.log(f"resuming from the weights in {folder} alone: the optimizer starts afresh at step 0")
            return
        state = json.loads(state_file.read_text())  # its global batch is the run's (`TrainConfig.validate`)
        self.step = int(state["step"])
        ema_file, opt_file = folder / "model.safetensors", folder / "optimizer.safetensors"
        if self.ema is not None:
            ema = load_file(str(ema_file), device=str(self.device))
            self.ema = {k: ema[k].float() for k in self.ema}
        if opt_file.exists():
            flat = load_file(str(opt_file), device=str(self.device))
            opt_state = self.opt.state_dict()
            groups = state["optimizer_groups"]
            restored = {}
            for i in range(len(list(self.model.parameters()))):
                entry = {k.split(".", 2)[2]: v for k, v in flat.items() if k.startswith(f"state.{i}.")}
                if entry:
                    restored[i] = entry
            self.opt.load_state_dict({"state": restored, "param_groups": groups or opt_state["param_groups"]})
        self.log(f"resumed {folder} at step {self.step}")

    def _clip(self, index: int):
        if not self.cfg.pool:
            return self.source.clip(index)
        if index not in self._pool:  # a fixed pool is rendered once
            self._pool[index] = self.source.clip(index)
        return self._pool[index]

    def _exact_draws(self, step: int, draws: list[int]) -> list[bool]:
        """Which clips get their oracle latents (`oracle_latents`) instead of the DiT's: each with
        probability `exact_latents`, drawn from the run's seed, the step and the clip's global index
        (a resumed run, and any number of ranks, draw the same)."""
        from .objective import _generator

        p = self.cfg.exact_latents
        return [bool(p) and float(torch.rand(1, generator=_generator(self.cfg.seed, -2, step, d))) < p for d in draws]

    def _mix_exact_latents(self, step: int, draws: list[int], clips: list, latents: list) -> list:
        """`latents` with each clip drawn by `_exact_draws` given its oracle latents instead."""
        from .objective import oracle_latents

        return [oracle_latents(clip, self.model.config, lat[0].device) if exact else lat
                for exact, clip, lat in zip(self._exact_draws(step, draws), clips, latents)]

    def _frozen_latents(self, step: int, draws: list[int], clips: list, prompts: list) -> list:
        """A frozen-DiT step's latents: the oracle's for the clips `_exact_draws` picks, the DiT's
        (`_dit_latents`) for the others, the DiT run only for those."""
        from .objective import oracle_latents

        exact = self._exact_draws(step, draws)
        keep = [i for i, e in enumerate(exact) if not e]
        dit = iter(self._dit_latents([draws[i] % self.cfg.pool for i in keep], [clips[i] for i in keep],
                                     [prompts[i] for i in keep]))
        return [oracle_latents(clip, self.model.config, self.device) if e else next(dit)
                for e, clip in zip(exact, clips)]

    def _dit_latents(self, indices: list[int], clips: list, prompts: list) -> list[list[torch.Tensor]]:
        """The pool clips' latents from the frozen DiT (`indices` their pool indices), each computed
        on first use with the clip's own draws (seeded by the run's seed and the index: a resumed
        run gets the same); a step's new clips are computed together, as batches."""
        from .objective import _generator, dit_latents

        new = {}
        for i, clip, prompt in zip(indices, clips, prompts):
            if i not in self._latents and i not in new:
                new[i] = (clip, prompt)
        if new:
            with self.autocast:
                made = dit_latents(self.model, [c for c, _ in new.values()], [p for _, p in new.values()],
                                   [_generator(self.cfg.seed, -1, i) for i in new], tuple(self.cfg.sampler_steps),
                                   self.cfg.objective)
            self._latents.update(zip(new, made))
        return [self._latents[i] for i in indices]

    def _context(self, clip):
        if self.prompts is None:
            return null_context(self.model, self.device)
        return self.prompts.context(clip.prompt, self.model.config.max_prompts, self.model.config.max_prompt_tokens)

    def checkpoint(self, folder: Path | None = None) -> Path:
        """Rank 0 writes; every rank returns once it has (each must call this at the same step)."""
        folder = Path(folder or self.out)
        if self.ranks.is_main:
            self._write_checkpoint(folder)
        barrier(self.ranks)
        return folder

    def _write_checkpoint(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        shipped = StreamStyleModel(self.model.config)
        shipped.load_state_dict({k: v.to("cpu") for k, v in self.ema.items()})
        save_weights(shipped, folder)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()},
                  str(folder / "raw.safetensors"))
        sd = self.opt.state_dict()
        flat = {f"state.{i}.{k}": v.detach().contiguous().cpu() for i, st in sd["state"].items()
                for k, v in st.items() if isinstance(v, torch.Tensor)}
        if flat:
            save_file(flat, str(folder / "optimizer.safetensors"))
        cfg = dataclasses.asdict(self.cfg)
        (folder / "train_state.json").write_text(json.dumps(
            {"step": self.step, "batch": self.cfg.batch, "processes": self.ranks.world, "config": cfg,
             "optimizer_groups": sd["param_groups"]}, indent=2, default=str))

    def run(self, progress: bool = True, stop: Callable[[], int | bool] | None = None) -> Path:
        """Train to `cfg.steps`. `stop` is asked at every step boundary; once it gives a true value
        (on any rank: the ranks agree) the run checkpoints where it is and returns, with the largest
        value given in `stop_signal` (a signal number, in `streamstyle train`): the checkpoint holds
        whole steps only, and `resume` continues at the same step. Only rank 0 shows `progress`."""
        cfg, main = self.cfg, self.ranks.is_main
        self.out.mkdir(parents=True, exist_ok=True)
        # A row per line, as it happens, and once: rank 0's, with the global batch's means.
        metrics = (self.out / "metrics.jsonl").open("a", buffering=1) if main else None
        bar = None
        if progress and main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, unit="step", desc="train", dynamic_ncols=True)
        t_last, frames_since = time.perf_counter(), 0
        t_start, first_step = t_last, self.step
        t_pace = t_start  # when this invocation's step FIT_SKIP ended (the schedule's fit)
        share = self.ranks.share(cfg.batch)
        bank = self.source if isinstance(self.source, ClipBank) else getattr(self.source, "sources", [None])[0]
        if cfg.workers and isinstance(bank, ClipBank):
            bank.start_workers(cfg.workers, first_draw=self.step * cfg.batch)
        try:
            while self.step < cfg.steps:
                timed_out = bool(cfg.time_limit and time.perf_counter() - t_start > cfg.time_limit)
                done = bool(cfg.stop_after and self.step - first_step >= cfg.stop_after)
                asked = int(stop() or 0) if stop is not None else 0
                timed_out, done, asked = agree(self.ranks, [timed_out, done, asked], self.device)
                if timed_out or done:
                    self.checkpoint()
                    why = f"time limit of {cfg.time_limit:.0f} s" if timed_out else f"{cfg.stop_after} steps"
                    self.log(f"stopped after {why} at step {self.step} of {cfg.steps}: checkpoint in {self.out}; "
                             f"continue with --resume {self.out}")
                    break
                if asked:
                    self.stop_signal = int(asked)
                    self.checkpoint()
                    self.log(f"interrupted at step {self.step} of {cfg.steps}: checkpoint in {self.out}; "
                             f"continue with --resume {self.out}")
                    break
                step = self.step
                draws = [step * cfg.batch + i for i in share]  # this rank's global clip indices
                clips = [self._clip(d % cfg.pool if cfg.pool else d) for d in draws]
                prompts = [self._context(c) for c in clips]
                for group in self.opt.param_groups:
                    group["lr"] = _lr(cfg, step) * group.get("lr_scale", 1.0)
                objective = cfg.objective
                if cfg.grid_weight:
                    objective = dataclasses.replace(objective, grid_weight=cfg.grid_weight)
                if step >= cfg.distill_from:
                    objective = dataclasses.replace(objective, sampler_steps=tuple(cfg.sampler_steps))
                latents = None
                if cfg.freeze_dit:
                    latents = self._frozen_latents(step, draws, clips, prompts)
                with self.autocast:
                    loss, parts = self._loss(clips, prompts, StepRandomness.seeded(cfg.seed, step, draws), objective,
                                             latents)
                parts = mean_over_ranks(self.ranks, parts, self.device)
                if not math.isfinite(parts["loss"]):
                    raise FloatingPointError(f"the loss is {parts['loss']} at step {step}: stopping before the "
                                             "weights are spoiled; resume from the last checkpoint with a lower lr")
                self.opt.zero_grad(set_to_none=True)
                with warnings.catch_warnings():
                    # DDP compares a depthwise conv weight's gradient strides with its bucket's and
                    # warns; they differ only along a size-1 dimension, the same memory layout.
                    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
                    loss.backward()  # with several ranks: the gradients come back averaged over them
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
                self.opt.step()
                if self.ema is not None:
                    with torch.no_grad():
                        decay = min(cfg.ema, (1 + step) / (10 + step))
                        for k, v in self.model.state_dict().items():
                            self.ema[k].mul_(decay).add_(v.float(), alpha=1 - decay)
                self.step += 1
                frames_since += cfg.batch * cfg.frames
                now = time.perf_counter()
                phase = "refiner" if cfg.freeze_dit else "few-step" if objective.sampler_steps else "flow"
                row = {"step": self.step, "phase": phase, **parts,
                       "grad_norm": grad_norm, "lr": _lr(cfg, step), "frames_per_s": frames_since / (now - t_last)}
                t_last, frames_since = now, 0
                ran = self.step - first_step
                if cfg.fit_steps and ran == FIT_SKIP:
                    t_pace = now
                if cfg.fit_steps and ran == FIT_AFTER and self.step < cfg.steps:
                    pace, = agree(self.ranks, [(now - t_pace) / (FIT_AFTER - FIT_SKIP)], self.device)
                    was = cfg.steps
                    cfg = self.cfg = dataclasses.replace(cfg, steps=fitted_steps(
                        self.step, pace, cfg.time_limit - (now - t_start)))
                    self.log(f"schedule fitted to the time limit: {cfg.steps} steps (was {was}) at {pace:.2f} s a step")
                    if bar is not None:
                        bar.total = cfg.steps
                if metrics is not None:
                    metrics.write(json.dumps(row) + "\n")
                if bar is not None:
                    bar.set_postfix(phase=row["phase"], loss=f"{parts['loss']:.4f}", fps=f"{row['frames_per_s']:.1f}")
                    bar.update(1)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.checkpoint()
        finally:
            if isinstance(bank, ClipBank):
                bank.close()
            if metrics is not None:
                metrics.close()
            if bar is not None:
                bar.close()
        return self.out
