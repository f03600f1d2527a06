"""Motion-vector warp: known motions move content by the expected pixels; the depth test marks
exactly the uncovered region."""

import torch

from streamstyle.kernels.warp import warp_previous


def test_camera_translation_moves_content_and_marks_the_new_edge(gen):
    b, c, h, w = 1, 3, 10, 16
    prev = torch.randn(b, c, h, w, generator=gen)
    depth = torch.full((b, 1, h, w), 5.0)
    # The camera pans so content moves 3 pixels left: the current pixel x shows what was at x + 3.
    motion = torch.zeros(b, 2, h, w)
    motion[:, 0] = 3.0
    warped, valid = warp_previous(prev, depth, motion, depth, tolerance=0.05)
    assert torch.allclose(warped[..., :w - 3], prev[..., 3:], atol=1e-5)
    expect = torch.ones(b, 1, h, w, dtype=torch.bool)
    expect[..., w - 3:] = False  # entered from the right: no history there
    assert torch.equal(valid, expect)


def test_vertical_subpixel_motion_interpolates(gen):
    prev = torch.randn(1, 2, 8, 8, generator=gen, dtype=torch.float64)
    depth = torch.ones(1, 1, 8, 8)
    motion = torch.zeros(1, 2, 8, 8)
    motion[:, 1] = -1.5  # source 1.5 rows up
    warped, _ = warp_previous(prev, depth, motion, depth, 0.05)
    assert torch.allclose(warped[:, :, 3], 0.5 * (prev[:, :, 1] + prev[:, :, 2]), atol=1e-5)


def test_moving_object_disoccludes_exactly_the_background_it_leaves(gen):
    h, w = 12, 20
    prev_depth = torch.full((1, 1, h, w), 50.0)
    prev_depth[..., 4:8, 5:9] = 2.0  # an object, at columns 5..8 last frame
    cur_depth = torch.full((1, 1, h, w), 50.0)
    cur_depth[..., 4:8, 8:12] = 2.0  # moved 3 pixels right
    motion = torch.zeros(1, 2, h, w)
    motion[:, 0, 4:8, 8:12] = -3.0  # the object's pixels came from 3 to the left; background is static
    prev = torch.randn(1, 4, h, w, generator=gen)
    warped, valid = warp_previous(prev, prev_depth, motion, cur_depth, 0.05)
    expect = torch.ones(1, 1, h, w, dtype=torch.bool)
    expect[..., 4:8, 5:8] = False  # background revealed where the object was
    assert torch.equal(valid, expect)
    assert torch.allclose(warped[..., 4:8, 8:12], prev[..., 4:8, 5:9], atol=1e-5)


def test_random_motion_flags_every_out_of_frame_source(gen):
    h, w = 9, 13
    motion = torch.randn(2, 2, h, w, generator=gen) * 6
    depth = torch.ones(2, 1, h, w)
    _, valid = warp_previous(torch.randn(2, 1, h, w, generator=gen), depth, motion, depth, 0.05)
    xs = torch.arange(w).view(1, 1, w) + motion[:, 0]
    ys = torch.arange(h).view(1, h, 1) + motion[:, 1]
    inside = (xs > -0.5) & (xs < w - 0.5) & (ys > -0.5) & (ys < h - 0.5)
    assert torch.equal(valid[:, 0], inside)
