"""Several service processes behind one address (`serve --workers N`), on the CPU: a real front
process, real worker processes, real ZeroMQ sockets and shared-memory rings, engines in this
process through the real client.

What must hold: sessions are placed on the least-loaded worker and `stats` says where; the front's
`stats` and metrics add the workers' up; frames come back exactly as a single service computes
them; bad input to the front gets the service's typed errors; a worker killed with SIGKILL is
restarted, the client whose session it held reconnects and goes on, and a client on another worker
never notices; with no worker to take it, an `open` is `no_worker`; SIGTERM stops the front and
every worker.
"""

import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
import zmq

from streamstyle.interop import create_ring
from streamstyle.interop import protocol as P
from streamstyle.interop.client import Client, ServiceError
from streamstyle.interop.layout import output_bytes
from streamstyle.model.layout import reference_layout
from streamstyle.model.weights import save_weights
from streamstyle.service.config import ConfigFieldError, ServiceConfig
from streamstyle.service.front import Front
from streamstyle.service.workers import SESSION_ID_SPAN, WorkerPool, free_port

from .conftest import perturb
from .fuzz_messages import Driver, Fuzzer
from .service_process import ServiceProcess
from .test_service_e2e import frames_of, run_frames

W, H = 64, 48
# Fast liveness, so that a lost connection is noticed within a tenth of a second; a silent client
# would need 30 s to be reaped, which no test here waits for.
LIVENESS = {"heartbeat_ms": 100, "reap_after_ms": 30000}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from streamstyle.model.config import preset
    from streamstyle.model.network import StreamStyleModel

    g = torch.Generator().manual_seed(4321)
    return save_weights(perturb(StreamStyleModel(preset("tiny")), g), tmp_path_factory.mktemp("w") / "tiny")


@pytest.fixture(scope="module")
def front(tmp_path_factory, weights):
    work = tmp_path_factory.mktemp("front")
    port = free_port()
    svc = ServiceProcess(work, f"ipc://{work}/front.sock", "--workers", "2", "--weights", str(weights), "--no-prompts",
                         config={**LIVENESS, "metrics_port": port})
    svc.metrics_port = port
    yield svc
    svc.stop()


def service_stats(address: str) -> dict:
    with Client(address, name="stats") as c:
        return c.stats()


