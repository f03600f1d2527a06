"""The reference engine: determinism, exact motion vectors, disocclusion, surface-attached detail."""

import math

import pytest
import torch
import torch.nn.functional as F

from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
from streamstyle.engine_plugins.reference_engine.gbuffers import to_planes, to_slot
from streamstyle.engine_plugins.reference_engine.oracles import STYLES, SURFACE_ATTACHED, style_names
from streamstyle.engine_plugins.reference_engine.prompts import PHRASINGS, is_heldout_seed, split
from streamstyle.engine_plugins.reference_engine.scene import SHAPE_NAMES
from streamstyle.kernels.warp import warp_previous
from streamstyle.model.layout import Channel, GBufferLayout, reference_layout

W, H = 96, 72


def renderer(seed, camera, moving=0.5, objects=14, size=(W, H), fps=30.0):
    scene = Scene.generate(seed, objects=objects, moving=moving)
    return Renderer(scene, CameraPath(camera, seed=seed, extent=scene.extent), *size, fps=fps)


def chw(x):
    return x.permute(2, 0, 1).unsqueeze(0).float()


def sample(img, motion, mode):
    """img [H, W, C] sampled at each pixel + motion (pixels)."""
    h, w, _ = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    grid = torch.stack(((2 * (xs + motion[..., 0]) + 1) / w - 1, (2 * (ys + motion[..., 1]) + 1) / h - 1), -1)
    return F.grid_sample(chw(img), grid[None], mode=mode, align_corners=False, padding_mode="border")[0].permute(1, 2, 0)


def covisible(prev, cur):
    """The depth test the model uses, at full resolution."""
    _, valid = warp_previous(chw(prev.color), chw(prev.depth), chw(cur.motion), chw(cur.depth), 0.05)
    return valid[0, 0]


def interior(prev, cur):
    """Co-visible pixels whose source's 3x3 neighbourhood is one object: bilinear sampling there
    mixes nothing across a silhouette."""
    ids = prev.ids.float()
    same = F.max_pool2d(chw(ids), 3, 1, 1) == -F.max_pool2d(-chw(ids), 3, 1, 1)
    src_same = sample(same[0].permute(1, 2, 0).float(), cur.motion, "nearest")[..., 0] > 0.5
    src_id = sample(ids, cur.motion, "nearest")[..., 0]
    return covisible(prev, cur) & src_same & (src_id == cur.ids[..., 0].float()) & (cur.ids[..., 0] > 0)


def test_same_seed_same_frames_and_seeds_differ():
    a = renderer(11, "handheld").render(5)
    b = renderer(11, "handheld").render(5)
    c = renderer(12, "handheld").render(5)
    for name in ("color_hdr", "depth", "normals", "motion", "ids", "surface_pos"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.color_hdr, c.color_hdr)
    assert torch.equal(a.view, b.view)


def test_frames_rendered_together_are_the_frames_rendered_alone():
    r = renderer(13, "cuts", moving=0.7)
    together = r.render_many([22, 23, 24, 25])  # across a cut at 24
    for f in together:
        alone = r.render(f.index)
        for name in ("color_hdr", "depth", "normals", "albedo", "motion", "ids", "surface_pos", "sun", "world_pos"):
            assert torch.equal(getattr(alone, name), getattr(f, name)), (f.index, name)
        assert alone.cut == f.cut and torch.equal(alone.prev_view, f.prev_view)


def test_scenes_cover_the_promised_ranges():
    counts, kinds = [], set()
    for seed in range(40):
        s = Scene.generate(seed)
        counts.append(s.count)
        kinds |= set(s.shape.tolist())
        assert (s.base_pos[:, 1] >= 0).all()
    assert min(counts) >= 5 and max(counts) <= 40 and len(set(counts)) > 10
    assert kinds == set(range(len(SHAPE_NAMES)))
    with pytest.raises(ValueError):
        Scene.generate(0, objects=-1)
    with pytest.raises(ValueError, match="unknown camera kind"):
        CameraPath("crane")


