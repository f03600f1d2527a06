"""The protocol under generated input (hypothesis): thousands of messages of every type, most of
them broken somewhere in their nested fields or bytes (tests/fuzz_messages.py), sent over a real
ZeroMQ socket to a service with real shared-memory rings, a tiny model and the real prompt
encoder.

What must hold: every message is answered, every answer is a reply of the protocol or an error
with one of its codes (never `internal`), the service answers a hello afterwards, and a session
another client opened before the barrage computes exactly (bit for bit) what a fresh session with
the same seed computes from the same frames: no message of one client reaches another's session.
"""

import os
import random
import secrets

import torch
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streamstyle.interop import create_ring
from streamstyle.interop import protocol as P
from streamstyle.model.layout import reference_layout
from streamstyle.model.stylizer import Stylizer
from streamstyle.model.text import PromptEncoder
from streamstyle.service.config import ServiceConfig
from streamstyle.service.server import Service, output_bytes

from .fuzz_messages import Driver, Fuzzer
from .test_service_policies import H, W, Peer

MESSAGES = 2000
BATCH = 5  # messages per hypothesis example
SEED, PROMPT = 5, "pencil hatching"


def put(ring, layout, slot, planes, seq):
    views = layout.view(torch.from_numpy(ring.input(slot)), W, H)
    for name, value in planes.items():
        views[name].copy_(value)
    ring.mark_ready(slot, seq)


def run(peer, sid, ring, layout, frames, first_seq):
    outs = []
    for i, planes in enumerate(frames):
        seq = first_seq + i
        put(ring, layout, seq % ring.slots, planes, seq)
        r = peer.ask({"type": "frame", "session": sid, "seq": seq, "slot": seq % ring.slots})
        assert r["type"] == "done", r
        outs.append(torch.from_numpy(ring.output(seq % ring.slots).copy()))
    return outs


