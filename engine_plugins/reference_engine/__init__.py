"""The reference engine: a procedural renderer that plays the game's part in the demo, the tests,
training and benchmarks. Real G-buffers with exact motion vectors, Unreal's conventions, the same
torch code on the CPU and the GPU. See docs/reference-engine.md."""

from .camera import CAMERA_KINDS, CameraPath
from .render import RenderedFrame, Renderer
from .scene import Scene

__all__ = ["CAMERA_KINDS", "CameraPath", "RenderedFrame", "Renderer", "Scene"]
