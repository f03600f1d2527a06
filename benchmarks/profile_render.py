"""Profile one reference-engine frame with torch.profiler (where the time goes, host and device)."""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
from streamstyle.tools.cli import parse_size

size = parse_size(sys.argv[1] if len(sys.argv) > 1 else "1080p")
device = sys.argv[2] if len(sys.argv) > 2 else ("cuda" if torch.cuda.is_available() else "cpu")
scene = Scene.generate(3)
r = Renderer(scene, CameraPath("handheld", seed=3, extent=scene.extent), *size, device=device)
for i in range(3):
    r.render(i)
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
with profile(activities=acts) as prof:
    r.render(5)
    if device == "cuda":
        torch.cuda.synchronize()
key = "cuda_time_total" if device == "cuda" else "self_cpu_time_total"
print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=40))
