"""Where the shipped model's error lies: its DiT's quarter-resolution latent, or its refiner.

For each style, over the same held-out frames, the frame function is run three ways and scored with
the evaluation's own metrics (`model.training.evaluate.score_sequence`, against the same targets):

  model            the service's frame function (`stylize_frame`: the DiT's 2 steps, then the refiner)
  exact latent     the refiner finishing the oracle's own quarter-resolution latent, with the history
                   of its own previous outputs (`frozen_frame_loss`, training's frozen-DiT frame: the
                   frame function's cut and tail, the latent given)
  bilinear         the model's latent, and the oracle's latent, upsampled bilinearly (no refiner)

and the model's latent against the oracle's (PSNR at quarter resolution). If the exact-latent column
is far above the model's, the DiT's latent is what limits fidelity (train the DiT); if it is close,
the refiner is (a larger or longer-trained refiner).

    python benchmarks/latent_ceiling.py --size 256 --frames 8 --seed 1000000     # ~5 min on 2 CPUs
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F

from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
from streamstyle.engine_plugins.reference_engine.gbuffers import to_planes
from streamstyle.engine_plugins.reference_engine.oracles import STYLES
from streamstyle.engine_plugins.reference_engine.prompts import split
from streamstyle.model.frame import FrameParams, padded_size, stylize_frame
from streamstyle.model.layout import reference_layout
from streamstyle.model.state import StateSpec
from streamstyle.model.text import PromptEncoder
from streamstyle.model.training.evaluate import Targets, psnr, score_sequence
from streamstyle.model.training.objective import FrameDraw, ObjectiveConfig, frozen_frame_loss, latent_target
from streamstyle.model.weights import load_weights, shipped_weights


def _up(latent: torch.Tensor, stride: int, w: int, h: int) -> torch.Tensor:
    """A latent [1, 3, h', w'] in [-1, 1], bilinearly to [H, W, 3] in [0, 1] (the cropped frame)."""
    img = F.interpolate(latent.float(), scale_factor=stride, mode="bilinear", align_corners=False)
    return ((img[0, :, :h, :w] + 1) / 2).clamp(0, 1).permute(1, 2, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=None, help="a checkpoint (default: the shipped model)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1_000_000, help="a held-out scene seed")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    model = load_weights(args.weights or shipped_weights(), dev).eval()
    mc = model.config
    w = h = args.size
    layout = reference_layout(w, h, surface=True)
    scene = Scene.generate(args.seed)
    r = Renderer(scene, CameraPath("handheld", seed=args.seed, extent=scene.extent), w, h, fps=30.0, device=dev)
    frames = [r.render(i) for i in range(args.frames)]
    targets = Targets.of(frames)
    planes = [{k: v[None].to(dev) for k, v in to_planes(f, layout).items()} for f in frames]
    prompts = PromptEncoder(device=dev, max_tokens=mc.max_prompt_tokens)
    phrasing = split("heldout").phrasings
    spec = StateSpec(mc, *padded_size(mc, w, h))
    cfg = ObjectiveConfig()
    rows = {}
    t0 = time.time()
    for style in STYLES:
        ctx = prompts.context(phrasing[style][0], mc.max_prompts, mc.max_prompt_tokens)
        gen = torch.Generator().manual_seed(args.seed)
        ours, exact, up_ours, up_exact, lat = [], [], [], [], []
        state_m, state_e = spec.zeros(dev), spec.zeros(dev)
        with torch.no_grad():
            for k, (f, p) in enumerate(zip(frames, planes)):
                cut = torch.tensor([k == 0 or bool(f.cut)], device=dev)
                target = targets.oracles[style][k].permute(2, 0, 1)[None].to(dev)
                z = latent_target(target, mc.latent_stride)
                noise = torch.randn(spec.shapes()["latent"], generator=gen).to(dev)
                rgb, state_m = stylize_frame(model, layout, p, w, h, ctx, state_m, noise,
                                             FrameParams(steps=2, strength=0.5, reset=cut))
                ours.append(rgb[0].permute(1, 2, 0).float().cpu())
                up_ours.append(_up(state_m.latent[:, :, : z.shape[2], : z.shape[3]], mc.latent_stride, w, h).cpu())
                lat.append(psnr((state_m.latent[:, :, : z.shape[2], : z.shape[3]].float() + 1) / 2, (z + 1) / 2))
                state_m = dataclasses.replace(state_m, image=state_m.image.to(StateSpec.dtype("image")))
                draw = FrameDraw(strength=torch.full((1, 1), 0.5, device=dev), noise=torch.zeros_like(noise),
                                 steps=None, u=None)
                zp = F.pad(z, (0, state_e.latent.shape[3] - z.shape[3], 0, state_e.latent.shape[2] - z.shape[2]),
                           mode="replicate")
                out = frozen_frame_loss(model, layout, p, w, h, target, ctx, state_e, cut, draw, zp, None, cfg)
                exact.append(out.rgb[0].permute(1, 2, 0).float().cpu())
                up_exact.append(_up(z, mc.latent_stride, w, h).cpu())
                state_e = dataclasses.replace(out.state, image=out.state.image.to(StateSpec.dtype("image")))
        score = {name: score_sequence(outs, targets, style)
                 for name, outs in (("model", ours), ("exact", exact), ("up_model", up_ours), ("up_exact", up_exact))}
        rows[style] = {**{f"{n}_fid": s.fidelity_psnr for n, s in score.items()},
                       **{f"{n}_adh": s.adherence for n, s in score.items()}, "latent_psnr": statistics.fmean(lat)}
        print(f"{style:10} model {rows[style]['model_fid']:6.2f}  exact latent {rows[style]['exact_fid']:6.2f}  "
              f"bilinear: model {rows[style]['up_model_fid']:6.2f} exact {rows[style]['up_exact_fid']:6.2f}  "
              f"latent PSNR {rows[style]['latent_psnr']:6.2f}  ({time.time() - t0:.0f} s)", flush=True)
    print(f"\nheld-out seed {args.seed}, {w}x{h}, {args.frames} frames, 2 steps; fidelity PSNR (dB) on the "
          f"evaluation's metric (the averaged oracle), adherence in brackets")
    print("| style | model | exact latent | bilinear, model's latent | bilinear, exact latent | latent PSNR |")
    print("| --- | --- | --- | --- | --- | --- |")
    for style, r_ in list(rows.items()) + [("**mean**", {k: statistics.fmean(v[k] for v in rows.values())
                                                          for k in next(iter(rows.values()))})]:
        print(f"| {style} | {r_['model_fid']:.2f} ({r_['model_adh']:.0%}) | {r_['exact_fid']:.2f} ({r_['exact_adh']:.0%}) "
              f"| {r_['up_model_fid']:.2f} | {r_['up_exact_fid']:.2f} | {r_['latent_psnr']:.2f} |")


if __name__ == "__main__":
    main()
