"""The service's policies, in one process but over a real ZeroMQ socket and real shared memory:
the test drives `Service.tick()` itself, so ordering is deterministic."""

import time

import pytest
import torch
import zmq

from streamstyle.interop import create_ring
from streamstyle.model.layout import reference_layout
from streamstyle.model.stylizer import Stylizer
from streamstyle.interop import protocol as P
from streamstyle.service.config import ServiceConfig
from streamstyle.service.server import Service, output_bytes

W, H = 32, 24


class Peer:
    """A raw DEALER: sends exactly what a test says, bad bytes included."""

    def __init__(self, service):
        self.service = service
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(service.address)
        self.rings = []

    def send(self, msg):
        self.sock.send(msg if isinstance(msg, bytes) else P.encode(msg))

    def replies(self, want=1, timeout=3.0, skip_heartbeats=True):
        out, end = [], time.monotonic() + timeout
        while len(out) < want and time.monotonic() < end:
            self.service.tick()
            while self.sock.poll(0):
                m = P.decode_raw(self.sock.recv())
                if not (skip_heartbeats and m["type"] == "heartbeat"):
                    out.append(m)
        return out

    def ask(self, msg):
        self.send(msg)
        got = self.replies(1, skip_heartbeats=not (isinstance(msg, dict) and msg.get("type") == "heartbeat"))
        assert got, f"no reply to {msg if isinstance(msg, bytes) else msg.get('type')}"
        return got[0]

    def hello(self):
        assert self.ask({"type": "hello", "protocol": 1, "client": "test"})["type"] == "welcome"

    def open(self, width=W, height=H, **kw):
        layout = reference_layout(width, height)
        ring = create_ring("shm", 3, layout.slot_bytes(width, height), output_bytes(width, height, "rgba8"))
        self.rings.append(ring)
        msg = {"type": "open", "req": 1, "width": width, "height": height, "layout": layout.to_dict(),
               "ring": ring.describe(), **kw}
        return self.ask(msg), ring, layout

    def close(self):
        self.sock.close(0)
        for r in self.rings:
            r.close()


@pytest.fixture
def service(tmp_path, tiny_model):
    cfg = ServiceConfig(bind=f"ipc://{tmp_path}/s.sock", heartbeat_ms=40, reap_after_ms=300, max_sessions=3)
    svc = Service(cfg, Stylizer(tiny_model), context=zmq.Context.instance())
    yield svc
    svc.shutdown()


@pytest.fixture
def peer(service):
    p = Peer(service)
    p.hello()
    yield p
    p.close()


def fill(ring, layout, slot, frame_factory, seq):
    planes = layout.view(torch.from_numpy(ring.input(slot)), W, H)
    for name, value in frame_factory(W, H, layout).items():
        planes[name].copy_(value)
    ring.mark_ready(slot, seq)


def state_of(service):
    return (sorted(service.sessions), service.stylizer.cache.used_pages, service.stylizer.cache.pool.clone())


def test_hello_first_and_version_mismatch_name_both_sides(service):
    p = Peer(service)
    try:
        r = p.ask({"type": "stats", "req": 4})
        assert r["code"] == "hello_first" and r["req"] == 4
        r = p.ask({"type": "hello", "protocol": 7, "req": 5})
        assert r["code"] == "protocol_mismatch" and "protocol 7" in r["message"] and "speaks 1" in r["message"]
        p.hello()
    finally:
        p.close()


def test_garbage_gets_errors_and_the_service_keeps_answering(service, peer):
    opened, ring, layout = peer.open()
    before = state_of(service)
    for bad, code in [(b"\xc1garbage", "bad_message"), (P.encode([1, 2]), "bad_message"),
                      (P.encode({"type": "frame", "session": opened["session"]}), "bad_field"),
                      (P.encode({"type": "frame", "session": "one", "seq": 1, "slot": 0}), "bad_field"),
                      (b"\x01" * (P.MAX_MESSAGE_BYTES + 10), "bad_message"),
                      (P.encode({"type": "warp", "req": 1}), "unknown_type")]:
        assert peer.ask(bad)["code"] == code
    assert peer.ask({"type": "heartbeat"})["type"] == "heartbeat"
    after = state_of(service)
    assert after[:2] == before[:2] and torch.equal(after[2], before[2])


