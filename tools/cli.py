"""The `streamstyle` command: one entry point, one subcommand per job.

Each subcommand parses its own flags, imports what it needs lazily (so `--help` is instant), and
turns this package's typed errors into a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..interop.errors import DeviceError, ResolutionError, StreamStyleError
from ..interop.limits import (DEFAULT_STEPS, DEFAULT_STRENGTH, MAX_STEPS, MAX_STRENGTH, MIN_STEPS, MIN_STRENGTH,
                              check_device_name, check_resolution)
from .signals import Interrupted, deferred, exit_code, raised

STEPS = list(range(MIN_STEPS, MAX_STEPS + 1))  # the contract's step counts, for --steps


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def parse_size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080); also the names 720p, 1080p, 1440p, 2160p/4k."""
    named = {"720p": (1280, 720), "1080p": (1920, 1080), "1440p": (2560, 1440), "2160p": (3840, 2160),
             "4k": (3840, 2160)}
    key = text.strip().lower()
    if key in named:
        return named[key]
    try:
        w, h = key.split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1920x1080 or 1080p, not {text!r}") from None


def _session_id_base(text: str) -> int:
    from ..interop.limits import MAX_ID
    from ..service.workers import SESSION_ID_SPAN

    try:
        base = int(text)
    except ValueError:
        base = -1
    if not 0 <= base <= MAX_ID - SESSION_ID_SPAN:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..{MAX_ID - SESSION_ID_SPAN}, not {text!r}")
    return base


