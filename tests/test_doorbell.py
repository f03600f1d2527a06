"""The doorbell (interop/doorbell.py): its lanes, its checks, and a real service taking frames from
it beside ZeroMQ (a child process, real sockets, real shared memory)."""

import struct
import time
from pathlib import Path
from multiprocessing import shared_memory

import numpy as np
import pytest
import torch
import zmq

from streamstyle.interop import doorbell as DB
from streamstyle.interop import protocol as P
from streamstyle.interop.client import Client, ServiceError
from streamstyle.interop.errors import RingError
from streamstyle.interop.shm import ShmRing
from streamstyle.model.layout import reference_layout
from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot

from .test_service_e2e import ServiceProcess, frames_of, run_frames, weights  # noqa: F401  (a fixture)


# --- the segment alone ----------------------------------------------------------------------

def test_a_lane_carries_messages_in_order_and_refuses_when_full_or_too_long():
    bell = DB.Doorbell.create()
    side = DB.Doorbell.attach(bell.name)
    try:
        lane_w, lane_r = bell.to_service, side.to_service
        assert lane_r.pop() is None
        for i in range(DB.RECORDS):
            assert lane_w.push(f"m{i}".encode())
        assert not lane_w.push(b"one too many") and lane_w.skipped == 1
        assert lane_r.pop() == b"m0"
        assert lane_w.push(b"fits again")
        assert not lane_w.push(b"x" * (DB.RECORD_BYTES - 3)) and lane_w.skipped == 2  # its length takes 4
        assert lane_w.push(b"y" * (DB.RECORD_BYTES - 4)) is False  # still full: 16 waiting
        got = [lane_r.pop() for _ in range(DB.RECORDS)]
        assert got == [f"m{i}".encode() for i in range(1, DB.RECORDS)] + [b"fits again"]
        assert lane_r.pop() is None
        assert lane_w.push(b"y" * (DB.RECORD_BYTES - 4)) and lane_r.pop() == b"y" * (DB.RECORD_BYTES - 4)
        # the other lane is independent
        assert side.to_engine.push(b"answer") and bell.to_engine.pop() == b"answer" and bell.to_service.pop() is None
        # the reader's `watched until`, seen by the writer, and only on its own lane
        lane_r.watch(123_456_789)
        assert lane_w.watched_until() == 123_456_789 and bell.to_engine.watched_until() == 0
        raw = bytes(bell.shm.buf[DB.LANE_OFFSET[DB.TO_SERVICE] + DB.CONSUMED_OFFSET + DB.WATCH_OFFSET:][:8])
        assert struct.unpack("<Q", raw)[0] == 123_456_789
    finally:
        side.close()
        bell.close()


def test_a_staged_record_is_invisible_until_published_and_a_push_replaces_one_never_published():
    # The service stages a frame's done before it waits for the device and publishes the filled
    # bytes after (Lane.stage / publish): the reader must see nothing before, exactly the final
    # bytes after, and a stage that was abandoned (the frame failed) must not leak into the lane.
    bell = DB.Doorbell.create()
    side = DB.Doorbell.attach(bell.name)
    try:
        w, r = side.to_engine, bell.to_engine
        answer = P.DoneAnswer({"session": 3, "seq": 7, "slot": 1})
        assert w.stage(answer.template)
        assert not r.pending() and r.pop() is None
        with pytest.raises(ValueError):
            w.publish(answer.template + b"x")  # another length: refused, nothing published
        assert not r.pending()
        answer.fill(True, 0.1, 5.5, 0.01)
        data = answer.finish(6.25)
        w.publish(data)
        assert r.pop() == data and P.decode_raw(data)["timings"]["total_ms"] == 6.25
        with pytest.raises(ValueError):
            w.publish(data)  # nothing staged any more
        assert w.stage(b"abandoned") and w.push(b"late one") and r.pop() == b"late one" and r.pop() is None
        for i in range(DB.RECORDS):
            assert w.push(b"m%d" % i)
        assert not w.stage(b"full") and w.skipped == 1  # a full lane stages nothing
        with pytest.raises(ValueError):
            w.publish(b"full")
    finally:
        side.close()
        bell.close()


def test_a_record_with_a_length_out_of_range_is_consumed_and_given_as_empty():
    bell = DB.Doorbell.create()
    side = DB.Doorbell.attach(bell.name)
    try:
        assert bell.to_service.push(b"ok")
        base = DB.RECORDS_OFFSET
        bell.shm.buf[base: base + 4] = struct.pack("<I", DB.RECORD_BYTES * 9)  # a writer gone wrong
        assert side.to_service.pop() == b""
        assert side.to_service.pop() is None
    finally:
        side.close()
        bell.close()