@pytest.mark.parametrize("change, code, words", [
    (lambda d: d["sync"].update(handle="psm_nonexistent"), "bad_ring", "no shared-memory segment"),
    (lambda d: d["inputs"][1].update(size=100), "bad_ring", "input slot 1 holds 100 bytes"),
    (lambda d: d["outputs"][2].update(offset=1 << 40), "bad_ring", "runs past its segment"),
    (lambda d: d["inputs"][0].update(offset=(1 << 62)), "bad_ring", "runs past"),
    (lambda d: d.update(backend="cuda-ipc", inputs=[{"handle": b"\0" * 64, "offset": 0, "size": 9}] * 3,
                        outputs=[{"handle": b"\0" * 64, "offset": 0, "size": 9}] * 3,
                        sync={"ready": [b"\0" * 64] * 3, "done": [b"\0" * 64] * 3, "released": [b"\0" * 64] * 3}),
     "bad_ring", "takes rings of backend shm"),
])
def test_rings_that_do_not_fit_are_refused_and_nothing_is_kept(service, peer, change, code, words):
    layout = reference_layout(W, H)
    ring = create_ring("shm", 3, layout.slot_bytes(W, H), output_bytes(W, H, "rgba8"))
    peer.rings.append(ring)
    desc = ring.describe()
    change(desc)
    before = state_of(service)
    r = peer.ask({"type": "open", "req": 9, "width": W, "height": H, "layout": layout.to_dict(), "ring": desc})
    assert r["type"] == "error" and r["code"] == code and words in r["message"] and r["req"] == 9
    assert state_of(service)[:2] == before[:2]


def test_bad_layouts_sizes_and_the_session_limit(service, peer):
    layout = reference_layout(W, H)
    ring = create_ring("shm", 3, layout.slot_bytes(W, H), output_bytes(W, H, "rgba8"))
    peer.rings.append(ring)
    base = {"type": "open", "req": 2, "width": W, "height": H, "ring": ring.describe()}
    r = peer.ask({**base, "layout": {"channels": [{"name": "depth", "format": "r32f"}]}})
    assert r["code"] == "bad_layout" and "missing channels the model needs" in r["message"]
    r = peer.ask({**base, "width": 4, "layout": layout.to_dict()})
    assert r["code"] == "bad_resolution" and "width 4 is outside 8..7680" in r["message"]
    for _ in range(3):
        assert peer.open()[0]["type"] == "opened"
    r = peer.open()[0]
    assert r["code"] == "session_limit"
    assert len(service.sessions) == 3


def test_sessions_belong_to_their_client(service, peer, frame_factory):
    opened, ring, layout = peer.open()
    sid = opened["session"]
    intruder = Peer(service)
    intruder.hello()
    try:
        fill(ring, layout, 0, frame_factory, 1)
        r = intruder.ask({"type": "frame", "session": sid, "seq": 1, "slot": 0})
        assert r["code"] == "unknown_session"
        r = intruder.ask({"type": "close", "req": 3, "session": sid})
        assert r["code"] == "unknown_session" and sid in service.sessions
        assert service.sessions[sid].last_seq == 0  # the intruder's frame never reached the session
        peer.send({"type": "frame", "session": sid, "seq": 1, "slot": 0})
        assert peer.replies(1)[0]["type"] == "done"
    finally:
        intruder.close()


def test_slots_sequences_and_ready_signals_are_checked(service, peer, frame_factory):
    opened, ring, layout = peer.open()
    sid = opened["session"]
    assert peer.ask({"type": "frame", "session": sid, "seq": 1, "slot": 5})["code"] == "bad_slot"
    r = peer.ask({"type": "frame", "session": sid, "seq": 1, "slot": 0})
    assert r["code"] == "not_ready" and r["seq"] == 1  # never marked ready
    fill(ring, layout, 1, frame_factory, 2)
    assert peer.ask({"type": "frame", "session": sid, "seq": 2, "slot": 1})["type"] == "done"
    assert ring.is_done(1, 2) and ring.is_released(1, 2)
    assert peer.ask({"type": "frame", "session": sid, "seq": 2, "slot": 1})["code"] == "bad_sequence"


