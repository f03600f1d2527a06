"""`streamstyle eval-media`: what the evaluation scores, as pictures a person can look at.

- Stills, one PNG per style and size (default 512x512 and 1280x720): the engine's frame | the
  model's output | the style oracle, the last of a short run along the held-out camera path, so the
  output carries the history the service builds up. Written `eval-<style>-<W>x<H>.png`.
- A side-by-side video (`eval-side-by-side.mp4`): the engine's frame | the per-frame baseline | the
  model as the service runs it, each style in turn along one camera path, labelled.

Both come from the evaluation's own per-frame path (`evaluate.run_sequence`, the held-out scene
and phrasings), so the pictures are of what `streamstyle eval` scores. The video is encoded by the
service's recording writer (`service.recorder.mp4_writer`); both need the video extra (pillow,
imageio-ffmpeg). PNGs are saved with a 256-colour palette to stay small enough for the docs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine_plugins.reference_engine.oracles import STYLES
from ..engine_plugins.reference_engine.prompts import split
from ..interop.limits import DEFAULT_STEPS, DEFAULT_STRENGTH
from ..model.stylizer import Stylizer
from ..model.training.evaluate import EvalConfig, reference_sequences, run_sequence
from .demo import label

STILL_SIZES = ((512, 512), (1280, 720))
VIDEO_SIZE = (640, 360)
VIDEO_NAME = "eval-side-by-side.mp4"


def still_name(style: str, size: tuple[int, int]) -> str:
    return f"eval-{style}-{size[0]}x{size[1]}.png"


def _u8(img: torch.Tensor) -> torch.Tensor:
    """[H, W, 3] float in [0, 1] (any device) -> [H, W, 3] uint8 on the CPU."""
    return torch.round(img.detach().float().clamp(0, 1) * 255).to(torch.uint8).cpu()


def _strip(panels: list[tuple[torch.Tensor, str]]) -> torch.Tensor:
    """Labelled [H, W, 3] float images side by side -> [H, W * n, 3] uint8."""
    return torch.cat([label(_u8(img), text) for img, text in panels], dim=1)


def _save_png(strip: torch.Tensor, path: Path, colors: int = 256) -> None:
    from PIL import Image

    img = Image.fromarray(strip.numpy())
    img.quantize(colors, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def _prompts(styles: list[str]) -> dict[str, list[str]]:
    held = split("heldout").phrasings
    return {s: list(held[s]) for s in styles}


def write_media(stylizer: Stylizer, images: str | Path | None = "docs/images", media: str | Path | None = "docs/media",
                styles: list[str] | None = None, still_sizes=STILL_SIZES, video_size: tuple[int, int] = VIDEO_SIZE,
                seed: int | None = None, frames: int = 8, video_frames: int = 30, steps: int = DEFAULT_STEPS,
                strength: float = DEFAULT_STRENGTH, colors: int = 256, log=print) -> list[Path]:
    """Stills into `images` and the video into `media` (either None: not written) of `styles`
    (default: all) on held-out scene `seed` (default: the first held-out seed); `frames` frames per
    still's run, `video_frames` per style in the video; the stills' palette has `colors` colours
    (2-256; at 256, the nine styles' stills at 512x512 and 1280x720 take about 5 MB). Returns the
    files written."""
    styles = list(STYLES) if styles is None else list(styles)
    unknown = [s for s in styles if s not in STYLES]
    if unknown or not styles:
        raise ValueError(f"unknown style(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(STYLES)}")
    if frames < 1 or video_frames < 1:
        raise ValueError(f"frames and video frames must be at least 1, got {frames} and {video_frames}")
    if not 2 <= colors <= 256:
        raise ValueError(f"a still's palette holds 2 to 256 colours, not {colors}")
    try:
        import PIL  # noqa: F401
        if media is not None:
            import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise RuntimeError("eval-media needs the video extra (pillow and imageio-ffmpeg): "
                           "pip install 'streamstyle[video]'") from None
    seed = split("heldout").seeds[0] if seed is None else seed
    prompts = _prompts(styles)
    written: list[Path] = []
    if images is not None:
        folder = Path(images)
        folder.mkdir(parents=True, exist_ok=True)
        for size in still_sizes:
            cfg = EvalConfig(seeds=[seed], prompts=prompts, size=tuple(size), frames=frames, steps=steps,
                             strength=strength)
            (seq,) = reference_sequences(cfg, stylizer.device)
            last = seq.frames[-1]
            for style in styles:
                out = run_sequence(stylizer, seq.frames, prompts[style][0], cfg, seq.seed, False)[-1]
                path = folder / still_name(style, size)
                _save_png(_strip([(last.color, "input"), (out, f"ours: {style}"), (STYLES[style](last), "oracle")]), path,
                          colors)
                written.append(path)
                log(f"{path} ({path.stat().st_size / 1e3:.0f} kB)")
    if media is not None:
        from ..service.recorder import mp4_writer

        folder = Path(media)
        folder.mkdir(parents=True, exist_ok=True)
        w, h = video_size
        cfg = EvalConfig(seeds=[seed], prompts=prompts, size=(w, h), frames=video_frames * len(styles), steps=steps,
                         strength=strength)
        (seq,) = reference_sequences(cfg, stylizer.device)
        path = folder / VIDEO_NAME
        writer = mp4_writer(path, 3 * w, h)
        try:
            for k, style in enumerate(styles):
                part = seq.frames[k * video_frames:(k + 1) * video_frames]
                prompt = prompts[style][0]
                ours = run_sequence(stylizer, part, prompt, cfg, seq.seed, False)
                base = run_sequence(stylizer, part, prompt, cfg, seq.seed, True)
                for f, b, o in zip(part, base, ours):
                    strip = _strip([(f.color, "input"), (b, "per-frame baseline"), (o, f"ours: {style}")])
                    rgba = torch.cat([strip, torch.full_like(strip[..., :1], 255)], -1)
                    writer.send(rgba.contiguous().numpy())
        finally:
            writer.close()
        written.append(path)
        log(f"{path} ({path.stat().st_size / 1e3:.0f} kB, {video_frames * len(styles)} frames)")
    return written
