"""CUDA IPC end to end: the service and the engine in separate processes on one GPU."""

import pytest
import torch

from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
from streamstyle.model.layout import reference_layout
from streamstyle.model.stylizer import Stylizer
from streamstyle.model.weights import load_weights
from streamstyle.interop.client import Client

from .test_service_e2e import ServiceProcess, weights  # noqa: F401  (the module-scoped fixture)

pytestmark = pytest.mark.gpu


@pytest.fixture
def gpu_service(tmp_path, weights):  # noqa: F811
    svc = ServiceProcess(tmp_path, weights, "--no-prompts", "--device", "cuda",
                         config={"heartbeat_ms": 100, "reap_after_ms": 1000, "dtype": "fp32"})
    yield svc
    svc.stop()


def test_frames_over_cuda_ipc_match_the_model_and_handles_close(gpu_service, weights):  # noqa: F811
    w, h = 96, 64
    scene = Scene.generate(5, objects=10)
    renderer = Renderer(scene, CameraPath("handheld", seed=5, extent=scene.extent), w, h, device="cuda")
    frames = [renderer.render(i) for i in range(6)]
    layout = reference_layout(w, h)
    with Client(gpu_service.address, timeout_s=60) as client:
        session = client.open_session(w, h, layout, backend="cuda-ipc", seed=9)
        got = []
        for f in frames:
            slot = session.acquire_slot(timeout_s=30)
            to_slot(f, layout, session.ring.input(slot))  # written on this process's stream
            ev = client.wait(session, session.submit(slot), timeout_s=60)
            assert ev.status == "done", (ev.reason, ev.message)
            got.append(session.output(ev.slot)[..., :3].cpu())
        assert client.stats()["service"]["ipc_allocations_open"] == 1
        session.close()
        assert client.stats()["service"]["ipc_allocations_open"] == 0  # every handle it opened is closed
    sty = Stylizer(load_weights(weights, device="cuda"))
    s = sty.open_session(w, h, layout, seed=9)
    for f, out in zip(frames, got):
        rgb = sty.step(s, to_slot(f, layout))
        want = torch.round(rgb.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).cpu()
        assert (out.int() - want.int()).abs().max() <= 2


def test_a_cuda_ipc_ring_that_does_not_fit_is_refused(gpu_service):
    from streamstyle.interop.cuda_ipc import CudaIpcRing
    from streamstyle.interop.client import ServiceError

    w, h = 64, 48
    layout = reference_layout(w, h)
    with Client(gpu_service.address, timeout_s=60) as client:
        ring = CudaIpcRing.create(3, layout.slot_bytes(w, h), w * h * 4)
        try:
            desc = ring.describe()
            desc["outputs"][1]["offset"] = ring.total  # past the end of the allocation
            msg = {"type": "open", "width": w, "height": h, "layout": layout.to_dict(), "ring": desc}
            with pytest.raises(ServiceError) as info:
                client.request(msg)
            assert info.value.code == "bad_ring" and "runs past its allocation" in info.value.message
            assert client.stats()["service"]["ipc_allocations_open"] == 0
        finally:
            ring.close()