def test_the_queue_keeps_the_newest_frame_and_deadlines_make_frames_late(service, peer, frame_factory):
    opened, ring, layout = peer.open()
    sid = opened["session"]
    for seq in (1, 2, 3):
        fill(ring, layout, seq % 3, frame_factory, seq)
        peer.send({"type": "frame", "session": sid, "seq": seq, "slot": seq % 3})
    time.sleep(0.05)  # all three are waiting before the service looks
    got = peer.replies(3)
    assert [(m["type"], m["seq"], m.get("reason")) for m in got] == [
        ("late", 1, "dropped"), ("late", 2, "dropped"), ("done", 3, None)]
    assert ring.is_released(1, 1) and ring.is_released(2, 2)  # dropped frames free their slots
    # A frame that finishes past its deadline is done, flagged late. (Its clock starts when the
    # message comes off the socket, so on a loaded machine 0.1 ms can pass before the frame starts:
    # then it is not run at all, which the next case pins.)
    fill(ring, layout, 1, frame_factory, 4)
    peer.send({"type": "frame", "session": sid, "seq": 4, "slot": 1, "params": {"deadline_ms": 0.1}})
    r = peer.replies(1)[0]
    ran = r["type"] == "done"
    assert r["seq"] == 4 and ((r["type"], r.get("late")) == ("done", True) or
                              (r["type"], r.get("reason")) == ("late", "deadline")), r
    # One that waits past its deadline behind another session's frame is not run at all.
    first, ring2, layout2 = peer.open()
    fill(ring2, layout2, 0, frame_factory, 1)
    fill(ring, layout, 2, frame_factory, 5)
    service.sessions[first["session"]], service.sessions[sid] = service.sessions.pop(first["session"]), service.sessions.pop(sid)
    peer.send({"type": "frame", "session": first["session"], "seq": 1, "slot": 0})
    peer.send({"type": "frame", "session": sid, "seq": 5, "slot": 2, "params": {"deadline_ms": 0.1}})
    time.sleep(0.05)
    got = {m["session"]: m for m in peer.replies(2)}
    assert got[first["session"]]["type"] == "done"
    assert (got[sid]["type"], got[sid].get("reason")) == ("late", "deadline")
    assert ring.is_released(2, 5)
    stats = peer.ask({"type": "stats", "req": 5, "session": sid})["sessions"][0]
    assert (stats["frames_in"], stats["done"], stats["dropped"], stats["late"]) == (5, 1 + ran, 2, 2), stats


def test_a_bad_frame_is_refused_and_the_session_goes_on(service, peer, frame_factory):
    opened, ring, layout = peer.open()
    sid = opened["session"]
    fill(ring, layout, 0, frame_factory, 1)
    layout.view(torch.from_numpy(ring.input(0)), W, H)["depth"][2, 3] = float("nan")
    pool = service.stylizer.cache.pool.clone()
    r = peer.ask({"type": "frame", "session": sid, "seq": 1, "slot": 0})
    assert r["code"] == "bad_input" and "NaN" in r["message"]
    assert torch.equal(service.stylizer.cache.pool, pool) and ring.is_released(0, 1)
    fill(ring, layout, 1, frame_factory, 2)
    assert peer.ask({"type": "frame", "session": sid, "seq": 2, "slot": 1})["type"] == "done"


def test_silent_clients_are_reaped_with_their_rings_and_pages(service, peer):
    opened, ring, layout = peer.open()
    other = Peer(service)
    other.hello()
    other_opened, _, _ = other.open()
    assert service.stylizer.cache.used_pages == 2
    end = time.monotonic() + 2.0
    while other_opened["session"] in service.sessions and time.monotonic() < end:
        peer.send({"type": "heartbeat"})  # only this client keeps talking
        peer.replies(1, timeout=0.05)
    assert other_opened["session"] not in service.sessions
    assert opened["session"] in service.sessions and service.stylizer.cache.used_pages == 1
    other.close()


def test_output_is_written_in_the_engines_format(service, peer, frame_factory):
    layout = reference_layout(W, H)
    ring = create_ring("shm", 3, layout.slot_bytes(W, H), output_bytes(W, H, "rgba16f"))
    peer.rings.append(ring)
    r = peer.ask({"type": "open", "req": 1, "width": W, "height": H, "layout": layout.to_dict(),
                  "ring": ring.describe("rgba16f")})
    fill(ring, layout, 0, frame_factory, 1)
    assert peer.ask({"type": "frame", "session": r["session"], "seq": 1, "slot": 0})["type"] == "done"
    px = torch.from_numpy(ring.output(0)).view(torch.float16).view(H, W, 4)
    assert torch.all(px[..., 3] == 1.0) and px[..., :3].min() >= 0 and px[..., :3].max() <= 1
    assert px[..., :3].float().std() > 0