@pytest.mark.parametrize("camera, moving", [("orbit", 0.0), ("static", 1.0), ("handheld", 0.6), ("strafe", 0.6), ("dolly", 0.6)])
def test_motion_vectors_are_exact(camera, moving):
    """Following each pixel's motion vector into the previous frame lands on the same surface
    point: the previous surface position found there equals the current one to a small fraction of
    a pixel's footprint, on every co-visible pixel away from silhouettes."""
    r = renderer(21, camera, moving=moving)
    prev, cur = r.render(8), r.render(9)
    mask = interior(prev, cur)
    assert mask.float().mean() > 0.3
    warped = sample(prev.surface_pos, cur.motion, "bilinear")
    err = (warped - cur.surface_pos).norm(dim=-1)
    footprint = cur.depth[..., 0] * 2 * math.tan(math.radians(r.camera.fov_y_deg) / 2) / r.height
    rel = (err / footprint)[mask]
    # The tail is bilinear interpolation across creases inside one object (box edges), under half a pixel.
    assert rel.median() < 0.02 and torch.quantile(rel, 0.99) < 0.5, (rel.median(), torch.quantile(rel, 0.99))
    # And the vectors matter: on the pixels that move, ignoring them is far off.
    moving_px = mask & (cur.motion.norm(dim=-1) > 0.5)
    assert moving_px.sum() > 20
    still = (sample(prev.surface_pos, torch.zeros_like(cur.motion), "bilinear") - cur.surface_pos).norm(dim=-1)
    assert (still / footprint)[moving_px].median() > 0.3
    # The lit colour agrees too, up to shading that moves with the light and the view.
    color_err = (sample(prev.color, cur.motion, "bilinear") - cur.color).abs().mean(-1)[mask]
    assert color_err.mean() < 0.03


def test_disocclusion_is_exactly_what_the_depth_test_marks():
    """Ground truth: a pixel's surface point, moved to where it was last frame, was visible from the
    previous camera. The depth test on the exact motion vectors agrees on nearly every pixel; it
    may differ only on silhouette pixels, where nearest-texel depth picks the other side."""
    r = renderer(33, "handheld", moving=1.0, objects=20)
    prev, cur = r.render(14), r.render(15)
    ids = cur.ids[..., 0]
    obj = ids >= 2
    rot_p, pos_p = r.scene.poses(prev.time)
    rot, pos = r.scene.poses(cur.time)
    pi = (ids.long() - 2).clamp_min(0).flatten()
    wp = cur.world_pos.reshape(-1, 3)
    local = torch.einsum("nj,nji->ni", wp - pos[pi], rot[pi])
    prev_world = torch.where(obj.flatten().unsqueeze(-1), torch.einsum("nij,nj->ni", rot_p[pi], local) + pos_p[pi], wp)
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    src = torch.stack([xs, ys], -1) + cur.motion
    sky_inside = (src[..., 0] > -0.5) & (src[..., 0] < W - 0.5) & (src[..., 1] > -0.5) & (src[..., 1] < H - 0.5)
    truth = torch.where(ids == 0, sky_inside, r.visible(prev.index, prev_world).reshape(H, W))
    marked = covisible(prev, cur)
    edge = (F.max_pool2d(chw(cur.ids.float()), 3, 1, 1) != -F.max_pool2d(-chw(cur.ids.float()), 3, 1, 1))[0, 0]
    src_edge = sample(edge.float().unsqueeze(-1), cur.motion, "nearest")[..., 0] > 0
    off_edge = ~edge & ~src_edge
    assert (~truth).sum() > 20  # the motion really uncovers something
    assert torch.equal(marked[off_edge], truth[off_edge])
    assert (marked != truth).float().mean() < 0.03


def test_camera_cut_is_flagged():
    r = renderer(3, "cuts")
    assert not r.render(23).cut and r.render(24).cut and not r.render(25).cut


