"""GPU workers behind one front over CUDA IPC (`serve --gpus`): a ring is placed on the worker of its
own GPU, its frames come back as the model computes them on that GPU, and a ring on a GPU no worker
serves is refused. Skipped without a GPU; the tests that need two GPUs skip on one."""

import pytest
import torch

from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
from streamstyle.interop.client import Client, ServiceError
from streamstyle.model.layout import reference_layout
from streamstyle.model.stylizer import Stylizer
from streamstyle.model.weights import load_weights

from .test_service_e2e import ServiceProcess, weights  # noqa: F401  (the module-scoped fixture)

pytestmark = pytest.mark.gpu
CONFIG = {"heartbeat_ms": 100, "reap_after_ms": 1000, "dtype": "fp32"}


def gpus(n: int) -> list[int]:
    if torch.cuda.device_count() < n:
        pytest.skip(f"needs {n} GPUs")
    return list(range(n))


@pytest.mark.parametrize("count", [1, 2])
def test_each_ring_goes_to_its_gpus_worker_and_frames_match_the_model(tmp_path, weights, count):  # noqa: F811
    devices = gpus(count)
    w, h = 96, 64
    layout = reference_layout(w, h)
    front = ServiceProcess(tmp_path, weights, "--no-prompts", "--gpus", ",".join(map(str, devices)), config=CONFIG)
    try:
        with Client(front.address, timeout_s=60) as client:
            assert client.welcome["workers"] == count and "cuda-ipc" in client.welcome["backends"]
            for g in devices:
                torch.cuda.set_device(g)
                scene = Scene.generate(5 + g, objects=10)
                renderer = Renderer(scene, CameraPath("handheld", seed=5 + g, extent=scene.extent), w, h, device=f"cuda:{g}")
                frames = [renderer.render(i) for i in range(4)]
                session = client.open_session(w, h, layout, backend="cuda-ipc", device=g, seed=9)
                got = []
                for f in frames:
                    slot = session.acquire_slot(timeout_s=30)
                    to_slot(f, layout, session.ring.input(slot))
                    ev = client.wait(session, session.submit(slot), timeout_s=60)
                    assert ev.status == "done", (ev.reason, ev.message)
                    got.append(session.output(ev.slot)[..., :3].cpu())
                stats = session.stats()
                assert stats["worker"] == devices.index(g) and stats["done"] == 4
                sty = Stylizer(load_weights(weights, device=f"cuda:{g}"))
                s = sty.open_session(w, h, layout, seed=9)
                for f, out in zip(frames, got):
                    rgb = sty.step(s, to_slot(f, layout))
                    want = torch.round(rgb.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).cpu()
                    assert (out.int() - want.int()).abs().max() <= 2, f"GPU {g}"
                session.close()
            service = client.stats()["service"]
            assert service["ipc_allocations_open"] == 0  # summed over the workers: every handle closed
            assert [x["device"] for x in service["workers"]] == [f"cuda:{g}" for g in devices]
    finally:
        front.stop()


def test_a_ring_on_a_gpu_no_worker_serves_is_bad_ring(tmp_path, weights):  # noqa: F811
    gpus(2)
    w, h = 64, 48
    front = ServiceProcess(tmp_path, weights, "--no-prompts", "--gpus", "0", config=CONFIG)
    try:
        with Client(front.address, timeout_s=60) as client:
            torch.cuda.set_device(1)
            with pytest.raises(ServiceError) as err:
                client.open_session(w, h, reference_layout(w, h), backend="cuda-ipc", device=1)
            assert err.value.code == "bad_ring" and "none on CUDA device 1" in err.value.message
    finally:
        front.stop()
