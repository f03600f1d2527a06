"""A Panda3D ShowBase without a screen: EGL on whatever GL the machine has (Mesa's llvmpipe on a
CPU, the NVIDIA driver on a GPU machine), for tests, the demo, captures and servers."""

from __future__ import annotations

import os


def headless_base(width: int, height: int, egl_device: int | None = None, extra_prc: str = ""):
    """A ShowBase rendering offscreen at `width` x `height` through p3headlessgl. One per process
    (Panda3D's ShowBase is a singleton); call `base.destroy()` before making another."""
    os.environ.setdefault("EGL_PLATFORM", "surfaceless")  # Mesa: no X, no GBM device needed
    from panda3d.core import loadPrcFileData

    prc = [f"win-size {width} {height}", "window-type offscreen", "load-display p3headlessgl",
           "audio-library-name null", "sync-video false", "textures-power-2 none", "notify-level-device fatal",
           "notify-level-display error",
           # Mipmapped textures by default: unfiltered minification shimmers from frame to frame,
           # which no motion vector can explain and the model would have to fight as flicker.
           "texture-minfilter mipmap", "texture-anisotropic-degree 4"]
    if egl_device is not None:
        prc.append(f"egl-device-index {egl_device}")
    loadPrcFileData("streamstyle-headless", "\n".join(prc) + "\n" + extra_prc)
    from direct.showbase.ShowBase import ShowBase

    return ShowBase(windowType="offscreen")