def test_attaching_checks_the_segment():
    with pytest.raises(RingError, match="cannot be opened"):
        DB.Doorbell.attach("streamstyle-no-such-doorbell")
    with pytest.raises(RingError, match="not a shared-memory name"):
        DB.Doorbell.attach("a/b")
    for header, size, match in ((struct.pack(DB.HEADER_FORMAT, 0x1234, DB.VERSION, DB.RECORD_BYTES, DB.RECORDS, 1),
                                 DB.SEGMENT_BYTES, "not a doorbell"),
                                (struct.pack(DB.HEADER_FORMAT, DB.MAGIC, 99, DB.RECORD_BYTES, DB.RECORDS, 1),
                                 DB.SEGMENT_BYTES, "version 99"),
                                (struct.pack(DB.HEADER_FORMAT, DB.MAGIC, DB.VERSION, 512, DB.RECORDS, 1),
                                 DB.SEGMENT_BYTES, "records of 512 bytes"),
                                (struct.pack(DB.HEADER_FORMAT, DB.MAGIC, DB.VERSION, DB.RECORD_BYTES, DB.RECORDS, 1),
                                 DB.RECORDS_OFFSET + 100, "its lanes need"),
                                (b"", 16, "less than its header")):
        shm = shared_memory.SharedMemory(create=True, size=size)
        try:
            shm.buf[:len(header)] = header
            with pytest.raises(RingError, match=match):
                DB.Doorbell.attach(shm.name)
        finally:
            shm.close()
            shm.unlink()