@pytest.mark.parametrize("style", SURFACE_ATTACHED)
def test_surface_attached_detail_stays_on_its_surface(style):
    """Under camera motion the oracle's own warp error stays small: well under that of the same
    detail glued to the screen instead (frame t's surface coordinates used for frame t-1 too).
    And the detail is not in the G-buffers: sliding it along the surfaces changes the image while
    every G-buffer stays the same."""
    r = renderer(44, "strafe", moving=0.0, size=(160, 120), fps=3.0)  # about 10 pixels of motion a frame
    prev, cur = r.render(4), r.render(5)
    mask = interior(prev, cur)
    oracle = STYLES[style]

    def warp_err(p, c):
        return (sample(oracle(p), c.motion, "bilinear") - oracle(c)).abs().mean(-1)[mask].mean()

    glued = type(prev)(**{**prev.__dict__})
    glued.surface_pos = cur.surface_pos
    attached, on_screen = warp_err(prev, cur), warp_err(glued, cur)
    assert attached < 0.5 * on_screen, (attached, on_screen)
    shifted = type(cur)(**{**cur.__dict__})
    shifted.surface_pos = cur.surface_pos + 0.37
    assert (oracle(shifted) - oracle(cur)).abs().mean() > 0.005


def test_every_style_is_a_distinct_valid_image():
    f = renderer(5, "orbit").render(2)
    outs = {n: fn(f) for n, fn in STYLES.items()}
    assert len(outs) >= 8
    for n, o in outs.items():
        assert o.shape == (H, W, 3) and torch.isfinite(o).all() and o.min() >= 0 and o.max() <= 1, n
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (outs[a] - outs[b]).abs().mean() > 0.03, (a, b)
    assert style_names("cel, noir") == ["cel", "noir"]
    with pytest.raises(ValueError, match="unknown style"):
        style_names("cel,sepia")


def test_phrasings_and_held_out_material():
    assert set(PHRASINGS) == set(STYLES)
    for style, texts in PHRASINGS.items():
        assert len(texts) >= 6 and len(set(texts)) == len(texts)
        assert len({len(t.split()) for t in texts}) >= 3, style  # different lengths
    train, held = split("train"), split("heldout")
    for style in STYLES:
        assert held.phrasings[style] and not set(held.phrasings[style]) & set(train.phrasings[style])
    assert all(is_heldout_seed(s) and s not in train.seeds for s in held.seeds)
    with pytest.raises(ValueError, match="unknown split"):
        split("validation")


def test_frames_feed_the_model_in_engine_formats(tiny_model):
    from streamstyle.model.stylizer import Stylizer

    r = renderer(8, "orbit", size=(64, 48))
    layout = reference_layout(64, 48)
    sty = Stylizer(tiny_model)
    s = sty.open_session(64, 48, layout)
    slot = None
    for i in range(3):
        f = r.render(i)
        slot = to_slot(f, layout, slot)
        out = sty.step(s, slot)
        assert out.shape == (3, 48, 64) and torch.isfinite(out).all()
    planes = layout.view(slot, 64, 48)
    assert torch.allclose(planes["motion"].float(), f.motion, atol=0.05)
    assert torch.equal(planes["depth"], f.depth)
    # Other encodings convert back to the same pixels.
    for enc in ("uv", "ndc"):
        alt = GBufferLayout((Channel("motion", "rg32f", encoding=enc),))
        raw = to_planes(f, alt)["motion"]
        sx, sy = alt.motion_scale(64, 48)
        assert torch.allclose(raw * torch.tensor([sx, sy]), f.motion, atol=1e-4)


def test_oracles_keep_to_the_frames_device():
    """Every constant an oracle makes lives on the frame's device: run them on the meta device,
    where any CPU tensor mixed in raises (what would fail on a GPU, caught without one)."""
    f = renderer(2, "orbit", size=(32, 24)).render(1)
    meta = type(f)(**{k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in f.__dict__.items()})
    for name, oracle in STYLES.items():
        assert oracle(meta).shape == (24, 32, 3), name
