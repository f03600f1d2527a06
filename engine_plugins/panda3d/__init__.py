"""StreamStyle for Panda3D: a G-buffer pass in Panda3D's own GLSL, streamed to the service through
the Python client and a shared-memory ring, the stylized frame composited back as the final image
(docs/panda3d.md). Needs the `panda3d` extra; never imports torch, the service or the model."""

from .contract import panda3d_layout

__all__ = ["StreamStyle", "View", "GBufferPass", "Lighting", "panda3d_layout"]


def __getattr__(name):
    if name in ("StreamStyle", "View"):
        from . import plugin

        return getattr(plugin, name)
    if name in ("GBufferPass", "Lighting"):
        from . import gbuffer

        return getattr(gbuffer, name)
    raise AttributeError(name)