def test_the_protocol_doc_shows_the_segment_layout_of_the_contract():
    doc = (Path(DB.__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    assert DB.layout_table() in doc
    assert DB.SEGMENT_BYTES == DB.RECORDS_OFFSET + 2 * DB.RECORDS * DB.RECORD_BYTES
    # each lane's `watched until` on its `consumed` counter's line (the writer reads that line anyway)
    assert DB.CONSUMED_OFFSET % 64 == 0 and DB.WATCH_OFFSET + 8 <= 64
    assert DB.LANE_OFFSET[0] + DB.CONSUMED_OFFSET + DB.WATCH_OFFSET + 8 <= DB.LANE_OFFSET[1]
    assert DB.LANE_OFFSET[1] + DB.CONSUMED_OFFSET + DB.WATCH_OFFSET + 8 <= DB.RECORDS_OFFSET


def test_seen_takes_each_seq_once_within_its_window():
    seen = DB.Seen()
    assert seen.take(1) and not seen.take(1)
    for seq in range(2, 2 + DB.DEDUP_WINDOW):
        assert seen.take(seq)
    assert seen.take(1)  # forgotten: beyond the window
    assert not seen.take(2 + DB.DEDUP_WINDOW - 1)


def test_the_beat_spins_only_around_a_steady_rhythm():
    beat = DB.Beat()
    assert beat.plan(0.0) == (False, float("inf"))
    for i in range(10):
        beat.arrived(1.0 + i * 0.016)
    last = beat.last
    spin, wait = beat.plan(last + 0.005)
    assert not spin and wait == pytest.approx(0.016 - 0.005 - DB.SPIN_LEAD_US / 1e6, abs=1e-4)
    assert beat.plan(last + 0.016)[0]  # due now
    assert beat.plan(last + 0.016 - DB.SPIN_LEAD_US / 1e6 / 2)[0]  # just before it
    assert beat.plan(last + 2 * 0.016)[0]  # a frame skipped: the next one's window
    assert beat.plan(last + 1.5)[1] == float("inf")  # silent for a second: no rhythm
    hitched = DB.Beat()  # a session's slow first frame, then a hitch: neither moves the beat
    for t in (0.0, 0.4, 0.416, 0.432, 0.448, 0.8, 0.816, 0.832):
        hitched.arrived(t)
    assert hitched.period == pytest.approx(0.016) and hitched.dev < 0.016 / 4
    assert hitched.plan(0.832 + 0.016)[0]
    faster = DB.Beat()  # a new frame rate takes over within BEAT_SAMPLES / 2 + 1 intervals
    for i in range(DB.BEAT_SAMPLES):
        faster.arrived(i * 0.033)
    for i in range(1, DB.BEAT_SAMPLES // 2 + 2):
        faster.arrived((DB.BEAT_SAMPLES - 1) * 0.033 + i * 0.016)
    assert faster.period == pytest.approx(0.016)
    ragged = DB.Beat()
    for t in (0.0, 0.005, 0.030, 0.032, 0.070, 0.071, 0.120):
        ragged.arrived(t)
    assert ragged.plan(0.125) == (False, float("inf"))  # deviations above a quarter of the period


# --- a real service ---------------------------------------------------------------------------

@pytest.fixture
def service(tmp_path, weights):  # noqa: F811
    svc = ServiceProcess(tmp_path, weights, "--no-prompts", config={"heartbeat_ms": 100, "reap_after_ms": 30000})
    yield svc
    svc.stop()


def test_a_session_with_a_doorbell_gives_the_same_frames(service):
    w, h = 64, 48
    frames = frames_of(3, w, h, 12)
    with Client(service.address) as client:
        plain = client.open_session(w, h, reference_layout(w, h), seed=11)
        belled = client.open_session(w, h, reference_layout(w, h), seed=11, doorbell=True)
        assert belled.bell is not None and plain.bell is None
        a, _ = run_frames(client, plain, frames)
        b, seqs = run_frames(client, belled, frames)
        stats = belled.stats()
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert seqs == list(range(1, 13))  # each answered once: the second copies were dropped
    assert stats["doorbell"] and stats["done"] == 12 and stats["frames_in"] == 12


def raw_session(address, w, h, bell):
    """hello and open over a bare DEALER (no client library), with `bell` named in the open."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)

    def ask(msg):
        sock.send(P.encode(msg))
        while True:
            assert sock.poll(60000)
            reply = P.decode_raw(sock.recv())
            if reply["type"] != "heartbeat":
                return reply

    assert ask({"type": "hello", "protocol": P.PROTOCOL_VERSION, "req": 1})["type"] == "welcome"
    layout = reference_layout(w, h)
    ring = ShmRing.create(3, layout.slot_bytes(w, h), w * h * 4)
    msg = {"type": "open", "req": 2, "width": w, "height": h, "layout": layout.to_dict(),
           "ring": ring.describe(), "seed": 1}
    if bell is not None:
        msg["doorbell"] = bell if isinstance(bell, str) else bell.name
    return sock, ring, layout, ask(msg)


def answers(sock, bell, want, timeout_s=60.0):
    """(ZeroMQ messages, doorbell messages) until `want` answers came over ZeroMQ."""
    over_zmq, over_bell = [], []
    end = time.monotonic() + timeout_s
    while len(over_zmq) < want and time.monotonic() < end:
        if sock.poll(10):
            m = P.decode_raw(sock.recv())
            if m["type"] != "heartbeat":
                over_zmq.append(m)
    time.sleep(0.05)
    while (data := bell.to_engine.pop()) is not None:
        over_bell.append(P.decode_raw(data))
    return over_zmq, over_bell


def test_the_service_takes_a_frame_from_the_doorbell_alone_and_drops_second_copies(service):
    w, h = 64, 48
    bell = DB.Doorbell.create()
    sock, ring, layout, opened = raw_session(service.address, w, h, bell)
    try:
        assert opened["type"] == "opened" and opened["doorbell"] is True
        sid = opened["session"]
        frames = frames_of(1, w, h, 3)
        assert bell.to_service.watched_until() == 0
        before = time.monotonic_ns()
        # frame 1 only through the doorbell: the service's loop finds it without a ZeroMQ message
        to_slot(frames[0], layout, ring.input(0))
        ring.mark_ready(0, 1)
        assert bell.to_service.push(P.encode({"type": "frame", "session": sid, "seq": 1, "slot": 0}))
        zm, bm = answers(sock, bell, 1)
        assert [(m["type"], m["seq"]) for m in zm] == [("done", 1)] and [(m["type"], m["seq"]) for m in bm] == [("done", 1)]
        assert zm[0]["timings"] == bm[0]["timings"]
        # after an answer the service watches the lane for the next frame, and says until when
        assert before < bell.to_service.watched_until() <= time.monotonic_ns() + 10**9
        # frame 2 both ways, the ZeroMQ copy first: answered once
        to_slot(frames[1], layout, ring.input(1))
        ring.mark_ready(1, 2)
        data = P.encode({"type": "frame", "session": sid, "seq": 2, "slot": 1})
        sock.send(data)
        time.sleep(0.2)
        assert bell.to_service.push(data)
        zm, bm = answers(sock, bell, 1)
        time.sleep(0.3)
        assert not sock.poll(0) or P.decode_raw(sock.recv())["type"] == "heartbeat"
        assert [m["seq"] for m in zm] == [2] and [m["seq"] for m in bm] == [2]
        # what a doorbell may not carry: typed errors over ZeroMQ, and the session goes on
        for bad, code in ((P.encode({"type": "heartbeat"}), P.ErrorCode.BAD_MESSAGE),
                          (P.encode({"type": "frame", "session": sid + 99, "seq": 3, "slot": 2}), P.ErrorCode.BAD_MESSAGE),
                          (b"\xc1 not msgpack", P.ErrorCode.BAD_MESSAGE),
                          (P.encode({"type": "frame", "session": sid, "seq": 3, "slot": 7}), P.ErrorCode.BAD_SLOT)):
            assert bell.to_service.push(bad)
            zm, _ = answers(sock, bell, 1)
            assert zm[0]["type"] == "error" and zm[0]["code"] == code, zm
        to_slot(frames[2], layout, ring.input(2))
        ring.mark_ready(2, 4)
        assert bell.to_service.push(P.encode({"type": "frame", "session": sid, "seq": 4, "slot": 2}))
        zm, _ = answers(sock, bell, 1)
        assert [(m["type"], m["seq"]) for m in zm] == [("done", 4)]
    finally:
        sock.close()
        ring.close()
        bell.close()


def test_an_open_naming_a_missing_or_foreign_doorbell_is_refused(service):
    w, h = 64, 48
    sock, ring, _, opened = raw_session(service.address, w, h, "streamstyle-no-such-doorbell")
    sock.close()
    ring.close()
    assert opened["type"] == "error" and opened["code"] == P.ErrorCode.BAD_RING and "doorbell" in opened["message"]
    foreign = shared_memory.SharedMemory(create=True, size=DB.SEGMENT_BYTES)
    try:
        sock, ring, _, opened = raw_session(service.address, w, h, foreign.name)
        sock.close()
        ring.close()
        assert opened["type"] == "error" and opened["code"] == P.ErrorCode.BAD_RING and "not a doorbell" in opened["message"]
    finally:
        foreign.close()
        foreign.unlink()
    with Client(service.address) as client:  # the service is unharmed
        s = client.open_session(w, h, reference_layout(w, h), doorbell=True)
        out, _ = run_frames(client, s, frames_of(2, w, h, 2))
        assert len(out) == 2


def test_open_refuses_a_doorbell_that_is_not_a_name():
    check = P.Open.FIELDS["doorbell"][1]
    assert check("streamstyle-bell", "open.doorbell") == "streamstyle-bell"
    for bad in (5, b"bytes", "x" * 300):
        with pytest.raises(P.ProtocolError) as err:
            check(bad, "open.doorbell")
        assert err.value.code == P.ErrorCode.BAD_FIELD


def test_a_doorbell_works_behind_a_front_of_workers(tmp_path, weights):  # noqa: F811
    """`serve --workers`: the front relays ZeroMQ, the worker holding the session reads its doorbell."""
    svc = ServiceProcess(tmp_path, weights, "--workers", "1", "--no-prompts")
    try:
        w, h = 64, 48
        with Client(svc.address) as client:
            s = client.open_session(w, h, reference_layout(w, h), seed=4, doorbell=True)
            assert s.bell is not None
            outs, seqs = run_frames(client, s, frames_of(6, w, h, 4))
            stats = s.stats()
        assert seqs == [1, 2, 3, 4] and stats["done"] == 4 and stats["doorbell"]
    finally:
        svc.stop()


def test_counters_no_writer_would_set_are_refused_once_and_the_service_serves_on(service):
    w, h = 64, 48
    bell = DB.Doorbell.create()
    sock, ring, layout, opened = raw_session(service.address, w, h, bell)
    try:
        sid = opened["session"]
        for bad in (1000, 3):  # more waiting than the lane holds; then fewer published than consumed
            bell.to_service._pub[0] = bad
            zm, _ = answers(sock, bell, 1)
            assert zm[0]["type"] == "error" and zm[0]["code"] == P.ErrorCode.BAD_MESSAGE and "doorbell" in zm[0]["message"]
            time.sleep(0.3)
            assert not sock.poll(0) or P.decode_raw(sock.recv())["type"] == "heartbeat"  # refused once, not each tick
            assert bell.to_service._con[0] == bad  # skipped to the writer's end
        to_slot(frames_of(1, w, h, 1)[0], layout, ring.input(0))
        ring.mark_ready(0, 1)
        assert bell.to_service.push(P.encode({"type": "frame", "session": sid, "seq": 1, "slot": 0}))
        zm, _ = answers(sock, bell, 1)
        assert [(m["type"], m["seq"]) for m in zm] == [("done", 1)]
    finally:
        sock.close()
        ring.close()
        bell.close()
