"""The renderer: analytic ray casting of the scene into real G-buffers, on the CPU or the GPU.

One primary ray per pixel centre, a shadow ray towards the sun, Lambert plus Blinn-Phong shading
under sun and sky. Per frame it produces what an engine's G-buffer pass produces (lit color, linear
depth, normals, albedo, roughness, metallic, motion vectors, object ids) plus what only the style
oracles use (world position, the surface point in its object's own frame, the sun term).

Motion vectors are exact, not estimated: the hit point's position in its object's frame is mapped
through the object's previous pose and projected by the previous camera. Convention (Unreal's
velocity direction): motion = previous pixel position - current pixel position, in pixels, x right
and y down, pixel centres at integers. Sky pixels move with the camera's rotation only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .camera import CameraPath
from .mathutil import fbm, normalize
from .scene import BOX, CAPSULE, CHECKER, CYLINDER, NOISE, SPHERE, STRIPES, Scene

INF = float("inf")
GROUND, SKY = -1, -2  # primitive index of the ground plane, and of a miss
ID_SKY, ID_GROUND = 0, 1  # object ids: primitives are 2, 3, ...


@dataclass
class RenderedFrame:
    index: int
    time: float
    cut: bool  # the camera cut to a new shot at this frame: no history is valid
    color_hdr: torch.Tensor  # [H, W, 3] linear scene-referred
    color: torch.Tensor  # [H, W, 3] display-referred (x / (1 + x)) ** (1 / 2.2)
    depth: torch.Tensor  # [H, W, 1] linear view depth; `far` for sky
    normals: torch.Tensor  # [H, W, 3] world-space unit normals
    albedo: torch.Tensor  # [H, W, 3] linear
    roughness: torch.Tensor  # [H, W, 1]
    metallic: torch.Tensor  # [H, W, 1]
    motion: torch.Tensor  # [H, W, 2] current -> previous, pixels
    ids: torch.Tensor  # [H, W, 1] int32: 0 sky, 1 ground, 2 + primitive index
    world_pos: torch.Tensor  # [H, W, 3]
    surface_pos: torch.Tensor  # [H, W, 3] the hit point in its object's frame (world for the ground)
    sun: torch.Tensor  # [H, W, 1] max(n . l, 0) * unshadowed
    view: torch.Tensor  # [4, 4] world -> camera
    proj: torch.Tensor  # [4, 4] camera -> clip (OpenGL)
    prev_view: torch.Tensor  # [4, 4] the previous frame's view


def to_local(v: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """R^T v for v [M, 3], R [M, 3, 3]. Broadcast multiply-add: a batched 3x3 matmul runs as one
    tiny GEMV per row, which was most of the frame on a GPU."""
    return (v.unsqueeze(-1) * rot).sum(-2)


def to_world(v: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """R v for v [M, 3], R [M, 3, 3]."""
    return (rot * v.unsqueeze(-2)).sum(-1)


def _sphere_t(ol, dl, r, eps):
    b = (ol * dl).sum(-1)
    c = (ol * ol).sum(-1) - r * r
    disc = b * b - c
    t = -b - torch.sqrt(disc.clamp_min(0))
    return torch.where((disc >= 0) & (t > eps), t, INF)


def _box_t(ol, dl, half, eps):
    dsafe = torch.where(dl.abs() < 1e-9, torch.full_like(dl, 1e-9), dl)
    t1, t2 = (-half - ol) / dsafe, (half - ol) / dsafe
    tmin = torch.minimum(t1, t2).amax(-1)
    tmax = torch.maximum(t1, t2).amin(-1)
    return torch.where((tmax >= tmin) & (tmin > eps), tmin, INF)


def _cyl_side_t(ol, dl, r, h, eps):
    a = dl[..., 0] ** 2 + dl[..., 2] ** 2
    b = ol[..., 0] * dl[..., 0] + ol[..., 2] * dl[..., 2]
    c = ol[..., 0] ** 2 + ol[..., 2] ** 2 - r * r
    disc = b * b - a * c
    t = (-b - torch.sqrt(disc.clamp_min(0))) / a.clamp_min(1e-12)
    y = ol[..., 1] + t * dl[..., 1]
    return torch.where((disc >= 0) & (a > 1e-12) & (t > eps) & (y.abs() <= h), t, INF)


def _cap_t(ol, dl, r, y0, eps):
    dy = torch.where(dl[..., 1].abs() < 1e-9, torch.full_like(dl[..., 1], 1e-9), dl[..., 1])
    t = (y0 - ol[..., 1]) / dy
    x = ol[..., 0] + t * dl[..., 0]
    z = ol[..., 2] + t * dl[..., 2]
    return torch.where((t > eps) & (x * x + z * z <= r * r), t, INF)


def _shape_t(kind, ol, dl, size, eps):
    """Hit distance [M] (inf for a miss) of rays ol, dl [M, 3] (in each primitive's frame) against
    primitives of one kind with sizes [M, 3]."""
    r, h = size[:, 0], size[:, 1]
    if kind == SPHERE:
        return _sphere_t(ol, dl, r, eps)
    if kind == BOX:
        return _box_t(ol, dl, size, eps)
    if kind == CYLINDER:
        return torch.minimum(_cyl_side_t(ol, dl, r, h, eps),
                             torch.minimum(_cap_t(ol, dl, r, h, eps), _cap_t(ol, dl, r, -h, eps)))
    off = torch.zeros_like(ol)
    off[:, 1] = h
    return torch.minimum(_cyl_side_t(ol, dl, r, h, eps),
                         torch.minimum(_sphere_t(ol - off, dl, r, eps), _sphere_t(ol + off, dl, r, eps)))


def bounding_radius(shape: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Radius [P] of a sphere around each primitive's origin that contains it."""
    r, h = size[:, 0], size[:, 1]
    return torch.where(shape == SPHERE, r, torch.where(shape == BOX, size.norm(dim=-1),
                       torch.where(shape == CYLINDER, torch.sqrt(r * r + h * h), r + h))) * 1.001


def _grid_pairs(ru, rv, lo_u, hi_u, lo_v, hi_v, cell: float):
    """All (ray, primitive) pairs whose ray point (ru, rv) [N] may lie in the primitive's
    rectangle [lo_u, hi_u] x [lo_v, hi_v] ([P] each), found through a uniform grid of `cell`-sized
    bins: rays are sorted by bin, each primitive lists the bins its rectangle touches, and every
    ray in those bins becomes a candidate (the exact test rejects the extras)."""
    dev = ru.device
    cell = max(cell, 1e-3)
    live = ru < 1e8  # rays parked at 1e9 take part in nothing
    lo = torch.stack([ru[live].amin(), rv[live].amin()]) if bool(live.any()) else ru.new_zeros(2)
    gu = ((ru - lo[0]) / cell).floor().clamp(-1, 4095).to(torch.int64) + 1  # 0 holds everything below
    gv = ((rv - lo[1]) / cell).floor().clamp(-1, 4095).to(torch.int64) + 1
    width = 4098
    key = gv * width + gu
    order = torch.argsort(key)
    skey = key[order]
    pu0 = ((lo_u - lo[0]) / cell).floor().clamp(-1, 4095).to(torch.int64) + 1
    pu1 = ((hi_u - lo[0]) / cell).floor().clamp(-1, 4095).to(torch.int64) + 1
    pv0 = ((lo_v - lo[1]) / cell).floor().clamp(-1, 4095).to(torch.int64) + 1
    pv1 = ((hi_v - lo[1]) / cell).floor().clamp(-1, 4095).to(torch.int64) + 1
    nu, nv = (pu1 - pu0 + 1).clamp_min(0), (pv1 - pv0 + 1).clamp_min(0)
    cells_per = nu * nv
    prim_of = torch.repeat_interleave(torch.arange(lo_u.numel(), device=dev), cells_per)
    if prim_of.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        return empty, empty
    first = torch.cumsum(cells_per, 0) - cells_per
    k = torch.arange(prim_of.numel(), device=dev) - first[prim_of]
    cu = pu0[prim_of] + k % nu[prim_of]
    cv = pv0[prim_of] + k // nu[prim_of]
    ckey = cv * width + cu
    start = torch.searchsorted(skey, ckey)
    count = torch.searchsorted(skey, ckey, right=True) - start
    prim = torch.repeat_interleave(prim_of, count)
    base = torch.repeat_interleave(start, count)
    offs = torch.arange(prim.numel(), device=dev) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    return order[base + offs], prim


class Renderer:
    """Renders frames of one scene along one camera path at one size."""

    def __init__(self, scene: Scene, camera: CameraPath, width: int, height: int, fps: float = 30.0,
                 device: str | torch.device = "cpu"):
        if width < 1 or height < 1:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.device = torch.device(device)
        self.scene = scene.to(self.device)
        self.camera = camera
        self.width, self.height, self.fps = width, height, fps
        self._kinds = [k for k in (SPHERE, BOX, CYLINDER, CAPSULE) if bool((scene.shape == k).any())]
        self._bound = bounding_radius(self.scene.shape, self.scene.size)  # [P]
        self._ground_r2 = (4.0 * scene.extent) ** 2
        self.proj = camera.projection_matrix(width, height).to(self.device)
        j = torch.arange(width, device=self.device, dtype=torch.float32)
        i = torch.arange(height, device=self.device, dtype=torch.float32)
        self._pix = torch.stack(torch.meshgrid(j, i, indexing="xy"), -1).reshape(-1, 2)  # [N, 2] (x, y)

    def _cast(self, o, d, rot, pos, with_ground: bool, pairs, eps: float = 1e-4):
        """Nearest hit of rays o, d [N, 3] among the candidate (ray, primitive) `pairs`.
        Primitive indices are virtual when several frames render at once: frame k's primitive p
        is k * P + p, with rot, pos [K * P, ...] holding every frame's poses.
        Returns t [N] and (virtual) primitive index [N] (GROUND, SKY)."""
        n = o.shape[0]
        best_t = torch.full((n,), INF, device=o.device)
        best_p = torch.full((n,), SKY, dtype=torch.int64, device=o.device)
        if with_ground:
            tg = torch.where(d[:, 1] < -1e-9, -o[:, 1] / d[:, 1].clamp(max=-1e-9), torch.full_like(best_t, INF))
            gx, gz = o[:, 0] + tg * d[:, 0], o[:, 2] + tg * d[:, 2]
            tg = torch.where((tg > eps) & (gx * gx + gz * gz < self._ground_r2), tg, INF)  # a finite disc
            best_p = torch.where(tg < best_t, GROUND, best_p)
            best_t = torch.minimum(tg, best_t)
        ray, prim = pairs
        if ray.numel() == 0:
            return best_t, best_p
        t = torch.full((ray.numel(),), INF, device=o.device)
        kinds = self.scene.shape[prim % self.scene.count]
        for kind in self._kinds:
            sel = (kinds == kind).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            r_i, p_i = ray[sel], prim[sel]
            r_m = rot[p_i]
            ol = to_local(o[r_i] - pos[p_i], r_m)
            dl = to_local(d[r_i], r_m)
            t[sel] = _shape_t(kind, ol, dl, self.scene.size[p_i % self.scene.count], eps)
        obj_t = torch.full((n,), INF, device=o.device).scatter_reduce(0, ray, t, "amin")
        winner = (t == obj_t[ray]) & torch.isfinite(t)  # the primitive that gave the minimum
        obj_p = torch.full((n,), SKY, dtype=torch.int64, device=o.device)
        obj_p[ray[winner]] = prim[winner]
        better = obj_t < best_t
        return torch.where(better, obj_t, best_t), torch.where(better, obj_p, best_p)

    def _primary_pairs(self, view, pos):
        """Candidate (pixel, primitive) pairs: pixels inside the screen rectangle of each
        primitive's bounding sphere (the projected corners of its bounding cube, which contain it;
        a primitive reaching behind the near plane gets the whole screen)."""
        corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)],
                               dtype=torch.float32, device=pos.device)
        pts = pos.unsqueeze(1) + corners * self._bound.view(-1, 1, 1)  # [P, 8, 3]
        cam = pts @ view[:3, :3].T + view[:3, 3]
        z = -cam[..., 2]
        f = self.proj[1, 1] * self.height / 2
        px = cam[..., 0] / z.clamp_min(1e-6) * f + self.width / 2 - 0.5
        py = -cam[..., 1] / z.clamp_min(1e-6) * f + self.height / 2 - 0.5
        front = (z > self.camera.near).all(-1)
        lo_x = torch.where(front, px.amin(-1).floor(), torch.zeros_like(front, dtype=torch.float32))
        hi_x = torch.where(front, px.amax(-1).ceil(), torch.full_like(lo_x, self.width - 1))
        lo_y = torch.where(front, py.amin(-1).floor(), torch.zeros_like(lo_x))
        hi_y = torch.where(front, py.amax(-1).ceil(), torch.full_like(lo_x, self.height - 1))
        return _grid_pairs(self._pix[:, 0], self._pix[:, 1], lo_x, hi_x, lo_y, hi_y, cell=16.0)

    def _shadow_pairs(self, origins, active, pos):
        """Candidate (ray, primitive) pairs for the parallel shadow rays: on a plane perpendicular
        to the sun, each primitive's bounding sphere covers a disc; a ray can only hit primitives
        whose disc holds its origin's projection."""
        L = self.scene.sun_dir
        u = normalize(torch.linalg.cross(L, torch.tensor([0.0, 0.0, 1.0], device=L.device) + 0.1 * L.roll(1)))
        v = torch.linalg.cross(L, u)
        ou, ov = origins @ u, origins @ v
        cu, cv = pos @ u, pos @ v
        r = self._bound
        big = torch.full_like(ou, 1e9)
        ray, prim = _grid_pairs(torch.where(active, ou, big), torch.where(active, ov, big),
                                cu - r, cu + r, cv - r, cv + r, cell=float(r.median()) * 2)
        return ray, prim

    def _project(self, view, x, w):
        """Pixel positions of homogeneous points (x [N, 3], w 1 for points, 0 for directions)."""
        xh = torch.cat([x, torch.full_like(x[:, :1], w)], -1)
        clip = xh @ (self.proj @ view).T
        cw = clip[:, 3:4]
        ndc = clip[:, :2] / torch.where(cw.abs() < 1e-9, torch.full_like(cw, 1e-9), cw)
        px = (ndc[:, 0] + 1) * self.width / 2 - 0.5
        py = (1 - ndc[:, 1]) * self.height / 2 - 0.5
        pix = torch.stack([px, py], -1)
        behind = (cw[:, 0] <= 0)
        far_away = torch.tensor([4.0 * self.width, 4.0 * self.height], device=x.device)
        return torch.where(behind.unsqueeze(-1), far_away, pix)

    @torch.no_grad()
    def render(self, index: int) -> RenderedFrame:
        return self.render_many([index])[0]

    @torch.no_grad()
    def render_many(self, indices: list[int]) -> list[RenderedFrame]:
        """Several frames in one pass: the per-pixel work runs once over every frame's rays, so the
        host-side cost of a call is paid once (what bounds rendering on a GPU). Each frame is
        exactly what `render` gives alone."""
        sc, cam, dev = self.scene, self.camera, self.device
        w, h = self.width, self.height
        n, p, k_count = w * h, sc.count, len(indices)
        tan = torch.tan(torch.deg2rad(torch.tensor(cam.fov_y_deg / 2)))
        ndc_x = (2 * (self._pix[:, 0] + 0.5) / w - 1) * tan * w / h
        ndc_y = (1 - 2 * (self._pix[:, 1] + 0.5) / h) * tan
        d_cam = normalize(torch.stack([ndc_x, ndc_y, -torch.ones_like(ndc_x)], -1))
        ds, os_, fwd, views, prev_views = [], [], [], [], []
        rots, poss, rots_p, poss_p = [], [], [], []
        ray_parts, prim_parts = [], []
        for k, index in enumerate(indices):
            rot_c, eye = (x.to(dev) for x in cam.pose(index, self.fps))
            views.append(cam.view_matrix(index, self.fps).to(dev))
            prev_views.append(cam.view_matrix(index - 1, self.fps).to(dev))
            ds.append(d_cam @ rot_c.T)  # [N, 3] world
            os_.append(eye.expand(n, 3))
            fwd.append((-rot_c[:, 2]).expand(n, 3))
            rot, pos = sc.poses(index / self.fps)
            rot_p, pos_p = sc.poses((index - 1) / self.fps)
            rots.append(rot)
            poss.append(pos)
            rots_p.append(rot_p)
            poss_p.append(pos_p)
            ray, prim = self._primary_pairs(views[-1], pos)
            ray_parts.append(ray + k * n)
            prim_parts.append(prim + k * p)
        d, o, forward = torch.cat(ds), torch.cat(os_), torch.cat(fwd)
        rot, pos, rot_p, pos_p = torch.cat(rots), torch.cat(poss), torch.cat(rots_p), torch.cat(poss_p)
        t, vprim = self._cast(o, d, rot, pos, True, (torch.cat(ray_parts), torch.cat(prim_parts)))

        hit = vprim != SKY
        obj = vprim >= 0
        vp = vprim.clamp_min(0)  # virtual index, for poses
        pi = vp % p  # the primitive itself, for shape and material
        x = o + d * torch.where(hit, t, torch.zeros_like(t)).unsqueeze(-1)  # world hit points
        r_pix = rot[vp]  # [K*N, 3, 3] the hit primitive's rotation, gathered once
        local = to_local(x - pos[vp], r_pix)  # hit in the object's frame
        n_local = self._normals(local, pi)
        n_world = to_world(n_local, r_pix)
        up = torch.tensor([0.0, 1.0, 0.0], device=dev)
        normal = torch.where(obj.unsqueeze(-1), n_world, up.expand_as(n_world))
        normal = torch.where(hit.unsqueeze(-1), normal, -d)
        surface = torch.where(obj.unsqueeze(-1), local, x)

        albedo, rough, metal = self._materials(surface, pi, obj, hit)

        # Sun visibility: a shadow ray from each hit point; the ground casts no shadow.
        s_origin = x + normal * (1e-3 + 1e-4 * t.clamp(max=1e4)).unsqueeze(-1)
        facing = hit & ((normal * sc.sun_dir).sum(-1) > 0)  # back-facing points are unlit anyway
        ray_parts, prim_parts = [], []
        for k in range(k_count):
            sl = slice(k * n, (k + 1) * n)
            ray, prim = self._shadow_pairs(s_origin[sl], facing[sl], poss[k])
            ray_parts.append(ray + k * n)
            prim_parts.append(prim + k * p)
        st, sp = self._cast(s_origin, sc.sun_dir.expand_as(d), rot, pos, False,
                            (torch.cat(ray_parts), torch.cat(prim_parts)))
        lit = facing & (sp == SKY)
        ndl = (normal * sc.sun_dir).sum(-1).clamp_min(0) * lit
        color = self._shade(d, normal, albedo, rough, metal, ndl, hit)

        prev_x = to_world(local, rot_p[vp]) + pos_p[vp]
        prev_x = torch.where(obj.unsqueeze(-1), prev_x, x)
        motion = torch.cat([
            torch.where(hit[k * n:(k + 1) * n].unsqueeze(-1),
                        self._project(prev_views[k], prev_x[k * n:(k + 1) * n], 1.0),
                        self._project(prev_views[k], d[k * n:(k + 1) * n], 0.0)) - self._pix
            for k in range(k_count)])

        depth = torch.where(hit, t * (d * forward).sum(-1), torch.full_like(t, cam.far)).clamp(max=cam.far)
        ids = torch.where(obj, pi + 2, torch.where(vprim == GROUND, ID_GROUND, ID_SKY)).to(torch.int32)
        world = torch.where(hit.unsqueeze(-1), x, o + d * cam.far)
        display = (color / (1 + color)).clamp_min(0) ** (1 / 2.2)

        frames = []
        for k, index in enumerate(indices):
            sl = slice(k * n, (k + 1) * n)

            def img(v, c):
                return v[sl].reshape(h, w, c)

            frames.append(RenderedFrame(
                index=index, time=index / self.fps, cut=cam.is_cut(index),
                color_hdr=img(color, 3), color=img(display, 3),
                depth=img(depth, 1), normals=img(normal, 3), albedo=img(albedo, 3),
                roughness=img(rough, 1), metallic=img(metal, 1), motion=img(motion, 2), ids=img(ids, 1),
                world_pos=img(world, 3), surface_pos=img(surface, 3), sun=img(ndl, 1),
                view=views[k], proj=self.proj, prev_view=prev_views[k]))
        return frames

    @torch.no_grad()
    def visible(self, index: int, points: torch.Tensor, rel_tol: float = 1e-3) -> torch.Tensor:
        """Ground truth for tests: is each world point [N, 3] the first thing the camera sees along
        its ray at frame `index`, and inside the frame? Tests every primitive (no culling)."""
        rot_c, eye = (x.to(self.device) for x in self.camera.pose(index, self.fps))
        rot, pos = self.scene.poses(index / self.fps)
        to_p = points - eye
        dist = to_p.norm(dim=-1)
        d = to_p / dist.clamp_min(1e-9).unsqueeze(-1)
        n, p = points.shape[0], self.scene.count
        ray = torch.arange(n, device=self.device).repeat_interleave(p)
        prim = torch.arange(p, device=self.device).repeat(n)
        t, _ = self._cast(eye.expand_as(d), d, rot, pos, True, (ray, prim))
        view = self.camera.view_matrix(index, self.fps).to(self.device)
        pix = self._project(view, points, 1.0)
        inside = (pix[:, 0] > -0.5) & (pix[:, 0] < self.width - 0.5) & (pix[:, 1] > -0.5) & (pix[:, 1] < self.height - 0.5)
        return inside & (t >= dist * (1 - rel_tol))

    def _normals(self, p, pi):
        """Analytic normals in each hit primitive's frame. p [N, 3] local hit points."""
        sc = self.scene
        kind = sc.shape[pi]
        size = sc.size[pi]
        r, hh = size[:, 0:1], size[:, 1:2]
        sphere = p / r
        q = p / size
        axis = q.abs().argmax(-1, keepdim=True)
        box = torch.zeros_like(p).scatter(-1, axis, torch.sign(q.gather(-1, axis)))
        radial = torch.sqrt(p[:, 0:1] ** 2 + p[:, 2:3] ** 2)
        side = torch.cat([p[:, 0:1], torch.zeros_like(radial), p[:, 2:3]], -1) / radial.clamp_min(1e-9)
        cap = torch.cat([torch.zeros_like(radial), torch.sign(p[:, 1:2]), torch.zeros_like(radial)], -1)
        cyl = torch.where((hh - p[:, 1:2].abs()).abs() < (radial - r).abs(), cap, side)
        core = torch.cat([torch.zeros_like(radial), p[:, 1:2].clamp(-hh[:, 0:1].squeeze(-1).unsqueeze(-1), hh), torch.zeros_like(radial)], -1)
        capsule = normalize(p - core)
        k = kind.unsqueeze(-1)
        out = torch.where(k == SPHERE, sphere, torch.where(k == BOX, box, torch.where(k == CYLINDER, cyl, capsule)))
        return normalize(out)

    def _materials(self, surface, pi, obj, hit):
        sc = self.scene
        pattern = sc.pattern[pi]
        scale = sc.pattern_scale[pi].unsqueeze(-1)
        ps = surface * scale
        checker = ((torch.floor(ps).sum(-1)) % 2 == 0).float()
        stripes = (torch.sin(ps[:, 1] * 3.14159) > 0).float()
        mix = torch.where(pattern == CHECKER, checker, torch.where(pattern == STRIPES, stripes, torch.zeros_like(checker)))
        noisy = ((pattern == NOISE) & obj).nonzero(as_tuple=True)[0]  # noise only where a material uses it
        mix[noisy] = fbm(ps[noisy] * 0.5, octaves=3, seed=sc.seed % 1000)
        obj_albedo = torch.lerp(sc.albedo[pi], sc.albedo2[pi], mix.unsqueeze(-1))
        gs = surface[:, [0, 2]] * sc.ground_scale
        g_check = ((torch.floor(gs).sum(-1)) % 2 == 0).float()
        ground = (hit & ~obj).nonzero(as_tuple=True)[0]
        g_noise = torch.zeros_like(checker)
        g_noise[ground] = fbm(surface[ground] * 2.0, octaves=2, seed=sc.seed % 1000 + 7)
        g_albedo = torch.lerp(sc.ground_albedo[1], sc.ground_albedo[0], g_check.unsqueeze(-1)) * (0.8 + 0.4 * g_noise.unsqueeze(-1))
        albedo = torch.where(obj.unsqueeze(-1), obj_albedo, g_albedo)
        rough = torch.where(obj, sc.roughness[pi], torch.full_like(mix, 0.9))
        metal = torch.where(obj, sc.metallic[pi], torch.zeros_like(mix))
        zero = ~hit
        albedo = torch.where(zero.unsqueeze(-1), torch.zeros_like(albedo), albedo)
        rough = torch.where(zero, torch.ones_like(rough), rough)
        metal = torch.where(zero, torch.zeros_like(metal), metal)
        return albedo, rough, metal

    def _shade(self, d, n, albedo, rough, metal, ndl, hit):
        sc = self.scene
        L = sc.sun_dir
        sky_up = (0.5 + 0.5 * n[:, 1:2])
        ambient = torch.lerp(sc.sky_horizon, sc.sky_zenith, sky_up) * 0.35
        diffuse = albedo * (1 - metal.unsqueeze(-1)) * (sc.sun_color * ndl.unsqueeze(-1) / 3.14159 * 2.0 + ambient)
        hv = normalize(L - d)
        shin = 2.0 / rough.clamp_min(0.05) ** 4 - 2.0
        spec_pow = (n * hv).sum(-1).clamp_min(0) ** shin
        f0 = torch.lerp(torch.full_like(albedo, 0.04), albedo, metal.unsqueeze(-1))
        spec = f0 * (spec_pow * (shin + 8) / 25.13 * ndl).unsqueeze(-1) * sc.sun_color * 0.25
        surf = diffuse + spec
        up = d[:, 1:2].clamp_min(0) ** 0.5
        sky = torch.lerp(sc.sky_horizon, sc.sky_zenith, up) * 1.2
        sky = sky + sc.sun_color * ((d * L).sum(-1, keepdim=True).clamp_min(0) ** 400) * 4.0
        return torch.where(hit.unsqueeze(-1), surf, sky)
