"""Prompt phrasings per style, and the held-out material reserved for evaluation.

Each style has eight phrasings of different wording and length. The last two of each, and the
scene seeds from HELDOUT_SEED_BASE on, are held out: training never draws them, evaluation selects
them by the split name "heldout".
"""

from __future__ import annotations

from dataclasses import dataclass

PHRASINGS: dict[str, tuple[str, ...]] = {
    "cel": (
        "cel shading with ink outlines",
        "toon shaded, flat colour bands and bold black outlines",
        "anime style",
        "cartoon look: hard-edged shadows, thick inked contours",
        "comic book cel shading",
        "flat shaded cartoon with clean black linework around every object",
        "cel-shaded video game look",
        "like a hand-inked animation cel",
    ),
    "pencil": (
        "pencil hatching",
        "graphite sketch with cross-hatched shadows on white paper",
        "pencil drawing",
        "hand-drawn with a soft pencil, shading made of parallel strokes",
        "crosshatch sketch",
        "an artist's sketchbook study in graphite, hatched tones",
        "black and white pencil sketch with hatching",
        "drawn in pencil, strokes following the surfaces",
    ),
    "watercolor": (
        "watercolor painting",
        "soft watercolour wash on textured paper",
        "watercolor",
        "loose watercolour with granulating pigment and pale washes",
        "aquarelle illustration",
        "painted in watercolors, colours bleeding softly, paper grain showing through",
        "delicate watercolor sketch",
        "wet-on-wet watercolour landscape painting",
    ),
    "oilpaint": (
        "oil painting",
        "thick impasto oil paint with visible brush strokes",
        "painterly",
        "oil on canvas, heavy brush marks",
        "expressive oil painting with directional strokes",
        "like a classical oil painting, paint dabbed on with a wide brush",
        "brushy oil paint",
        "impressionist painting with bold brushwork",
    ),
    "blueprint": (
        "blueprint",
        "technical blueprint drawing, white lines on blue",
        "architectural blueprint with a construction grid",
        "engineering schematic",
        "cyanotype technical drawing",
        "white line drawing on blueprint paper with grid lines",
        "draftsman's blueprint plan",
        "blue technical plan with white outlines",
    ),
    "pixelart": (
        "pixel art",
        "retro 8-bit pixel art with a limited palette",
        "16-colour pixel graphics",
        "chunky low resolution pixels like an old console game",
        "pixelated retro game",
        "8-bit",
        "old school sprite art with big square pixels",
        "low-res pixel art, limited colour palette",
    ),
    "thermal": (
        "thermal camera",
        "infrared heat vision",
        "thermal imaging with a false-colour heat map",
        "FLIR infrared view, hot objects glowing",
        "heat signature view",
        "as seen through a thermal scope",
        "infrared",
        "predator vision heat map",
    ),
    "noir": (
        "film noir",
        "black and white noir, deep shadows and high contrast",
        "noir",
        "moody monochrome detective film look",
        "high contrast black-and-white cinema",
        "1940s film noir with crushed blacks and a vignette",
        "dark grayscale noir photograph",
        "classic noir movie still",
    ),
    "neon": (
        "neon glow",
        "glowing neon outlines on a dark scene",
        "synthwave neon",
        "cyberpunk neon edges in the dark",
        "tron-like glowing lines",
        "neon sign outlines, everything else nearly black",
        "retro-futuristic neon glow",
        "bright neon light tubes tracing every object",
    ),
}

HELDOUT_PHRASINGS_PER_STYLE = 2
HELDOUT_SEED_BASE = 1_000_000
HELDOUT_SEED_COUNT = 32


@dataclass(frozen=True)
class Split:
    name: str
    seeds: range
    phrasings: dict[str, tuple[str, ...]]


def split(name: str) -> Split:
    """'train' or 'heldout'; anything else raises ValueError."""
    k = HELDOUT_PHRASINGS_PER_STYLE
    if name == "train":
        return Split("train", range(0, HELDOUT_SEED_BASE), {s: p[:-k] for s, p in PHRASINGS.items()})
    if name == "heldout":
        return Split("heldout", range(HELDOUT_SEED_BASE, HELDOUT_SEED_BASE + HELDOUT_SEED_COUNT),
                     {s: p[-k:] for s, p in PHRASINGS.items()})
    raise ValueError(f"unknown split {name!r}; known: train, heldout")


def is_heldout_seed(seed: int) -> bool:
    return HELDOUT_SEED_BASE <= seed < HELDOUT_SEED_BASE + HELDOUT_SEED_COUNT