def test_generated_messages_never_crash_the_service_nor_touch_another_session(tmp_path, tiny_model, frame_factory):
    cfg = ServiceConfig(bind=f"ipc://{tmp_path}/f.sock", heartbeat_ms=60000, reap_after_ms=600000, max_sessions=4,
                        recordings_dir=str(tmp_path / "recordings"))  # `record` messages are fuzzed too
    svc = Service(cfg, Stylizer(tiny_model, PromptEncoder(max_tokens=16)), context=zmq.Context.instance())
    layout = reference_layout(W, H)
    frames = [frame_factory(W, H, layout) for _ in range(4)]
    good = Peer(svc)
    fuzz_sock = zmq.Context.instance().socket(zmq.DEALER)
    fuzz_sock.setsockopt(zmq.LINGER, 0)
    fuzz_ring = create_ring("shm", 3, layout.slot_bytes(W, H), output_bytes(W, H, "rgba8"))
    empty = f"ss_fuzz_empty_{secrets.token_hex(4)}"
    os.close(os.open(f"/dev/shm/{empty}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    try:
        good.hello()
        opened, ring, _ = good.open(seed=SEED, prompt=PROMPT)
        good_sid = opened["session"]
        before = run(good, good_sid, ring, layout, frames[:2], 1)

        for slot in range(3):  # unbroken frames of the fuzzing client run on plausible inputs
            put(fuzz_ring, layout, slot, frame_factory(W, H, layout), 0)
        fuzzer = Fuzzer(fuzz_ring.describe(), layout.to_dict(), W, H, sessions=[good_sid], empty_segment=empty,
                        mark_ready=fuzz_ring.mark_ready, max_parts=svc.stylizer.config.max_prompts)
        fuzz_sock.connect(svc.address)
        driver = Driver(fuzz_sock, fuzzer, pump=svc.tick, timeout_s=10.0)

        # Hypothesis draws one seed per batch and the generator runs on a Random of that seed:
        # what a message holds depends on the service's state too (the live sessions it aims
        # at), which hypothesis's own Random would report as a flaky strategy. Derandomized, so
        # a run is reproducible; a failure names its seed. No shrinking: the service keeps state.
        @settings(max_examples=MESSAGES // BATCH, deadline=None, derandomize=True, database=None,
                  phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
        @given(st.integers(0, 2 ** 64 - 1))
        def barrage(seed):
            rng = random.Random(seed)
            for _ in range(BATCH):
                driver.send_one(rng)
            assert driver.tally.clean, driver.tally.examples

        barrage()
        t = driver.tally
        print(f"\nfuzz: {t.sent} messages, {t.answers} answered, answers {dict(t.types)}, error codes {dict(t.codes)}")
        assert t.sent >= MESSAGES and t.answers == t.sent and t.clean
        # The generator reaches every part of the service, not only the decoder.
        assert t.types["opened"] and t.types["done"] and t.types["ok"] and t.types["closed"] and t.types["welcome"]
        assert {"bad_message", "bad_field", "unknown_type", "unknown_session", "bad_ring", "bad_layout",
                "bad_sequence", "session_limit"} <= set(t.codes)

        fuzz_sock.send(P.encode({"type": "hello", "protocol": 1, "req": 1}))
        assert any(m["type"] == "welcome" for m in Peer.replies(_As(svc, fuzz_sock), 1))
        for sid in [s for s in fuzzer.sessions if s != good_sid]:
            fuzz_sock.send(P.encode({"type": "close", "req": 2, "session": sid}))
            Peer.replies(_As(svc, fuzz_sock), 1)

        after = run(good, good_sid, ring, layout, frames[2:], 3)
        stats = good.ask({"type": "stats", "req": 3, "session": good_sid})["sessions"][0]
        assert (stats["frames_in"], stats["done"], stats["late"], stats["dropped"]) == (4, 4, 0, 0)
        fresh, ring2, _ = good.open(seed=SEED, prompt=PROMPT)
        assert fresh["type"] == "opened", fresh
        replay = run(good, fresh["session"], ring2, layout, frames, 1)
        for i, (a, b) in enumerate(zip(before + after, replay)):
            assert torch.equal(a, b), f"frame {i + 1} of the session opened before the barrage differs"
    finally:
        fuzz_sock.close(0)
        fuzz_ring.close()
        good.close()
        svc.shutdown()
        os.unlink(f"/dev/shm/{empty}")


class _As:
    """Peer.replies over another socket of the same service."""

    def __init__(self, service, sock):
        self.service, self.sock = service, sock


@settings(max_examples=300, deadline=None)
@given(session=st.integers(0, 2**63 - 1), seq=st.integers(0, 2**63 - 1), slot=st.integers(0, 64),
       late=st.booleans(), timings=st.lists(st.floats(allow_nan=False), min_size=4, max_size=4))
def test_a_filled_done_answer_is_the_encoding_of_the_same_reply(session, seq, slot, late, timings):
    # The service encodes a frame's done before the device finishes and writes its numbers in
    # after (P.DoneAnswer): the bytes must be what encoding the whole reply gives, for any ids
    # (msgpack's integer widths move the timings' offsets) and any float, infinities and
    # sentinel-like values included.
    reply = {"session": session, "seq": seq, "slot": slot}
    answer = P.DoneAnswer(reply)
    want = P.encode({"type": "done", **reply, "late": late, "timings": dict(zip(P.DONE_TIMINGS, timings))})
    answer.fill(late, *timings[:3])
    assert answer.finish(timings[3]) == want
    answer.fill(not late, *timings[3:0:-1])  # the same answer filled again: nothing of the first stays
    assert answer.finish(timings[0]) == P.encode(
        {"type": "done", **reply, "late": not late, "timings": dict(zip(P.DONE_TIMINGS, reversed(timings)))})
    answer.fill(late, *timings[:3])
    back = P.decode_raw(answer.finish(timings[3]))
    assert back["late"] is late and list(back["timings"].values()) == timings