def wait_for(predicate, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def all_ready(address: str, restarts: dict | None = None):
    workers = service_stats(address)["service"]["workers"]
    ok = all(w["state"] == "ready" for w in workers)
    if restarts is not None:
        ok = ok and all(w["restarts"] >= restarts.get(w["worker"], 0) for w in workers)
    return workers if ok else None


def frame(client, session, planes):
    slot = session.acquire_slot(timeout_s=30)
    from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot

    to_slot(planes, session.layout, session.ring.input(slot))
    return client.wait(session, session.submit(slot), timeout_s=60)


# --- configuration (no processes) --------------------------------------------------------------

def test_the_config_names_each_workers_device_and_refuses_bad_worker_settings():
    assert ServiceConfig(workers=2).validate().worker_devices == ("cpu", "cpu")
    assert ServiceConfig(workers=2, device="cuda").validate().worker_devices == ("cuda:0", "cuda:1")
    assert ServiceConfig(workers=2, device="cuda:1").validate().worker_devices == ("cuda:1", "cuda:1")
    assert ServiceConfig(gpus="0, 3").validate().worker_devices == ("cuda:0", "cuda:3")
    assert ServiceConfig().validate().worker_devices == ()
    for bad, field, says in ((dict(workers=-1), "workers", "0..64"), (dict(workers=65), "workers", "0..64"),
                             (dict(gpus="0,x"), "gpus", "comma list"), (dict(gpus="1,1"), "gpus", "twice"),
                             (dict(gpus="65"), "gpus", "0..64"), (dict(gpus="0,1", workers=3), "workers", "lists 2")):
        with pytest.raises(ConfigFieldError, match=says) as err:
            ServiceConfig(**bad).validate()
        assert err.value.field == field


def test_metrics_pages_merge_summing_counters_and_naming_each_sessions_worker():
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from streamstyle.service.front_metrics import merge_families

    def page(frames, session, count, created):
        return (f"# HELP streamstyle_frames frames answered done\n# TYPE streamstyle_frames counter\n"
                f"streamstyle_frames_total {frames}\nstreamstyle_frames_created {created}\n"
                f"# HELP streamstyle_clients connected clients\n# TYPE streamstyle_clients gauge\nstreamstyle_clients 7\n"
                f"# HELP streamstyle_frame_latency_ms latency\n# TYPE streamstyle_frame_latency_ms histogram\n"
                f'streamstyle_frame_latency_ms_bucket{{le="1.0",session="{session}"}} {count}\n'
                f'streamstyle_frame_latency_ms_bucket{{le="+Inf",session="{session}"}} {count}\n'
                f'streamstyle_frame_latency_ms_count{{session="{session}"}} {count}\n'
                f'streamstyle_frame_latency_ms_sum{{session="{session}"}} {count * 0.5}\n')

    fams = merge_families({0: page(3, 11, 3, 100.0), 1: page(5, 22, 5, 90.0)})
    reg = CollectorRegistry()

    class Fixed:
        def collect(self):
            return fams

    reg.register(Fixed())
    text = generate_latest(reg).decode()
    assert "streamstyle_frames_total 8.0" in text and "streamstyle_frames_created 90.0" in text
    assert 'streamstyle_frame_latency_ms_count{session="11",worker="0"} 3.0' in text
    assert 'streamstyle_frame_latency_ms_count{session="22",worker="1"} 5.0' in text
    assert "streamstyle_clients" not in text  # the front reports its own count


def test_a_front_refuses_osc_and_the_preview_before_anything_starts(tmp_path):
    for name in ("osc_port", "preview_port"):
        with pytest.raises(ConfigFieldError, match="not available with workers") as err:
            Front(ServiceConfig(bind=f"ipc://{tmp_path}/f.sock", workers=2, **{name: 9000}).validate())
        assert err.value.field == name
    assert not (tmp_path / "f.sock").exists()


def test_a_front_whose_workers_cannot_start_exits_2_and_leaves_nothing(tmp_path):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "streamstyle", "serve", "--workers", "2", "--bind",
                           f"ipc://{tmp_path}/f.sock", "--weights", str(tmp_path / "missing.safetensors"), "--quiet"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert re.search(r"worker [01] \(cpu\) exited with status 2 during start-up", proc.stderr), proc.stderr
    assert "streamstyle: error [bad_checkpoint]" in proc.stderr  # the worker's own line
    assert not (tmp_path / "f.sock").exists()  # never bound
    print(f"\nfailed start-up reported in {time.monotonic() - t0:.1f} s")


def alive(pid: int) -> bool:
    """A process that runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


def test_workers_stop_by_themselves_when_the_front_is_killed(tmp_path, weights):
    svc = ServiceProcess(tmp_path, f"ipc://{tmp_path}/f.sock", "--workers", "2", "--weights", str(weights),
                         "--no-prompts", config=LIVENESS)
    run_dir = None
    try:
        workers = service_stats(svc.address)["service"]["workers"]
        pids = [w["pid"] for w in workers]
        run_dir = os.path.dirname(workers[0]["address"][len("ipc://"):])  # a killed front cannot remove it
        assert all(alive(p) for p in pids)
        svc.proc.kill()
        svc.proc.wait()
        t0 = time.monotonic()
        wait_for(lambda: not any(alive(p) for p in pids), 60, "the orphaned workers' exit")
        print(f"\nworkers gone {time.monotonic() - t0:.1f} s after the front's SIGKILL")
    finally:
        svc.stop()
        if run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


# --- one front, two workers ---------------------------------------------------------------------

def test_sessions_go_to_the_least_loaded_worker_and_stats_add_up(front):
    frames = frames_of(7, W, H, 3)
    with Client(front.address, name="a") as ca, Client(front.address, name="b") as cb:
        assert ca.welcome["workers"] == 2 and ca.welcome["backends"] == ["shm"] and ca.welcome["max_sessions"] == 32
        sa = ca.open_session(W, H, reference_layout(W, H), seed=1)
        sb = cb.open_session(W, H, reference_layout(W, H), seed=2)
        run_frames(ca, sa, frames)
        run_frames(cb, sb, frames[:2])
        stats = ca.stats()
        one = sa.stats()  # relayed to its worker, and named by the front
        service = stats["service"]
        workers = {w["worker"]: w for w in service["workers"]}
        assert [s["session"] for s in stats["sessions"]] == [sa.id]  # a client sees its own sessions
        where_a = stats["sessions"][0]["worker"]
        where_b = 1 - where_a
        assert one["worker"] == where_a and one["session"] == sa.id and one["done"] == 3
        assert workers[where_a]["sessions"] == 1 and workers[where_b]["sessions"] == 1  # one each
        assert workers[where_a]["frames"] == 3 and workers[where_b]["frames"] == 2
        assert service["frames"] == 5 and service["sessions"] == 2  # summed over workers
        assert service["clients"] >= 2 and all(w["state"] == "ready" and w["pid"] for w in workers.values())
        # Ids name their worker's range, so the front routes without rewriting them.
        assert sa.id // SESSION_ID_SPAN != sb.id // SESSION_ID_SPAN
        statsb = cb.stats()
        assert [(s["session"], s["worker"]) for s in statsb["sessions"]] == [(sb.id, where_b)]

        # Metrics: the workers' merged, per-session series named by worker.
        text = urllib.request.urlopen(f"http://127.0.0.1:{front.metrics_port}/metrics", timeout=10).read().decode()
        total = float(re.search(r"^streamstyle_frames_total (\S+)$", text, re.M).group(1))
        assert total == 5.0
        latency_workers = set(re.findall(r'streamstyle_frame_latency_ms_count\{session="\d+",worker="(\d)"\}', text))
        assert latency_workers == {"0", "1"}
        assert re.search(r'^streamstyle_sessions 2\.0$', text, re.M)
        assert len(re.findall(r'^streamstyle_worker_up\{device="cpu",worker="\d"\} 1\.0$', text, re.M)) == 2
        sa.close()
        sb.close()


def test_frames_come_back_as_a_single_service_computes_them(front, weights, tmp_path):
    frames = frames_of(11, W, H, 5)
    with Client(front.address, name="a") as ca, Client(front.address, name="b") as cb:
        sa = ca.open_session(W, H, reference_layout(W, H), seed=5)
        sb = cb.open_session(W, H, reference_layout(W, H), seed=5)  # the same frames, on the other worker
        got_a, _ = run_frames(ca, sa, frames)
        got_b, _ = run_frames(cb, sb, frames)
        where = {s["worker"] for s in ca.stats()["sessions"] + cb.stats()["sessions"]}
    assert where == {0, 1}
    # The single service, with the thread count a worker on this machine has (the same arithmetic).
    threads = str(WorkerPool(ServiceConfig(workers=2).validate(), tmp_path).cpu_threads)
    single = ServiceProcess(tmp_path, f"ipc://{tmp_path}/single.sock", "--weights", str(weights), "--no-prompts",
                            "--cpu-threads", threads, config=LIVENESS)
    try:
        with Client(single.address) as c:
            s = c.open_session(W, H, reference_layout(W, H), seed=5)
            want, _ = run_frames(c, s, frames)
    finally:
        single.stop()
    for i, (a, b, w) in enumerate(zip(got_a, got_b, want)):
        assert torch.equal(a, w) and torch.equal(b, w), f"frame {i}"


def test_bad_input_to_the_front_gets_the_services_typed_errors(front):
    layout = reference_layout(W, H)
    with Client(front.address, name="good") as good:
        gs = good.open_session(W, H, layout, seed=3)
        before, _ = run_frames(good, gs, frames_of(2, W, H, 2))
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(front.address)
        ring = create_ring("shm", 3, layout.slot_bytes(W, H), output_bytes(W, H, "rgba8"))
        empty = f"ss_front_empty_{secrets.token_hex(4)}"
        os.close(os.open(f"/dev/shm/{empty}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
        try:
            def ask(msg_or_parts):
                sock.send_multipart(msg_or_parts if isinstance(msg_or_parts, list) else [P.encode(msg_or_parts)])
                end = time.monotonic() + 10
                while time.monotonic() < end:
                    if sock.poll(100):
                        m = P.decode_raw(sock.recv())
                        if m["type"] != "heartbeat":
                            return m
                raise AssertionError("no answer")

            frame_msg = {"type": "frame", "session": gs.id, "seq": 99, "slot": 0}
            assert ask(frame_msg) == {"type": "error", "code": "hello_first", "message": "send hello before anything else",
                                      "session": gs.id, "seq": 99}
            assert ask({"type": "hello", "protocol": 2, "req": 1})["code"] == "protocol_mismatch"
            assert ask({"type": "hello", "protocol": 1, "req": 2})["type"] == "welcome"
            # Another client's session, by id: not this connection's (the session is untouched).
            assert ask(frame_msg)["code"] == "unknown_session"
            assert ask({"type": "close", "req": 3, "session": gs.id})["code"] == "unknown_session"
            bad = ask([P.encode({"type": "stats", "req": 4}), b"x"])
            assert (bad["code"], bad["req"]) == ("bad_message", 4)
            assert ask([b"\xc1"])["code"] == "bad_message"
            assert ask({"type": "nope", "req": 5})["code"] == "unknown_type"
            assert ask({"type": "stats", "req": 6, "extra": 1})["code"] == "bad_field"
            cuda = {"type": "open", "req": 7, "width": W, "height": H, "layout": layout.to_dict(),
                    "ring": {**ring.describe(), "backend": "cuda-ipc",
                             "inputs": [{"handle": b"\x01" * 64, "offset": 0, "size": 1 << 20, "device": 0}] * 3,
                             "outputs": [{"handle": b"\x02" * 64, "offset": 0, "size": 1 << 20, "device": 0}] * 3,
                             "sync": {k: [b"\x03" * 64] * 3 for k in ("ready", "done", "released")}}}
            refused = ask(cuda)
            assert refused["code"] == "bad_ring" and "none on CUDA device 0" in refused["message"] and refused["req"] == 7

            # Then the generator: every message answered with a reply of the protocol, never internal.
            fuzzer = Fuzzer(ring.describe(), layout.to_dict(), W, H, sessions=[gs.id], empty_segment=empty,
                            mark_ready=ring.mark_ready)
            driver = Driver(sock, fuzzer, timeout_s=15.0)
            rng = random.Random(17)
            for _ in range(300):
                driver.send_one(rng)
            t = driver.tally
            print(f"\nfront fuzz: {t.sent} messages, answers {dict(t.types)}, error codes {dict(t.codes)}")
            assert t.clean, t.examples
            assert t.answers == t.sent and t.types["opened"] and t.types["done"] and t.types["welcome"]
            assert {"bad_message", "bad_field", "unknown_type", "unknown_session"} <= set(t.codes)
            for sid in list(fuzzer.sessions):
                if sid != gs.id:
                    ask({"type": "close", "req": 8, "session": sid})
        finally:
            sock.close(0)
            ring.close()
            os.unlink(f"/dev/shm/{empty}")
        after, _ = run_frames(good, gs, frames_of(2, W, H, 2))
        st = gs.stats()
        assert (st["frames_in"], st["done"], st["late"]) == (4, 4, 0)  # the barrage never reached it
        assert good.reconnects == 0


def test_a_killed_worker_is_restarted_and_only_its_client_reconnects(front):
    frames = frames_of(13, W, H, 4)
    with Client(front.address, name="doomed") as ca, Client(front.address, name="bystander") as cb:
        sa = ca.open_session(W, H, reference_layout(W, H), seed=1)
        sb = cb.open_session(W, H, reference_layout(W, H), seed=2)
        for f in frames[:2]:
            assert frame(ca, sa, f).status == "done" and frame(cb, sb, f).status == "done"
        stats = ca.stats()
        victim = stats["sessions"][0]["worker"]
        pid = next(w["pid"] for w in stats["service"]["workers"] if w["worker"] == victim)
        restarts = next(w["restarts"] for w in stats["service"]["workers"] if w["worker"] == victim)
        old_a, old_b = sa.id, sb.id
        assert cb.stats()["sessions"][0]["worker"] != victim
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        events_a, events_b = [], []
        for i in range(12):
            events_a.append(frame(ca, sa, frames[i % 4]))
            events_b.append(frame(cb, sb, frames[i % 4]))
        print(f"\nafter SIGKILL of worker {victim}: the doomed client's frames "
              f"{[e.status + ('/' + e.reason if e.reason else '') for e in events_a]}, in {time.monotonic() - t0:.2f} s")
        # The doomed client: at most its first frame after the kill lost, then it goes on.
        assert ca.reconnects == 1 and sa.id != old_a
        assert [e.status for e in events_a[1:]] == ["done"] * 11
        assert events_a[0].status == "done" or (events_a[0].status, events_a[0].reason) == ("late", "service_restarted")
        # The bystander never noticed: no reconnect, no lost frame, the same session.
        assert cb.reconnects == 0 and sb.id == old_b and all(e.status == "done" and not e.late for e in events_b)
        assert sb.stats()["done"] == 14
        workers = wait_for(lambda: all_ready(front.address, {victim: restarts + 1}), 120, "the restarted worker")
        again = next(w for w in workers if w["worker"] == victim)
        assert again["pid"] != pid and again["restarts"] == restarts + 1
        # The restarted worker takes new sessions again (the least loaded now).
        with Client(front.address, name="late-comer") as cc:
            sc = cc.open_session(W, H, reference_layout(W, H), seed=3)
            assert frame(cc, sc, frames[0]).status == "done"
            assert cc.stats()["sessions"][0]["worker"] == victim


def test_with_every_worker_restarting_an_open_is_no_worker(front):
    workers = service_stats(front.address)["service"]["workers"]
    restarts = {w["worker"]: w["restarts"] + 1 for w in workers}
    for w in workers:
        os.kill(w["pid"], signal.SIGKILL)
    with Client(front.address, name="early") as c:
        with pytest.raises(ServiceError) as err:
            c.open_session(W, H, reference_layout(W, H))
        assert err.value.code == "no_worker"
    wait_for(lambda: all_ready(front.address, restarts), 180, "both restarted workers")
    with Client(front.address, name="patient") as c:
        s = c.open_session(W, H, reference_layout(W, H))
        assert frame(c, s, frames_of(1, W, H, 1)[0]).status == "done"


def test_sigterm_stops_the_front_and_every_worker(front):
    """Last in this module: it stops the module's front."""
    workers = service_stats(front.address)["service"]["workers"]
    run_dir = os.path.dirname(workers[0]["address"][len("ipc://"):])
    assert os.path.isdir(run_dir)
    front.proc.send_signal(signal.SIGTERM)
    assert front.proc.wait(60) == 0
    for w in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(w["pid"], 0)  # reaped by the front, not left a zombie or an orphan
    assert not os.path.exists(run_dir)