def test_a_closed_connection_is_reaped_at_the_next_heartbeat(tmp_path, tiny_model):
    """However long the silence timeout, a client whose connection closed (killed) is reaped as
    soon as a heartbeat to it fails."""
    cfg = ServiceConfig(bind=f"ipc://{tmp_path}/s.sock", heartbeat_ms=40, reap_after_ms=60000)
    svc = Service(cfg, Stylizer(tiny_model), context=zmq.Context.instance())
    try:
        gone = Peer(svc)
        gone.hello()
        opened, _, _ = gone.open()
        gone.sock.close(0)  # what the OS does for a killed process
        end = time.monotonic() + 3.0
        while opened["session"] in svc.sessions and time.monotonic() < end:
            svc.tick()
        assert opened["session"] not in svc.sessions and svc.stylizer.cache.used_pages == 0
        for r in gone.rings:
            r.close()
    finally:
        svc.shutdown()


def test_a_long_frame_does_not_make_its_waiting_clients_look_silent(tmp_path, tiny_model, frame_factory):
    """Silence is counted only while the service listens: a frame (or a session's warm-up) that
    keeps it busy past the reap time must not reap a client whose messages wait in the socket."""
    cfg = ServiceConfig(bind=f"ipc://{tmp_path}/s.sock", heartbeat_ms=50, reap_after_ms=200)
    svc = Service(cfg, Stylizer(tiny_model), context=zmq.Context.instance())
    peer = Peer(svc)
    try:
        peer.hello()
        w, h = 1280, 960
        opened, ring, layout = peer.open(w, h)
        planes = layout.view(torch.from_numpy(ring.input(0)), w, h)
        for name, value in frame_factory(w, h, layout).items():
            planes[name].copy_(value)
        ring.mark_ready(0, 1)
        peer.send({"type": "frame", "session": opened["session"], "seq": 1, "slot": 0})
        t0 = time.monotonic()
        svc.tick()  # reads the frame, runs it, then housekeeping
        took = time.monotonic() - t0
        assert took > 2 * cfg.reap_after_ms / 1000, f"the frame ({took:.3f} s) was too quick to show anything"
        assert opened["session"] in svc.sessions
        # The engine was waiting for this frame and sent nothing meanwhile (as a client blocked in
        # a request does): its silence counts from the answer, so the next tick keeps it too.
        got = peer.replies(1)
        assert got and got[0]["type"] == "done" and opened["session"] in svc.sessions
        # Silence still reaps: a second client that says nothing past the reap time goes.
        before = set(svc.clients)
        peer.send({"type": "heartbeat"})
        other = Peer(svc)
        other.hello()
        (quiet,) = set(svc.clients) - before
        time.sleep(3 * cfg.reap_after_ms / 1000)
        peer.send({"type": "heartbeat"})
        peer.replies(1, timeout=0.2, skip_heartbeats=False)
        assert quiet not in svc.clients and opened["session"] in svc.sessions
        other.close()
    finally:
        peer.close()
        svc.shutdown()


def make_cycles(n):
    for _ in range(n):
        a = []
        a.append(a)  # a reference cycle: only the cyclic collector frees it


def test_garbage_is_collected_when_due_and_pauses_are_counted_inside_frames():
    import gc

    from streamstyle.service.server import GcWatch, collect_due_garbage

    watch = GcWatch()
    gc.callbacks.append(watch)
    was = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        base = watch.count
        make_cycles(50)
        collect_due_garbage((1000, 10, 10))  # not due: nothing runs
        assert watch.count == base
        make_cycles(1200)
        watch.in_frame = True
        collect_due_garbage((1000, 10, 10))
        assert watch.count == base + 1 and watch.in_frames == 1
        assert gc.get_count()[0] < 1000
        stats = watch.stats()
        assert stats["gc_collections"] == watch.count and stats["gc_max_ms"] >= 0 and stats["gc_in_frames"] == 1
    finally:
        gc.callbacks.remove(watch)
        if was:
            gc.enable()


def test_run_manages_the_collector_and_puts_it_back(tmp_path, tiny_model):
    import gc
    import threading

    cfg = ServiceConfig(bind=f"ipc://{tmp_path}/g.sock", heartbeat_ms=20, reap_after_ms=100)
    svc = Service(cfg, Stylizer(tiny_model), context=zmq.Context.instance())
    seen = {}

    def look():  # from another thread, while the service loop runs (start-up collects first)
        end = time.monotonic() + 20
        while gc.isenabled() and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.05)
        seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count())
        svc.stop()

    t = threading.Thread(target=look)
    t.start()
    svc.run(stop_after_s=30)
    t.join()
    assert seen["enabled"] is False and seen["frozen"] > 0  # while serving: off, start-up frozen
    assert gc.isenabled() and gc.get_freeze_count() == 0  # and put back after
    assert "gc_collections" in svc.service_stats()