def check_device(device: str) -> str:
    """`cpu`, `cuda` or `cuda:N` (the contract's names), and for CUDA a GPU this machine has.
    Raises DeviceError (bad_device)."""
    check_device_name(device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_frame_args(args: argparse.Namespace) -> None:
    """The one size and device check of every command, before anything starts: each frame size
    given (`--size`, `--sizes`, `--video-size`) through the contract's `check_resolution`
    (bad_resolution), the device through `check_device` (bad_device). `--sizes` becomes a list of
    (width, height)."""
    sizes = []
    size = getattr(args, "size", None)
    if isinstance(size, int) and not isinstance(size, bool):  # train: square clips
        sizes.append((size, size))
    elif isinstance(size, tuple):
        sizes.append(size)
    elif isinstance(size, list):
        sizes += size
    if isinstance(getattr(args, "video_size", None), tuple):  # eval-media: one panel of the video
        sizes.append(args.video_size)
    if isinstance(getattr(args, "sizes", None), str):
        try:
            args.sizes = [parse_size(text.strip()) for text in args.sizes.split(",")]
        except argparse.ArgumentTypeError as exc:
            raise ResolutionError(f"--sizes: {exc}") from None
        sizes += args.sizes
    for w, h in sizes:
        check_resolution(w, h)
    if getattr(args, "device", None) is not None:
        check_device(args.device)


def cmd_model_info(args: argparse.Namespace) -> int:
    from ..model.config import preset
    from ..model.info import format_info, model_info
    from ..model.weights import read_config

    config = read_config(args.weights) if args.weights else preset(args.preset)
    infos = []
    for w, h in args.size:
        # A size the stride does not divide is reported at the nearest larger one, said so.
        pw, ph = -(-w // config.patch) * config.patch, -(-h // config.patch) * config.patch
        info = model_info(config, pw, ph, steps=args.steps)
        if (pw, ph) != (w, h):
            info["note"] = f"{w}x{h} padded to {pw}x{ph} (token stride {config.patch})"
        infos.append(info)
    if args.json:
        print(json.dumps(infos if len(infos) > 1 else infos[0], indent=2))
    else:
        for info in infos:
            print(format_info(info))
            if "note" in info:
                print(f"note: {info['note']}")
            print()
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from ..engine_plugins.capture import CaptureError
    from ..engine_plugins.reference_engine.record import render_capture

    w, h = args.size
    try:
        out = render_capture(args.seed, args.frames, w, h, args.out, styles=args.styles, fps=args.fps,
                             camera=args.camera, device=args.device, objects=args.objects,
                             chunk_frames=args.chunk_frames, progress=not args.quiet)
    except CaptureError:
        raise
    except ValueError as exc:
        print(f"streamstyle: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.frames} frames of seed {args.seed} at {w}x{h} to {out}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .preview import contact_sheet

    frames = [int(x) for x in args.frames.split(",")] if args.frames else None
    try:
        out = contact_sheet(args.capture, args.out, frames=frames, tile_width=args.tile_width)
    except (ValueError, IndexError, RuntimeError) as exc:
        print(f"streamstyle: error: {exc}", file=sys.stderr)
        return 2
    print(f"contact sheet: {out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from ..service.config import ServiceConfig

    config = ServiceConfig.load(args.config, bind=args.bind, device=args.device, weights=args.weights,
                                preset=args.preset, deadline_ms=args.deadline_ms, dtype=args.dtype,
                                cpu_threads=args.cpu_threads, metrics_port=args.metrics, osc_port=args.osc,
                                preview_port=args.preview, presets=args.presets, workers=args.workers,
                                gpus=args.gpus)
    if args.print_config:
        print(config.to_toml(), end="")
        return 0

    from ..service.logs import configure

    configure(logging.INFO if not args.quiet else logging.WARNING, as_json=args.log_json,
              worker=args.worker)
    if config.worker_devices:
        return serve_front(config, args)

    from ..service.address import claim_address
    from ..service.loader import build_stylizer, set_cpu_threads
    from ..service.server import Service

    if args.parent_pid is not None:  # a worker of a front: it stops when the front goes
        from ..service.workers import watch_parent

        watch_parent(args.parent_pid)
    check_device(config.device)  # the config file's device too, before the model loads
    claim_address(config.address)  # before the model loads: a taken address fails in a second
    threads = set_cpu_threads(config)
    stylizer, trained = build_stylizer(config, prompts=not args.no_prompts)
    if not trained:
        logging.getLogger("streamstyle.service").warning(
            "serving the %r preset with UNTRAINED random weights (output is not a style yet): give --weights",
            config.preset or "default")
    service = Service(config, stylizer, session_id_base=args.session_id_base)
    if args.ready_file:  # lets a parent process wait for the bound address
        from pathlib import Path

        Path(args.ready_file).write_text(service.address)
    print(f"streamstyle service {service.address} ({stylizer.device}, {stylizer.config.name} model, "
          f"{threads} CPU thread{'s' if threads != 1 else ''})", flush=True)
    service.run()
    return exit_code(service.stop_signal) if service.stop_signal else 0


def serve_front(config, args: argparse.Namespace) -> int:
    """`serve --workers N` / `--gpus LIST`: the front process, one worker process per device."""
    from ..service.front import Front

    worker_args = tuple(flag for flag, on in (("--no-prompts", args.no_prompts), ("--quiet", args.quiet),
                                              ("--log-json", args.log_json)) if on)
    front = Front(config, worker_args)
    if args.ready_file:
        from pathlib import Path

        Path(args.ready_file).write_text(front.address)
    print(f"streamstyle service {front.address} (front of {len(front.workers)} workers: "
          f"{', '.join(w.device for w in front.workers)})", flush=True)
    front.run()
    return exit_code(front.stop_signal) if front.stop_signal else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..tools.demo import run_demo

    try:
        run_demo(frames=args.frames, size=args.size, steps=args.steps, prompts=args.prompt, device=args.device,
                 out=None if args.no_video else args.out, seed=args.seed, weights=args.weights,
                 engine=args.engine, scene=args.scene)
    except RuntimeError as exc:
        print(f"streamstyle: error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import os

    import torch

    from ..model.errors import ConfigError
    from ..model.training.distributed import Ranks, backend, process_group
    from ..model.training.trainer import TrainConfig, Trainer, resumed_config, saved_batch

    # Under torchrun, or as one of the ranks `--nproc` starts (the same environment): this process
    # is one rank. `--nproc` counts the processes on this machine, so a rank sees its own value.
    ranks = Ranks.from_env()
    if args.nproc < 1:
        raise ConfigError("--nproc is a number of processes: at least 1")
    if ranks.world > 1 and args.nproc not in (1, ranks.local_world):
        raise ConfigError(f"--nproc {args.nproc}, but torchrun started {ranks.local_world} processes on this "
                          f"machine: give one or the other")
    launching = args.nproc > 1 and ranks.world == 1
    world = args.nproc if launching else ranks.world
    gpu = args.device.startswith("cuda")
    if launching and gpu:
        if args.device != "cuda":
            raise ConfigError(f"--device {args.device} with --nproc {args.nproc}: each process takes its own GPU; "
                              f"give --device cuda (and CUDA_VISIBLE_DEVICES to choose the GPUs)")
        if args.nproc > torch.cuda.device_count():
            raise DeviceError(f"--nproc {args.nproc} on CUDA needs a GPU per process; this machine has "
                              f"{torch.cuda.device_count()}")
    if args.batch is None:  # a resumed run keeps its global batch, whatever the number of processes
        args.batch = (args.resume and saved_batch(args.resume)) or (32 if gpu else 4)
    if args.bank is None:
        args.bank = 512 if gpu else 0
    if args.workers is None:  # render workers per process: the machine's cores shared by its processes
        local = args.nproc if launching else ranks.local_world
        args.workers = min(8, max(0, ((os.cpu_count() or 2) - 2 * local) // local)) if gpu and args.bank else 0

    cfg = TrainConfig(out=args.out, preset=args.preset, init=args.init, resume=args.resume, device=args.device,
                      size=args.size, frames=args.frames, batch=args.batch, steps=args.steps, lr=args.lr,
                      seed=args.seed, styles=args.styles, data=tuple(args.data or ()),
                      reference_weight=args.reference_weight, allow_eval_scenes=args.allow_eval_scenes,
                      checkpoint_every=args.checkpoint_every, pool=args.pool, precision=args.precision,
                      prompts=not args.no_prompts, bank=args.bank, refresh=args.refresh, workers=args.workers, distill=args.distill,
                      ema=args.ema, warmup=args.warmup, time_limit=args.time_limit * 60, stop_after=args.stop_after, fit_steps=args.fit_steps,
                      sampler_steps=_step_list(args.sampler_steps), refiner_lr_scale=args.refiner_lr_scale,
                      freeze_dit=args.freeze_dit, exact_latents=args.exact_latents, compile=args.compile,
                      refiner_depth=args.refiner_depth, id_colours=args.id_colours,
                      grid_weight=args.grid_weight)
    if args.resume:  # the saved run's settings, with what this command line changes (checked)
        given = {"prompts" if d == "no_prompts" else d for d in _given_options(args.train_parser, args.argv)}
        cfg = resumed_config(cfg, given)
    cfg.validate(world)  # before any process starts
    if launching:
        from .local_ranks import run_local

        print(f"training with {args.nproc} processes on this machine ({backend(torch.device(args.device))}): "
              f"global batch {cfg.batch} clips, {cfg.batch // args.nproc} per process", flush=True)
        return run_local(args.nproc, args.argv)
    if ranks.is_main:
        # the run's settings (a resumed run's are its saved ones, not the command line's defaults)
        print(f"training on {cfg.device}: batch {cfg.batch} clips x {cfg.frames} frames at {cfg.size}x{cfg.size}, "
              f"clip bank {cfg.bank or 'off'}" + (f", {cfg.workers} render workers" if cfg.workers else "")
              + (f"; {ranks.world} processes, {cfg.batch // ranks.world} clips each" if ranks.world > 1 else ""),
              flush=True)
    device = ranks.device(args.device)
    # A stop signal ends the run at the next step boundary (agreed by every rank), with a
    # checkpoint that --resume continues.
    with process_group(ranks, device), deferred() as stop:
        trainer = Trainer(cfg, ranks=ranks)
        out = trainer.run(progress=not args.quiet, stop=lambda: stop.signum or 0)
    if ranks.is_main:
        print(f"weights (EMA) and training state in {out}; metrics in {out / 'metrics.jsonl'}")
    return exit_code(trainer.stop_signal) if trainer.stop_signal else 0


def _given_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options `argv` names (`--opt value`, `--opt=value`, or a prefix of
    an option that argparse accepts for it)."""
    given = set()
    for token in argv:
        if not token.startswith("--"):
            continue
        name = token.split("=", 1)[0]
        hits = [a for a in parser._actions if name in a.option_strings]
        if not hits:
            hits = [a for a in parser._actions if any(s.startswith(name) for s in a.option_strings)]
        if len(hits) == 1:
            given.add(hits[0].dest)
    return given


def _step_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"--sampler-steps takes a comma list of step counts, not {text!r}") from None


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'256x256,512x512' (or one size, or named sizes) -> [(256, 256), (512, 512)]."""
    sizes = [parse_size(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"give one or more sizes like 256x256,512x512, not {text!r}")
    return sizes


def _eval_stylizer(weights: str | None, device: str):
    """The model `eval` and `eval-media` score: `weights`, else the shipped default model (None
    when neither is there), in bf16 on a GPU, with the prompt encoder."""
    import torch

    from ..model.stylizer import Stylizer
    from ..model.text import PromptEncoder
    from ..model.weights import load_weights, shipped_weights

    weights = weights or shipped_weights()
    if weights is None:
        print("streamstyle: error: no --weights given and the shipped default weights are not installed",
              file=sys.stderr)
        return None
    model = load_weights(weights, device=device)
    if device.startswith("cuda"):
        model = model.to(torch.bfloat16)
    encoder = PromptEncoder(device=device, max_tokens=model.config.max_prompt_tokens)
    return Stylizer(model, encoder, device=device)


def _check_strength(strength: float) -> bool:
    if MIN_STRENGTH <= strength <= MAX_STRENGTH:
        return True
    print(f"streamstyle: error: --strength must lie in [{MIN_STRENGTH:g}, {MAX_STRENGTH:g}], got {strength}",
          file=sys.stderr)
    return False


def cmd_eval(args: argparse.Namespace) -> int:
    import json as _json

    from ..model.training.evaluate import EvalConfig, evaluate, format_report, load_prompts_file
    from ..engine_plugins.reference_engine.prompts import split

    if not _check_strength(args.strength):
        return 2
    try:
        cfg = EvalConfig(sizes=args.size or None, frames=args.frames, steps=args.steps, strength=args.strength,
                         draws=args.draws)
    except ValueError as exc:
        print(f"streamstyle: error: {exc}", file=sys.stderr)
        return 2
    stylizer = _eval_stylizer(args.weights, args.device)
    if stylizer is None:
        return 2
    source, extra = None, {}
    try:
        if args.set == "real":
            # Real scenes rendered by Panda3D (the `panda3d` extra), scored by the same evaluate.
            from ..tools.real_eval import RealScenes

            source = RealScenes(args.scenes)
            extra = {"source": source, "count": len(source), "set_name": "real"}
        else:  # the split's scenes (or --seeds) and its phrasings, and its name on the report
            chosen = split(args.set)
            cfg.seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else list(chosen.seeds)[: args.max_seeds]
            cfg.prompts = dict(chosen.phrasings)
            extra = {"set_name": chosen.name}
        if args.prompts_file:
            cfg.prompts = load_prompts_file(args.prompts_file)
        if args.styles != "all":
            from ..engine_plugins.reference_engine.oracles import style_names

            wanted = style_names(args.styles)
            missing = [s for s in wanted if s not in cfg.prompts]
            if missing:
                raise ValueError(f"no phrasing for style(s) {', '.join(missing)} in the prompts")
            cfg.prompts = {s: cfg.prompts[s] for s in wanted}
    except ImportError as exc:
        print(f"streamstyle: error: --set real needs Panda3D (pip install 'streamstyle[panda3d]'): {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"streamstyle: error: {exc}", file=sys.stderr)
        return 2
    stills: dict[str, dict] = {}
    if args.stills:
        # The last frame of each sequence: the engine's colour, then each style's output.
        def keep(seq, style, outputs):
            h, w = outputs[-1].shape[:2]
            name = seq.name if len(cfg.sizes) == 1 else f"{seq.name} {w}x{h}"
            row = stills.setdefault(name, {"engine": seq.frames[-1].color})
            row[style] = outputs[-1]

        extra["keep"] = keep
    try:
        report = evaluate(stylizer, cfg, progress=not args.quiet, **extra)
    except ValueError as exc:
        print(f"streamstyle: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.markdown:
        from pathlib import Path

        from ..model.training.evaluate import markdown_tables

        Path(args.markdown).write_text(markdown_tables(report))
        print(f"tables: {args.markdown}")
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(_json.dumps(report, indent=2))
        print(f"report: {args.json}")
    if args.stills:
        from ..tools.real_eval import contact_sheet

        size = contact_sheet(stills, args.stills)
        print(f"stills: {args.stills} ({size / 1e3:.0f} kB)")
    return 0


def cmd_eval_media(args: argparse.Namespace) -> int:
    from ..engine_plugins.reference_engine.oracles import style_names
    from .eval_media import write_media

    if not _check_strength(args.strength):
        return 2
    try:
        styles = style_names(args.styles)
    except ValueError as exc:
        print(f"streamstyle: error: {exc}", file=sys.stderr)
        return 2
    stylizer = _eval_stylizer(args.weights, args.device)
    if stylizer is None:
        return 2
    try:
        write_media(stylizer, images=None if args.no_stills else args.images, media=None if args.no_video else args.media,
                    styles=styles, still_sizes=args.sizes, video_size=args.video_size, seed=args.seed,
                    frames=args.frames, video_frames=args.video_frames, steps=args.steps, strength=args.strength,
                    colors=args.colors)
    except (ValueError, RuntimeError) as exc:
        print(f"streamstyle: error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from ..model.weights import load_weights, save_weights

    model = load_weights(args.weights)
    if args.history_noise is not None:
        import dataclasses

        from ..model.errors import ConfigError

        try:
            model.config = dataclasses.replace(model.config, history_noise=args.history_noise).validate()
        except ConfigError as exc:
            print(f"streamstyle: error: --history-noise: {exc}", file=sys.stderr)
            return 2
    if args.history_shift:
        try:
            model.refiner.shift_history_confidence(args.history_shift)
        except ValueError as exc:
            print(f"streamstyle: error: --history-shift: {exc}", file=sys.stderr)
            return 2
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    folder = save_weights(model, args.out, dtype=dtype)
    size = (folder / "model.safetensors").stat().st_size
    print(f"{folder / 'model.safetensors'}: {model.config.name}, {args.dtype}, {size / 1e6:.1f} MB"
          + (f", history confidence shifted by {args.history_shift:+g}" if args.history_shift else "")
          + (f", history noise {args.history_noise:g}" if args.history_noise is not None else ""))
    return 0


def cmd_prompt_table(args: argparse.Namespace) -> int:
    from ..engine_plugins.reference_engine.prompts import PHRASINGS
    from ..model.config import preset
    from ..model.text import PromptEncoder, save_prompt_table
    from ..model.training.evaluate import load_prompts_file
    from ..model.weights import read_config, shipped_weights

    weights = args.weights or shipped_weights()
    config = read_config(weights) if weights else preset("default")
    prompts = list(args.prompt or [])
    try:
        for path in args.prompts_file or []:
            prompts += [p for ps in load_prompts_file(path).values() for p in ps]
    except ValueError as exc:
        print(f"streamstyle: error: {exc}", file=sys.stderr)
        return 2
    if args.reference or not prompts:
        prompts += [p for ps in PHRASINGS.values() for p in ps]
    encoder = PromptEncoder(max_tokens=config.max_prompt_tokens)
    path = save_prompt_table(encoder, prompts, args.out)
    print(f"{path}: {len(set(prompts))} prompts at {config.max_prompt_tokens} tokens, "
          f"{path.stat().st_size / 1e6:.2f} MB; use it with STREAMSTYLE_PROMPT_TABLE={path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json as _json

    from .bench import BenchConfig, format_bench, run_bench

    sizes = args.sizes  # parsed and checked by check_frame_args; any size in range: the service pads to the stride
    try:
        steps = [int(k) for k in args.steps.split(",")]
    except ValueError:
        print(f"streamstyle: error: --steps is a comma list of 1-4, not {args.steps!r}", file=sys.stderr)
        return 2
    if not steps or any(k not in STEPS for k in steps):
        print(f"streamstyle: error: --steps takes step counts from {MIN_STEPS} to {MAX_STEPS}", file=sys.stderr)
        return 2
    cfg = BenchConfig(preset=args.preset, weights=args.weights, sizes=sizes, steps=steps, frames=args.frames,
                      device=args.device, dtype=args.dtype, service=not args.no_service, peers=args.peers,
                      service_config=args.service_config)
    try:
        report = run_bench(cfg)
    except RuntimeError as exc:
        print(f"streamstyle: error: {exc}", file=sys.stderr)
        return 2
    print()
    print(format_bench(report))
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(_json.dumps(report, indent=2))
        print(f"report: {args.json}")
    return 1 if any(r["status"] != "ok" for r in report["rows"]) else 0


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="streamstyle", description="Real-time neural post-processing for games.")
    parser.add_argument("--version", action="version", version=f"streamstyle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("model-info", help="parameters, tokens, FLOPs, bytes and state of a model at a frame size")
    p.add_argument("--preset", default="default", help="tiny, default or large (default: default)")
    p.add_argument("--weights", help="read the config of this checkpoint instead of a preset")
    p.add_argument("--size", type=parse_size, action="append",
                   help="frame size WxH or 720p/1080p/2160p; repeatable (default: 1280x720 and 1920x1080)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, choices=STEPS, help=f"DiT steps per frame (default {DEFAULT_STEPS})")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_model_info)

    from ..engine_plugins.reference_engine.camera import CAMERA_KINDS

    p = sub.add_parser("demo", help="the service and the reference engine as two processes, with a video")
    p.add_argument("--frames", type=int, default=96)
    p.add_argument("--size", type=parse_size, default=(256, 192), help="WxH (default 256x192)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, choices=STEPS)
    p.add_argument("--prompt", action="append", help="a prompt; repeat to switch between several during the run")
    p.add_argument("--device", default="cpu", help="cpu (shared memory) or cuda (CUDA IPC)")
    p.add_argument("--out", default="streamstyle-demo.mp4", help="the MP4 to write")
    p.add_argument("--no-video", action="store_true", help="only the run and its figures, no MP4 (needs no ffmpeg)")
    p.add_argument("--seed", type=int, default=7, help="the reference scene's seed")
    p.add_argument("--weights", help="a checkpoint (default: the shipped default model)")
    p.add_argument("--engine", default="reference", choices=["reference", "panda3d"],
                   help="the engine that plays the game: the reference renderer, or Panda3D (needs the panda3d extra)")
    p.add_argument("--scene", help="with --engine panda3d: a glTF/egg file or a named scene (helmet, suzanne, teapot, ...)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train or fine-tune a model on reference-engine clips and captures")
    p.add_argument("--out", default="runs/default", help="folder for checkpoints and metrics.jsonl")
    p.add_argument("--preset", default="default")
    p.add_argument("--init", help="start from these weights (fine-tuning)")
    p.add_argument("--resume", help="continue the run saved in this folder (weights alone are enough)")
    p.add_argument("--data", action="append", help="a capture folder to train on (repeatable)")
    p.add_argument("--reference-weight", type=float, default=1.0,
                   help="share of reference-engine clips when --data is given (0: captures only)")
    p.add_argument("--allow-eval-scenes", action="store_true",
                   help="train on captures of the real-scene evaluation split (voids `eval --set real`)")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, default=4, help="frames per clip")
    p.add_argument("--batch", type=int, help="clips per step (default: 32 on a GPU, 4 on the CPU)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--refiner-lr-scale", type=float, default=1.0,
                   help="the refiner's learning rate over --lr (e.g. 10 when fine-tuning an older DiT)")
    p.add_argument("--freeze-dit", action="store_true",
                   help="train the refiner alone, on the latents the frozen DiT produces for each clip of --pool "
                        "(its rollout with --sampler-steps, computed once per clip: about 3x faster a step)")
    p.add_argument("--refiner-depth", type=int, default=None, metavar="N",
                   help="the refiner's residual middle passes (default: the model's own; with --init, more "
                        "than the checkpoint's adds passes that start as the identity)")
    p.add_argument("--id-colours", type=int, default=None, metavar="K",
                   help="the rank of the refiner's per-style object colours (default: the model's own; with "
                        "--init, giving a model without them K adds them, starting at zero)")
    p.add_argument("--grid-weight", type=float, default=0.0,
                   help="weight of the token-grid loss (the error's pattern at the token stride, which shows as "
                        "a faint grid on flat areas); 0: logged, not trained on")
    p.add_argument("--exact-latents", type=float, default=0.0,
                   help="with --freeze-dit: the share (0 to 1) of clips whose refiner input is the oracle's own "
                        "latent instead of the frozen DiT's, drawn per clip and step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--styles", default="all")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--warmup", type=int, default=100, help="learning-rate warm-up steps")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the shipped weights")
    p.add_argument("--bank", type=int,
                   help="keep this many rendered shots and draw clips (any style) from them; 0 renders every "
                        "clip (default: 512 on a GPU, 0 on the CPU)")
    p.add_argument("--refresh", type=int, default=4, help="with --bank: render one new shot every N clips drawn")
    p.add_argument("--workers", type=int,
                   help="with --bank: render shots in this many background processes (same data, faster; "
                        "default: up to 8 on a GPU, 0 on the CPU)")
    p.add_argument("--distill", type=float, default=0.25,
                   help="share of the steps, at the end, that train the few-step sampler (1, 2 and 4 steps)")
    p.add_argument("--sampler-steps", default="1,2,4",
                   help="the few-step phase draws each frame's step count from this comma list (repeats weight it)")
    p.add_argument("--time-limit", type=float, default=0.0, metavar="MINUTES",
                   help="checkpoint and stop after this long; --resume continues the same run")
    p.add_argument("--fit-steps", action="store_true",
                   help="with --time-limit: after this run's first 10 steps, set the schedule's length (--steps) "
                        "to what the rest of the time limit holds at their pace, so the learning rate anneals "
                        "to its floor as the time runs out on any host")
    p.add_argument("--stop-after", type=int, default=0, metavar="STEPS",
                   help="checkpoint and stop after this many steps; --resume continues the same run")
    p.add_argument("--no-prompts", action="store_true", help="train without the text encoder (empty prompt)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train with N processes on this machine (data-parallel; on CUDA one GPU each); "
                        "the global --batch is split between them. Under torchrun, leave it out")
    p.add_argument("--pool", type=int, default=0, metavar="CLIPS",
                   help="cycle through this many distinct clips, each rendered once (tests, benchmarks)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 autocast on a GPU, fp32 on the CPU")
    p.add_argument("--compile", action="store_true",
                   help="run the DiT's blocks and the refiner through torch.compile: the same arithmetic in fused "
                        "kernels; on an H200 a 3%% faster step and 22%% less memory, after a first step that "
                        "compiles for about a minute")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train, train_parser=p)

    p = sub.add_parser("export", help="write a checkpoint's weights for shipping (e.g. in bf16)")
    p.add_argument("--weights", required=True, help="a checkpoint folder or .safetensors file")
    p.add_argument("--out", required=True, help="the folder to write model.safetensors and config.json in")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--history-shift", type=float, default=0.0, metavar="LOGIT",
                   help="add this to the refiner's history-confidence logit (keep more history where it is valid; "
                        "the shipped model: +2, measured on the train split)")
    p.add_argument("--history-noise", type=float, metavar="SHARE",
                   help="set the sampler's fresh noise on tokens that keep their history, 0 to 1 (the config's "
                        "history_noise; 0: a deterministic start from the warped latent; default: keep the checkpoint's)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("prompt-table", help="encode prompts once into a file, for machines without the text model")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    p.add_argument("--prompts-file", action="append", help='JSON {"style": ["phrasing", ...]} (repeatable)')
    p.add_argument("--reference", action="store_true",
                   help="add every reference-engine phrasing (the default when no prompt is given)")
    p.add_argument("--weights", help="the model the table is for (default: the shipped default model)")
    p.set_defaults(func=cmd_prompt_table)

    from ..engine_plugins.panda3d.realset import REAL_SCENES

    p = sub.add_parser("eval", help="fidelity, temporal stability and prompt adherence of a model")
    p.add_argument("--weights", help="a checkpoint (default: the shipped default model)")
    p.add_argument("--seeds", help="comma list of scene seeds")
    p.add_argument("--set", default="heldout",
                   help="heldout (reference-engine seeds and phrasings kept out of training; the default), train "
                        "(the training split's seeds and phrasings), or real (real scenes rendered by Panda3D, "
                        "kept out of training; needs the panda3d extra); --seeds picks scenes within it")
    p.add_argument("--max-seeds", type=int, default=4)
    p.add_argument("--scenes", default="all", help=f"--set real: 'all' or a comma list of {', '.join(REAL_SCENES)}")
    p.add_argument("--styles", default="all", help="'all' or a comma list of the styles to score")
    p.add_argument("--prompts-file", help='JSON {"style": ["phrasing", ...]}')
    p.add_argument("--size", type=parse_sizes, default=[],
                   help="comma list of frame sizes WxH, one table each (default: the training size and twice it, "
                        "256x256,512x512)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, choices=STEPS)
    p.add_argument("--strength", type=float, default=DEFAULT_STRENGTH,
                   help=f"noise level history restarts from each frame (the service's default {DEFAULT_STRENGTH:g})")
    p.add_argument("--draws", type=int, default=8,
                   help="draws of the hidden detail the averaged oracle (fidelity and ceiling columns) is the mean of")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--markdown", help="write the report's tables here as Markdown (as docs/model-card.md has them)")
    p.add_argument("--stills", help="write a PNG contact sheet here: each sequence's last frame, engine and styled")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-media", help="per-style stills (input | ours | oracle) and a side-by-side video "
                                          "(input | per-frame baseline | ours) of a model on a held-out scene")
    p.add_argument("--weights", help="a checkpoint (default: the shipped default model)")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--images", default="docs/images", help="folder for the stills (eval-<style>-<W>x<H>.png)")
    p.add_argument("--media", default="docs/media", help="folder for the video (eval-side-by-side.mp4)")
    p.add_argument("--sizes", default="512x512,1280x720", help="comma list of the stills' sizes")
    p.add_argument("--video-size", type=parse_size, default=(640, 360), help="one panel of the video, WxH")
    p.add_argument("--styles", default="all", help="'all' or a comma list of styles")
    p.add_argument("--seed", type=int, help="the held-out scene (default: the first held-out seed)")
    p.add_argument("--frames", type=int, default=8, help="frames of each still's run (the still is the last)")
    p.add_argument("--video-frames", type=int, default=30, help="frames of each style in the video")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, choices=STEPS)
    p.add_argument("--strength", type=float, default=DEFAULT_STRENGTH)
    p.add_argument("--colors", type=int, default=256, help="the stills' palette size, 2-256 (fewer: smaller files)")
    p.add_argument("--no-stills", action="store_true")
    p.add_argument("--no-video", action="store_true")
    p.set_defaults(func=cmd_eval_media)

    p = sub.add_parser("bench", help="per-stage, end-to-end and floor timings of a model, and peers, on this machine")
    p.add_argument("--preset", help="benchmark this preset with untrained weights (default: the shipped model)")
    p.add_argument("--weights", help="a checkpoint to benchmark")
    p.add_argument("--sizes", default="720p,1080p,2160p", help="comma list of WxH or 720p/1080p/2160p")
    p.add_argument("--steps", default="1,2,4", help="comma list of step counts")
    p.add_argument("--frames", type=int, default=1000, help="frames through the service per size and steps")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16", "fp8"],
                   help="the model's dtype (auto: bf16 on a GPU, fp32 on the CPU; fp8: FP8 block GEMMs)")
    p.add_argument("--no-service", action="store_true", help="skip the end-to-end run through the service")
    p.add_argument("--service-config", help="a service config file (TOML or JSON, docs/protocol.md) for the end-to-end run")
    p.add_argument("--peers", action="store_true", help="also time StreamDiffusion's and SANA's setups (needs diffusers)")
    p.add_argument("--json", help="write the full report here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("serve", help="run the resident service")
    p.add_argument("--bind", help="ipc:///path, tcp://127.0.0.1:PORT (default: ipc in the user's runtime folder)")
    p.add_argument("--device", help="cpu or cuda (default cpu)")
    p.add_argument("--weights", help="a checkpoint folder or .safetensors file (default: the shipped default model)")
    p.add_argument("--preset", help="serve this preset with untrained weights instead (tiny, default, large)")
    p.add_argument("--config", help="a TOML (or JSON) file of service settings (see docs/protocol.md)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective settings (file and flags) as TOML and exit")
    p.add_argument("--cpu-threads", type=int, metavar="N",
                   help="torch's intra-op threads (default 0: every core this process may use)")
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16", "fp8"],
                   help="the model's dtype (default auto: bf16 on a GPU, fp32 on the CPU; fp8: FP8 block GEMMs)")
    p.add_argument("--deadline-ms", type=float, help="frames not served within this are late (default: 100 GPU, 5000 CPU)")
    p.add_argument("--no-prompts", action="store_true", help="no prompt encoder (prompts are refused)")
    p.add_argument("--metrics", type=int, metavar="PORT", help="Prometheus metrics on this loopback port (docs/operators.md)")
    p.add_argument("--osc", type=int, metavar="PORT", help="OSC control on this loopback UDP port")
    p.add_argument("--preview", type=int, metavar="PORT", help="the live preview page on this loopback port")
    p.add_argument("--presets", metavar="FILE", help="a presets file (TOML) of named looks; save_preset writes it")
    p.add_argument("--log-json", action="store_true", help="log one JSON object per line (docs/operators.md)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="N service processes behind this address, one per GPU on cuda (or N on the CPU); "
                        "docs/operators.md, \"Several GPUs\"")
    p.add_argument("--gpus", metavar="LIST", help="one service process on each of these GPUs, e.g. 0,1")
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    # Set by a front for its workers (service/workers.py).
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--session-id-base", type=_session_id_base, default=0, help=argparse.SUPPRESS)
    p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("render", help="render a procedural scene with the reference engine into a capture")
    p.add_argument("--seed", type=int, required=True, help="scene seed (seeds from 1000000 on are held out for evaluation)")
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--size", type=parse_size, required=True, help="WxH, e.g. 256x256 or 1080p")
    p.add_argument("--out", required=True, help="a new folder for the capture")
    p.add_argument("--styles", default="all", help="all, none, or a comma list of style names")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--camera", default="orbit", choices=CAMERA_KINDS)
    p.add_argument("--objects", type=int, help="number of primitives (default: from the seed, 5..40)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--chunk-frames", type=int, help="frames per chunk file (default: about 64 MiB per chunk)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("preview", help="a contact sheet (G-buffers, motion, style targets) of a capture")
    p.add_argument("capture", help="a capture folder")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--frames", help="comma list of frame indices (default: first, middle, last)")
    p.add_argument("--tile-width", type=int, default=192)
    p.set_defaults(func=cmd_preview)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` starts its ranks with the same
    if getattr(args, "size", "unset") is None:
        args.size = [(1280, 720), (1920, 1080)]
    try:
        check_frame_args(args)
        with raised():  # SIGTERM and SIGINT unwind (children stopped, rings unlinked), no traceback
            return args.func(args)
    except StreamStyleError as exc:
        print(f"streamstyle: error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"streamstyle: {exc}", file=sys.stderr)
        return exit_code(exc.signum)


if __name__ == "__main__":
    sys.exit(main())
