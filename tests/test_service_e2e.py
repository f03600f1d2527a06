"""End to end on the CPU: the service in its own process, engines in others, real ZeroMQ sockets,
real shared memory."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import zmq

from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
from streamstyle.model.frame import FrameParams
from streamstyle.model.layout import reference_layout
from streamstyle.model.stylizer import Stylizer
from streamstyle.model.weights import load_weights, save_weights
from streamstyle.interop.client import Client, ServiceError, ServiceUnavailable

from .conftest import perturb
from .service_process import ServiceProcess as _ServiceProcess


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from streamstyle.model.config import preset
    from streamstyle.model.network import StreamStyleModel

    g = torch.Generator().manual_seed(1234)
    return save_weights(perturb(StreamStyleModel(preset("tiny")), g), tmp_path_factory.mktemp("w") / "tiny")


def ServiceProcess(tmp_path, weights, *extra, config=None, address=None):
    """The shipped-path service with this module's tiny weights."""
    return _ServiceProcess(tmp_path, address or f"ipc://{tmp_path}/svc.sock", "--weights", str(weights), *extra,
                           config=config)


@pytest.fixture
def service(tmp_path, weights):
    # Silence alone would take 30 s to reap: a killed client must be caught by its closed connection.
    svc = ServiceProcess(tmp_path, weights, "--no-prompts", config={"heartbeat_ms": 100, "reap_after_ms": 30000})
    yield svc
    svc.stop()


def frames_of(seed, w, h, n):
    scene = Scene.generate(seed, objects=10)
    r = Renderer(scene, CameraPath("handheld", seed=seed, extent=scene.extent), w, h)
    return [r.render(i) for i in range(n)]


def reference_outputs(weights, frames, w, h, seed, params=FrameParams()):
    """What the model computes for these inputs in this process, as RGBA8."""
    layout = reference_layout(w, h)
    sty = Stylizer(load_weights(weights))
    s = sty.open_session(w, h, layout, seed=seed)
    outs = []
    for f in frames:
        rgb = sty.step(s, to_slot(f, layout), params)
        outs.append(torch.round(rgb.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8))
    return outs


def run_frames(client, session, frames):
    layout = session.layout
    outs, seqs = [], []
    for f in frames:
        slot = session.acquire_slot(timeout_s=10)
        to_slot(f, layout, session.ring.input(slot))
        seq = session.submit(slot)
        ev = client.wait(session, seq)
        assert ev.status == "done", (ev.status, ev.reason, ev.message)
        outs.append(torch.from_numpy(session.output(ev.slot)[..., :3].copy()))
        seqs.append(ev.seq)
    return outs, seqs


