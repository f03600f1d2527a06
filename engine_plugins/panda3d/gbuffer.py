"""The G-buffer pass: the game's scene, seen by the game's camera, drawn once more by this plugin's
shader into five float render targets, and read back into numpy planes in the contract's layout.

What must hold:
- The game keeps its scene graph and camera: the pass adds a camera under `base.camera` (same
  lens, so it follows every camera move) rendering into an offscreen buffer, and a sky dome that
  follows the camera. Nothing of the game's own render state is changed, except the per-node shader
  inputs the pass owns (names start with `ss_`).
- `begin_frame()` runs after the game moved things and before Panda renders: it hands every
  GeomNode its model matrix from the previous frame and the camera its previous view-projection,
  which is all the shader needs for motion vectors of the camera and of moving objects.
- `read()` runs after Panda rendered: it returns the planes top row first, in slot order, every
  value finite (any non-finite value is replaced and counted, never sent).
- Panda3D's textures come back bottom row first and in BGRA order; `read` turns them around once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from panda3d.core import (FrameBufferProperties, GraphicsOutput, GraphicsPipe, LMatrix4f,
                          LVector3f, MaterialAttrib, NodePath, OmniBoundingVolume, Shader, Texture, WindowProperties)

from . import glsl
from .contract import GBufferLayout, panda3d_layout
from .sky import make_dome

TARGETS = ("color", "geometry", "surface", "motion", "extra")
_BITPLANES = (GraphicsOutput.RTPColor, GraphicsOutput.RTPAuxHrgba0, GraphicsOutput.RTPAuxHrgba1,
              GraphicsOutput.RTPAuxHrgba2, GraphicsOutput.RTPAuxHrgba3)


@dataclass(frozen=True)
class Lighting:
    """The pass's sun and sky (world directions in Panda3D's z-up frame)."""
    sun_dir: tuple[float, float, float] = (0.45, -0.35, 0.82)
    sun_color: tuple[float, float, float] = (3.0, 2.85, 2.6)
    sky_zenith: tuple[float, float, float] = (0.25, 0.45, 0.9)
    sky_horizon: tuple[float, float, float] = (0.75, 0.8, 0.9)


@dataclass
class GBufferFrame:
    """One frame read back: [H, W, 4] float32 planes (top row first) and [H, W] uint32 ids."""
    planes: dict[str, np.ndarray]
    ids: np.ndarray
    view: np.ndarray  # [4, 4] world -> camera, y-up world, camera looks down -z (OpenGL)
    proj: np.ndarray  # [4, 4] camera -> clip (OpenGL)
    nonfinite: int = 0  # values replaced because they were not finite
    extra: np.ndarray | None = None  # [H, W, 4] surface position (xyz), sun term (w); with extras=True


# Panda3D's z-up world to the contract's y-up one, and Panda3D's camera frame (looks down +y, z up)
# to OpenGL's (looks down -z, y up), as row-vector matrices (Panda3D's convention: p' = p M).
_Z_TO_Y = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def _np(mat) -> np.ndarray:
    return np.array([[mat.getCell(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


@dataclass
class _Tracked:
    path: NodePath  # held: a NodePath's key stays the node's only while some path to it lives
    object_id: int
    prev: LMatrix4f | None = None


class GBufferPass:
    """Renders the G-buffers of `base`'s scene (`scene`, default `base.render`) from `base.camera`.

    width, height: the G-buffer size (default: the window's). extras: also read back the surface
    position and sun term (what the capture oracles need). Call `begin_frame()` before Panda renders
    (the plugin's task does), `read()` after.
    """

    def __init__(self, base, width: int | None = None, height: int | None = None, scene: NodePath | None = None,
                 lighting: Lighting = Lighting(), extras: bool = False, sort: int = -20):
        self.base = base
        self.scene = scene if scene is not None else base.render
        self.width = int(width or base.win.getXSize())
        self.height = int(height or base.win.getYSize())
        self.lens = base.camLens
        near, far = self.lens.getNear(), self.lens.getFar()
        if not (math.isfinite(far) and 0 < near < far):
            raise ValueError(f"the camera lens needs a finite far plane beyond near, got {near}, {far}")
        self.depth_range = (float(near), float(far))
        self.layout: GBufferLayout = panda3d_layout(self.width, self.height, self.depth_range)
        self.extras = extras
        self.nonfinite_total = 0
        self._tracked: dict[int, _Tracked] = {}  # NodePath key -> its id and last model matrix
        self._next_id = 0
        self._prev_view_proj: LMatrix4f | None = None
        self._view_proj: LMatrix4f | None = None
        self._frame = 0

        fbp = FrameBufferProperties()
        fbp.setRgbaBits(16, 16, 16, 16)
        fbp.setFloatColor(True)
        fbp.setAuxHrgba(4)
        fbp.setDepthBits(24)
        props = WindowProperties.size(self.width, self.height)
        self.buffer = base.graphicsEngine.makeOutput(base.pipe, "streamstyle-gbuffer", sort, fbp, props,
                                                     GraphicsPipe.BFRefuseWindow, base.win.getGsg(), base.win)
        if self.buffer is None:
            raise RuntimeError("Panda3D could not make a float offscreen buffer with 4 auxiliary targets "
                               "(needs OpenGL 3.3 and multiple render targets)")
        self.textures: dict[str, Texture] = {}
        for name, plane in zip(TARGETS, _BITPLANES):
            tex = Texture(f"streamstyle-{name}")
            read = name != "extra" or extras
            self.buffer.addRenderTexture(tex, GraphicsOutput.RTMCopyRam if read else GraphicsOutput.RTMBindOrCopy,
                                         plane)
            self.textures[name] = tex
        self.buffer.setClearColorActive(True)
        self.buffer.setClearColor((0, 0, 0, 1))
        for i, clear in enumerate([(0, 1, 0, far), (0, 0, 0, 1), (0, 0, 0, 0), (0, 0, 0, 0)]):
            self.buffer.setClearActive(GraphicsOutput.RTPAuxHrgba0 + i, True)
            self.buffer.setClearValue(GraphicsOutput.RTPAuxHrgba0 + i, clear)

        self.camera: NodePath = base.makeCamera(self.buffer, lens=self.lens, scene=self.scene,
                                                camName="streamstyle-gbuffer-cam")
        state = NodePath("streamstyle-gbuffer-state")
        state.setShader(Shader.make(Shader.SL_GLSL, glsl.GBUFFER_VERT, glsl.GBUFFER_FRAG), 10000)
        self.camera.node().setInitialState(state.getState())

        self.sky = make_dome(radius=0.5 * far)
        self.sky.reparentTo(self.scene)
        self.sky.setBin("background", -1000)
        self.sky.setDepthWrite(False)
        self.sky.setShaderInput("ss_is_sky", 1.0)
        self.sky.setShaderInput("ss_object_id", 0.0)
        self.sky.setShaderInput("ss_has_material", 0.0)
        self.sky.node().setBounds(OmniBoundingVolume())
        self.sky.node().setFinal(True)
        root = self.scene
        root.setShaderInput("ss_size", (self.width, self.height))
        root.setShaderInput("ss_depth_range", self.depth_range)
        root.setShaderInput("ss_is_sky", 0.0)
        root.setShaderInput("ss_object_id", 0.0)
        root.setShaderInput("ss_has_material", 0.0)
        root.setShaderInput("ss_prev_model", LMatrix4f.identMat())
        self.set_lighting(lighting)
        self._set_camera_inputs()

    def set_lighting(self, lighting: Lighting) -> None:
        d = LVector3f(*lighting.sun_dir)
        d.normalize()
        self.lighting = lighting
        self.scene.setShaderInput("ss_sun_dir", d)
        self.scene.setShaderInput("ss_sun_color", LVector3f(*lighting.sun_color))
        self.scene.setShaderInput("ss_sky_zenith", LVector3f(*lighting.sky_zenith))
        self.scene.setShaderInput("ss_sky_horizon", LVector3f(*lighting.sky_horizon))

    def _current_view_proj(self) -> LMatrix4f:
        return LMatrix4f(self.scene.getMat(self.camera) * self.lens.getProjectionMat())

    def _set_camera_inputs(self) -> None:
        vp = self._current_view_proj()
        prev = self._prev_view_proj if self._prev_view_proj is not None else vp
        self.scene.setShaderInput("ss_prev_view_proj", prev)
        self.scene.setShaderInput("ss_camera_pos", self.camera.getPos(self.scene))
        self._view_proj = vp

    def begin_frame(self, cut: bool = False) -> None:
        """Before Panda renders: the previous frame's matrices into the shader, this frame's kept.
        cut: the camera jumped (no motion is meaningful): motion is written as if nothing moved."""
        self._frame += 1
        if cut:
            self._prev_view_proj = None
        sky_prev = LMatrix4f(self.sky.getMat(self.scene))
        self.sky.setPos(self.camera.getPos(self.scene))
        self.sky.setShaderInput("ss_prev_model", self.sky.getMat(self.scene) if cut else sky_prev)
        self._set_camera_inputs()
        self._prev_view_proj = self._view_proj
        live = set()
        for path in self.scene.findAllMatches("**/+GeomNode"):
            if path == self.sky:
                continue
            key = path.getKey()
            live.add(key)
            cur = LMatrix4f(path.getMat(self.scene))
            entry = self._tracked.get(key)
            if entry is None:
                self._next_id += 1
                entry = self._tracked[key] = _Tracked(path, object_id=self._next_id)
                path.setShaderInput("ss_object_id", float(entry.object_id))
                has_mat = any(path.node().getGeomState(i).hasAttrib(MaterialAttrib)
                              for i in range(path.node().getNumGeoms())) or path.hasMaterial()
                path.setShaderInput("ss_has_material", 1.0 if has_mat else 0.0)
            prev = entry.prev if (entry.prev is not None and not cut) else cur
            path.setShaderInput("ss_prev_model", prev)
            entry.prev = cur
        for key in [k for k in self._tracked if k not in live]:
            del self._tracked[key]

    def view_proj(self) -> tuple[np.ndarray, np.ndarray]:
        """This frame's world-to-camera and camera-to-clip matrices in the contract's conventions
        (y-up world, OpenGL camera and clip; column vectors: clip = proj @ view @ p)."""
        cam_to_world = _np(self.camera.getMat(self.scene))  # row vectors, Panda3D frames
        # Panda3D camera frame -> OpenGL camera frame is the same axis swap as z-up -> y-up.
        view_rows = np.linalg.inv(cam_to_world) @ _Z_TO_Y
        world_rows = np.linalg.inv(_Z_TO_Y) @ view_rows  # from the y-up world
        proj_rows = np.linalg.inv(_Z_TO_Y) @ _np(self.lens.getProjectionMat())
        return world_rows.T.astype(np.float32), proj_rows.T.astype(np.float32)

    def _target(self, name: str) -> np.ndarray:
        tex = self.textures[name]
        data = tex.getRamImageAs("RGBA")
        # Panda3D hands float targets back as 32-bit floats whatever their GPU format.
        dtype = {Texture.T_float: np.float32, Texture.T_half_float: np.float16}.get(tex.getComponentType())
        if dtype is None:
            raise RuntimeError(f"the {name} target came back as component type {tex.getComponentType()}, "
                               "not float")
        return np.frombuffer(memoryview(data), dtype=dtype).reshape(self.height, self.width, 4)[::-1]

    def read(self) -> GBufferFrame:
        """The frame Panda just rendered, as numpy planes (copies: the textures are reused)."""
        planes, bad = {}, 0
        for name in ("color", "geometry", "surface", "motion"):
            plane = np.array(self._target(name), dtype=np.float32)
            finite = np.isfinite(plane)
            if not finite.all():
                bad += int(plane.size - np.count_nonzero(finite))
                np.nan_to_num(plane, copy=False, nan=0.0, posinf=60000.0, neginf=-60000.0)
            planes[name] = plane
        ids = planes["motion"][..., 3].astype(np.uint32)
        view, proj = self.view_proj()
        extra = np.array(self._target("extra")) if self.extras else None
        self.nonfinite_total += bad
        return GBufferFrame(planes, ids, view, proj, bad, extra)

    def write_slot(self, frame: GBufferFrame, views: dict) -> None:
        """Copy a read frame into a slot's per-channel views (`ClientSession.planes(slot)`: numpy
        arrays, or anything numpy can view without a copy)."""
        for channel, plane in (("color", "color"), ("normals", "geometry"), ("albedo", "surface"),
                               ("motion", "motion")):
            np.asarray(views[channel])[...] = frame.planes[plane]
        np.asarray(views["ids"])[..., 0] = frame.ids

    def destroy(self) -> None:
        self.sky.removeNode()
        self.camera.removeNode()
        self.base.graphicsEngine.removeWindow(self.buffer)
        for name in ("ss_size", "ss_depth_range", "ss_is_sky", "ss_object_id", "ss_has_material", "ss_prev_model",
                     "ss_prev_view_proj", "ss_camera_pos", "ss_sun_dir", "ss_sun_color", "ss_sky_zenith",
                     "ss_sky_horizon"):
            self.scene.clearShaderInput(name)