def test_frames_cross_processes_and_match_the_model_in_process(service, weights):
    w, h = 64, 48
    frames = frames_of(3, w, h, 10)
    with Client(service.address) as client:
        session = client.open_session(w, h, reference_layout(w, h), seed=11)
        got, seqs = run_frames(client, session, frames)
        stats = session.stats()
    want = reference_outputs(weights, frames, w, h, seed=11)
    for a, b in zip(got, want):
        diff = (a.int() - b.int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 0.02  # at most one RGBA8 step from float order
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert stats["done"] == 10 and stats["late"] == 0 and stats["latency_p50_ms"] > 0


def test_concurrent_sessions_of_different_sizes_never_mix(service, weights):
    sizes = [(64, 48), (96, 64)]
    frames = {s: frames_of(5 + i, *s, 6) for i, s in enumerate(sizes)}
    with Client(service.address, name="a") as ca, Client(service.address, name="b") as cb:
        sa = ca.open_session(*sizes[0], reference_layout(*sizes[0]), seed=1)
        sb = cb.open_session(*sizes[1], reference_layout(*sizes[1]), seed=2)
        got = {sizes[0]: [], sizes[1]: []}
        for fa, fb in zip(frames[sizes[0]], frames[sizes[1]]):
            for client, session, f, size in ((ca, sa, fa, sizes[0]), (cb, sb, fb, sizes[1])):
                slot = session.acquire_slot(timeout_s=10)
                to_slot(f, session.layout, session.ring.input(slot))
                session.submit(slot)
            for client, session, size in ((ca, sa, sizes[0]), (cb, sb, sizes[1])):
                ev = client.wait(session, session._seq)
                assert ev.status == "done"
                got[size].append(torch.from_numpy(session.output(ev.slot)[..., :3].copy()))
    for i, size in enumerate(sizes):
        want = reference_outputs(weights, frames[size], *size, seed=i + 1)
        for a, b in zip(got[size], want):
            assert a.shape == b.shape and (a.int() - b.int()).abs().max() <= 1


ENGINE = textwrap.dedent("""
    import sys, time, torch
    from streamstyle.interop.client import Client
    from streamstyle.model.layout import reference_layout
    c = Client(sys.argv[1], name="doomed")
    s = c.open_session(64, 48, reference_layout(64, 48))
    print("open", flush=True)
    while True:
        try:
            slot = s.acquire_slot(timeout_s=5)
        except TimeoutError:
            continue
        s.planes(slot)["depth"][...] = 4.0
        s.submit(slot)
        c.poll(timeout_ms=5)
""")


def test_a_killed_client_is_reaped_and_the_other_session_keeps_its_pace(service, tmp_path):
    script = tmp_path / "engine.py"
    script.write_text(ENGINE)
    doomed = subprocess.Popen([sys.executable, str(script), service.address], stdout=subprocess.PIPE, text=True)
    try:
        assert doomed.stdout.readline().strip() == "open"
        with Client(service.address, name="survivor") as client:
            session = client.open_session(64, 48, reference_layout(64, 48))
            frames = frames_of(8, 64, 48, 1) * 40
            before = client.stats()["service"]
            assert before["sessions"] == 2
            doomed.send_signal(signal.SIGKILL)  # mid-frame, most likely
            doomed.wait(5)
            t0 = time.monotonic()
            reaped_at = None
            done = 0
            for f in frames:
                slot = session.acquire_slot(timeout_s=10)
                to_slot(f, session.layout, session.ring.input(slot))
                ev = client.wait(session, session.submit(slot))
                done += ev.status == "done"
                if reaped_at is None and client.stats()["service"]["sessions"] == 1:
                    reaped_at = time.monotonic() - t0
            after = client.stats()["service"]
        assert done == len(frames)  # never a missed frame while the other client died
        assert reaped_at is not None and reaped_at < 3.0
        assert after["sessions"] == 1 and after["cache_pages_used"] == 1
    finally:
        if doomed.poll() is None:
            doomed.kill()


def test_the_client_survives_a_service_restart(tmp_path, weights):
    cfg = {"heartbeat_ms": 100, "reap_after_ms": 30000}  # the client must notice the closed connection, not silence
    first = ServiceProcess(tmp_path, weights, "--no-prompts", config=cfg)
    try:
        client = Client(first.address, timeout_s=5)
        session = client.open_session(64, 48, reference_layout(64, 48))
        f = frames_of(2, 64, 48, 1)[0]
        run_frames(client, session, [f])
        old_id = session.id
        slot = session.acquire_slot()
        to_slot(f, session.layout, session.ring.input(slot))
        in_flight = session.submit(slot)
        first.proc.kill()  # a crash, not a clean stop
        first.proc.wait(5)
        second = ServiceProcess(tmp_path, weights, "--no-prompts", config=cfg, address=first.address)
        try:
            events, end = [], time.monotonic() + 15
            while client.reconnects == 0 and time.monotonic() < end:
                events += client.poll(timeout_ms=50)
            assert client.reconnects == 1
            assert any(e.seq == in_flight and e.reason == "service_restarted" for e in events)
            assert session.id >= 1 and client.stats()["service"]["sessions"] == 1
            outs, _ = run_frames(client, session, [f, f])
            assert len(outs) == 2 and session.id != 0 and old_id >= 1
            client.close()
        finally:
            second.stop()
    finally:
        first.stop()


def test_prompts_switch_and_blend_over_the_protocol(tmp_path, weights):
    svc = ServiceProcess(tmp_path, weights)  # with the prompt encoder
    try:
        with Client(svc.address, timeout_s=60) as client:
            session = client.open_session(64, 48, reference_layout(64, 48), prompt="pencil hatching", seed=4)
            twin = client.open_session(64, 48, reference_layout(64, 48), prompt="pencil hatching", seed=4)
            f = frames_of(6, 64, 48, 1)[0]
            a, _ = run_frames(client, session, [f])
            b, _ = run_frames(client, twin, [f])
            assert torch.equal(a[0], b[0])
            twin.set_prompt("neon glow")
            a, _ = run_frames(client, session, [f])
            b, _ = run_frames(client, twin, [f])
            assert not torch.equal(a[0], b[0])
            # A hard switch starts the next frame afresh: the twin's frame is that of a session in
            # the new prompt whose second frame is a cut, and no trace of pencil is left in it.
            fresh = client.open_session(64, 48, reference_layout(64, 48), prompt="neon glow", seed=4)
            run_frames(client, fresh, [f])
            slot = fresh.acquire_slot(timeout_s=10)
            to_slot(f, fresh.layout, fresh.ring.input(slot))
            ev = client.wait(fresh, fresh.submit(slot, params={"reset": True}))
            assert ev.status == "done"
            assert torch.equal(b[0], torch.from_numpy(fresh.output(ev.slot)[..., :3].copy()))
            fresh.close()
            twin.set_prompt([["watercolor", 0.7], ["noir", 0.3]], blend_frames=3)
            for _ in range(4):
                run_frames(client, twin, [f])
            with pytest.raises(ServiceError) as info:
                twin.set_prompt([["a", 1.0]] * 5)
            assert info.value.code == "bad_prompt"
            assert twin.stats()["done"] == 6
    finally:
        svc.stop()


def test_a_non_loopback_bind_needs_curve_keys(tmp_path, weights):
    run = subprocess.run([sys.executable, "-m", "streamstyle", "serve", "--bind", "tcp://0.0.0.0:5871",
                          "--weights", str(weights), "--no-prompts"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "needs CURVE keys" in run.stderr


def test_curve_keys_encrypt_and_authenticate_the_connection(tmp_path, weights):
    public, secret = zmq.curve_keypair()
    port = 20000 + os.getpid() % 20000
    svc = ServiceProcess(tmp_path, weights, "--no-prompts", address=f"tcp://127.0.0.1:{port}",
                         config={"curve_secret_key": secret.decode(), "curve_public_key": public.decode()})
    try:
        with Client(svc.address, curve_server_key=public.decode()) as client:
            assert client.welcome["protocol"] == 1
        with pytest.raises(ServiceUnavailable):
            Client(svc.address, timeout_s=1.0)  # plain text to a CURVE server: no handshake, no answer
    finally:
        svc.stop()


def test_demo_writes_a_video_and_a_stats_table(tmp_path):
    out = tmp_path / "demo.mp4"
    run = subprocess.run([sys.executable, "-m", "streamstyle", "demo", "--frames", "8", "--size", "64x48",
                          "--prompt", "watercolor", "--prompt", "noir", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    # the shipped default model by default, not random weights
    assert "UNTRAINED" not in run.stdout and "trained weights" in run.stdout
    assert "frames done / late / dropped  8 / 0 / 0" in run.stdout
    assert "handoff overhead" in run.stdout and str(out) in run.stdout
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    assert tuple(meta["size"]) == (3 * 64, 48) and sum(1 for _ in reader) == 8


def test_demo_without_video_needs_no_encoder(tmp_path):
    """--no-video: the run and its figures only, in a process where imageio-ffmpeg cannot import
    (as on a machine without it)."""
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'imageio_ffmpeg':\n"
            "            raise ImportError('blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from streamstyle.tools.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    args = ["demo", "--frames", "4", "--size", "64x48", "--prompt", "noir"]
    run = subprocess.run([sys.executable, "-c", code, *args, "--no-video"], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "frames done / late / dropped  4 / 0 / 0" in run.stdout and "none (--no-video)" in run.stdout
    assert not list(tmp_path.glob("*.mp4"))
    refused = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                             cwd=tmp_path)
    assert refused.returncode == 2 and "--no-video" in refused.stderr


def test_a_child_service_that_cannot_start_says_why(tmp_path):
    from streamstyle.tools.launch import child_service

    with pytest.raises(RuntimeError, match="exited during start-up(.|\n)*unknown preset 'nope'"):
        with child_service(["--preset", "nope"], log_path=tmp_path / "service.log"):
            pass
    with child_service(["--preset", "tiny", "--no-prompts", "--quiet"]) as address:
        from streamstyle.interop.client import Client

        client = Client(address, timeout_s=30)
        assert client.welcome["model"]["preset"] == "tiny"
        client.close()


def test_when_the_engine_side_fails_the_service_log_is_shown(tmp_path, capfd):
    from streamstyle.tools.launch import child_service

    with pytest.raises(ValueError, match="the engine gave up"):
        with child_service(["--preset", "tiny", "--no-prompts"], log_path=tmp_path / "service.log"):
            raise ValueError("the engine gave up")
    err = capfd.readouterr().err
    assert "the service's log" in err and "serving on" in err  # the service's own lines
