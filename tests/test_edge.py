"""The service's edge, over a real ZeroMQ socket and real shared memory: no message crashes it.

One test per crash cause measured on main (issue 12), each sending the message that made the
service exit; errors that carry the request's `req` (and a frame's `session` and `seq`) even when
the rest of the message failed, so that a client gets the service's answer at once; refused
frames that consume nothing; the catch-all that turns a failing handler into `internal`.
"""

import logging
import math
import os
import secrets
import time

import msgpack
import numpy as np
import pytest
import torch
import zmq

from streamstyle.interop import create_ring
from streamstyle.interop import protocol as P
from streamstyle.interop.limits import MAX_BLEND_WEIGHT, MIN_BLEND_WEIGHT
from streamstyle.model.errors import PromptError
from streamstyle.model.layout import reference_layout
from streamstyle.model.stylizer import Stylizer
from streamstyle.model.text import PromptEncoder, normalize_blend
from streamstyle.service.config import ServiceConfig
from streamstyle.service.server import Service, output_bytes

from .test_service_policies import H, W, Peer, fill, state_of


@pytest.fixture(scope="module")
def encoder():
    return PromptEncoder(max_tokens=16)  # the tiny preset's tokens per prompt


@pytest.fixture
def service(tmp_path, tiny_model, encoder):
    # No test here is about reaping: a loaded machine's slow prompt encode must not reap the peer.
    cfg = ServiceConfig(bind=f"ipc://{tmp_path}/s.sock", heartbeat_ms=40, reap_after_ms=60000, max_sessions=3)
    svc = Service(cfg, Stylizer(tiny_model, encoder), context=zmq.Context.instance())
    yield svc
    svc.shutdown()


@pytest.fixture
def peer(service):
    p = Peer(service)
    p.hello()
    yield p
    p.close()


def open_message(peer, req=1, **kw):
    layout = reference_layout(W, H)
    ring = create_ring("shm", 3, layout.slot_bytes(W, H), output_bytes(W, H, "rgba8"))
    peer.rings.append(ring)
    return {"type": "open", "req": req, "width": W, "height": H, "layout": layout.to_dict(), "ring": ring.describe(),
            **kw}


def alive(peer):
    assert peer.ask({"type": "hello", "protocol": 1, "req": 999})["type"] == "welcome"


def frame_stats(peer, sid):
    s = peer.ask({"type": "stats", "req": 77, "session": sid})["sessions"][0]
    return {k: s[k] for k in ("frames_in", "done", "late", "dropped")}


# --- the six measured crash causes ----------------------------------------------------------------

@pytest.mark.parametrize("extra", [b"\xc1", b"\xc1\xc1", b"\x91", b"\xd9", b"\x00"])
def test_trailing_bytes_of_any_kind_are_bad_message(service, peer, extra):
    """0xc1 (a byte msgpack never uses) made the second unpack raise FormatError, which escaped;
    an incomplete trailer (0x91, 0xd9) was silently accepted."""
    r = peer.ask(P.encode({"type": "stats", "req": 11}) + extra)
    assert (r["type"], r["code"], r["req"]) == ("error", "bad_message", 11) and "trailing" in r["message"]
    alive(peer)


def _bin_key(where):
    def put(msg):
        target = {"top": msg, "layout": msg["layout"], "channel": msg["layout"]["channels"][2], "ring": msg["ring"],
                  "region": msg["ring"]["inputs"][1], "sync": msg["ring"]["sync"],
                  "params": msg.setdefault("params", {})}[where]
        target[b"name" if where == "channel" else b"extra"] = 1
    return put


@pytest.mark.parametrize("where", ["top", "layout", "channel", "ring", "region", "sync", "params"])
def test_bin_map_keys_at_any_level_are_bad_message(service, peer, where):
    """Some C and C++ msgpack libraries write map keys as `bin`; sorting them beside strings (or
    passing them as keyword names) raised TypeError out of the handler."""
    msg = open_message(peer, req=21)
    _bin_key(where)(msg)
    before = state_of(service)
    r = peer.ask(msg)
    assert (r["type"], r["code"], r["req"]) == ("error", "bad_message", 21) and "strings" in r["message"]
    after = state_of(service)
    assert after[:2] == before[:2] and torch.equal(after[2], before[2])
    alive(peer)


def test_bin_keys_in_a_frame_carry_its_session_and_seq(service, peer):
    data = msgpack.packb({"type": "frame", "session": 4, "seq": 8, "slot": 0, "params": {b"steps": 2}},
                         use_bin_type=True)
    r = peer.ask(data)
    assert (r["code"], r["session"], r["seq"]) == ("bad_message", 4, 8) and "req" not in r


def test_a_layout_without_channels_is_bad_layout(service, peer):
    """`slot_bytes` took the max() of no planes: ValueError out of open."""
    before = state_of(service)
    r = peer.ask({**open_message(peer, req=31), "layout": {"channels": []}})
    assert (r["code"], r["req"]) == ("bad_layout", 31) and "no channels" in r["message"]
    assert state_of(service)[:2] == before[:2]
    alive(peer)


@pytest.mark.parametrize("weights", [(1e-300, 1e300), (1e300, 1e-300), (1e308, 1e308), (5e-324, 1.0)])
def test_extreme_blend_weights_are_refused_with_a_typed_error(service, peer, weights):
    """1e-300 beside 1e300 normalised the small one to 0.0 and took log(0) (ValueError out of the
    prompt handler); 1e308 + 1e308 overflowed the sum to infinity. Weights outside the contract's
    range (interop.limits MIN/MAX_BLEND_WEIGHT) are now a bad_field, in open as in prompt, and the
    model's blend arithmetic (normalize_blend) stays finite for any weights inside it."""
    prompt = [["ink outlines", weights[0]], ["soft watercolor", weights[1]]]
    before = state_of(service)
    r = peer.ask(open_message(peer, req=41, prompt=prompt))
    assert (r["type"], r["code"], r["req"]) == ("error", "bad_field", 41) and "weight must be" in r["message"], r
    after = state_of(service)
    assert after[:2] == before[:2] and torch.equal(after[2], before[2])
    opened = peer.ask(open_message(peer, req=44, prompt="ink outlines"))
    assert opened["type"] == "opened", opened
    sid = opened["session"]
    r = peer.ask({"type": "prompt", "req": 42, "session": sid, "prompt": prompt, "blend_frames": 2})
    assert (r["type"], r["code"], r["req"], r["session"]) == ("error", "bad_field", 42, sid)
    assert service.sessions[sid].prompt == "ink outlines" and service.sessions[sid].blend is None
    alive(peer)


def test_weights_at_the_ends_of_the_range_blend_finitely(service, peer, frame_factory):
    lo, hi = MIN_BLEND_WEIGHT, MAX_BLEND_WEIGHT
    opened = peer.ask(open_message(peer, req=41, prompt=[["ink outlines", lo], ["soft watercolor", hi]]))
    assert opened["type"] == "opened", opened
    sid, ring = opened["session"], peer.rings[-1]
    layout = reference_layout(W, H)
    r = peer.ask({"type": "prompt", "req": 43, "session": sid, "prompt": [["noir", hi], ["neon", lo]],
                  "blend_frames": 2})
    assert (r["type"], r["req"]) == ("ok", 43), r
    for seq in (1, 2, 3):  # the blend's frames run, and the one after it
        fill(ring, layout, seq % 3, frame_factory, seq)
        r = peer.ask({"type": "frame", "session": sid, "seq": seq, "slot": seq % 3})
        assert r["type"] == "done", r
        assert np.asarray(ring.output(seq % 3)).std() > 0  # a real picture, not an unwritten slot
    assert service.sessions[sid].blend is None


def test_blend_weights_stay_finite_and_sum_to_one():
    lo, hi = MIN_BLEND_WEIGHT, MAX_BLEND_WEIGHT
    for weights in [(lo, hi), (hi, hi, hi, hi), (lo,), (lo, 2 * lo), (hi, lo, lo, lo)]:
        parts = normalize_blend([(str(i), w) for i, w in enumerate(weights)], 4)
        ws = [w for _, w in parts]
        assert all(math.isfinite(w) and w >= 0 for w in ws) and abs(sum(ws) - 1) < 1e-12 and max(ws) > 0


@pytest.mark.parametrize("prompt", [[["a", 0.0]], [["a", 0.0], ["b", 1.0]], [["a", -1.0]], [["a", -0.0]]])
def test_weights_the_model_refuses_are_refused_at_the_edge(service, peer, prompt):
    """A blend to [["a", 0.0]] divided by the zero total in the service (ZeroDivisionError)."""
    opened = peer.ask(open_message(peer, prompt="pencil hatching"))
    sid = opened["session"]
    state = service.sessions[sid]
    r = peer.ask({"type": "prompt", "req": 51, "session": sid, "prompt": prompt, "blend_frames": 3})
    assert (r["code"], r["req"], r["session"]) == ("bad_field", 51, sid) and "weight" in r["message"]
    assert state.prompt == "pencil hatching" and state.blend is None
    r = peer.ask(open_message(peer, req=52, prompt=prompt))
    assert (r["code"], r["req"]) == ("bad_field", 52) and len(service.sessions) == 1
    alive(peer)


@pytest.mark.parametrize("weight", [0.0, -0.0, -1.0, 1e-300, 1.0, 1e300, float("inf"), float("nan"), True, 3])
def test_the_contract_takes_only_weights_the_model_takes(weight):
    """The edge refuses whatever the model would refuse (so nothing refused deep inside reaches
    it), and it is narrower: weights outside interop.limits' range never cross the wire."""
    try:
        normalize_blend([("a", weight)], 4)
        model_takes = True
    except PromptError:
        model_takes = False
    try:
        P.parse_request(P.encode({"type": "prompt", "req": 1, "session": 1, "prompt": [["a", weight]]}))
        edge_takes = True
    except P.ProtocolError as exc:
        assert exc.code == "bad_field"
        edge_takes = False
    assert model_takes or not edge_takes
    assert edge_takes == (model_takes and MIN_BLEND_WEIGHT <= weight <= MAX_BLEND_WEIGHT and weight is not True)


@pytest.mark.parametrize("where", ["sync", "input"])
def test_a_zero_byte_segment_named_as_a_region_is_bad_ring(service, peer, where):
    """Mapping an empty segment raised ValueError ("cannot mmap an empty file") out of open."""
    name = f"ss_empty_{secrets.token_hex(4)}"
    os.close(os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    try:
        msg = open_message(peer, req=61)
        if where == "sync":
            msg["ring"]["sync"]["handle"] = name
        else:
            msg["ring"]["inputs"][0]["handle"] = name
        before = state_of(service)
        r = peer.ask(msg)
        assert (r["code"], r["req"]) == ("bad_ring", 61) and "empty" in r["message"]
        assert state_of(service)[:2] == before[:2]
        alive(peer)
    finally:
        os.unlink(f"/dev/shm/{name}")


# --- errors carry the request's identity -------------------------------------------------------

@pytest.mark.parametrize("msg, code, context", [
    ({"type": "stats", "req": 12, "colour": 1}, "bad_field", {"req": 12}),
    ({"type": "open", "req": 13, "width": 100000, "height": 100000}, "bad_resolution", {"req": 13}),
    ({"type": "params", "req": 14, "session": 3, "params": {"steps": 5}}, "bad_field", {"req": 14, "session": 3}),
    ({"type": "prompt", "req": 15, "session": 3, "prompt": "x" * 5000}, "bad_field", {"req": 15, "session": 3}),
    ({"type": "frame", "session": 5, "seq": 9, "slot": "zero"}, "bad_field", {"session": 5, "seq": 9}),
    ({"type": "frame", "session": 5, "seq": 0, "slot": 0}, "bad_field", {"session": 5, "seq": 0}),
    ({"type": "teleport", "req": 16}, "unknown_type", {"req": 16}),
    ({"type": "stats", "req": "17"}, "bad_field", {}),  # not an integer: nothing to echo
    ({"type": "stats", "req": True}, "bad_field", {}),  # booleans are not integers
])
def test_errors_carry_req_session_and_seq_when_the_raw_message_had_them(service, peer, msg, code, context):
    r = peer.ask(msg)
    assert r["type"] == "error" and r["code"] == code
    assert {k: r[k] for k in ("req", "session", "seq") if k in r} == context


def test_a_frame_before_hello_is_answered_with_its_session_and_seq(service):
    p = Peer(service)
    try:
        r = p.ask({"type": "frame", "session": 3, "seq": 12, "slot": 0})
        assert (r["code"], r["session"], r["seq"]) == ("hello_first", 3, 12) and "req" not in r
    finally:
        p.close()


# --- refused frames change nothing --------------------------------------------------------------

def test_refused_frames_do_not_consume_their_sequence_number(service, peer, frame_factory):
    opened = peer.ask(open_message(peer))
    sid, ring, layout = opened["session"], peer.rings[-1], reference_layout(W, H)
    state = service.sessions[sid]
    before = frame_stats(peer, sid)
    r = peer.ask({"type": "frame", "session": sid, "seq": 1, "slot": 5})
    assert (r["code"], r["seq"]) == ("bad_slot", 1)
    r = peer.ask({"type": "frame", "session": sid, "seq": 1, "slot": 0})  # slot 0 never marked ready
    assert (r["code"], r["session"], r["seq"]) == ("not_ready", sid, 1)
    assert frame_stats(peer, sid) == before and state.last_seq == 0
    fill(ring, layout, 0, frame_factory, 1)
    assert peer.ask({"type": "frame", "session": sid, "seq": 1, "slot": 0})["type"] == "done"
    after_one = frame_stats(peer, sid)
    assert after_one == {**before, "frames_in": 1, "done": 1}
    assert peer.ask({"type": "frame", "session": sid, "seq": 1, "slot": 1})["code"] == "bad_sequence"
    r = peer.ask({"type": "frame", "session": sid, "seq": 7, "slot": 1})  # ahead of its ready signal
    assert r["code"] == "not_ready"
    assert frame_stats(peer, sid) == after_one and state.last_seq == 1
    fill(ring, layout, 1, frame_factory, 2)
    assert peer.ask({"type": "frame", "session": sid, "seq": 2, "slot": 1})["type"] == "done"


def test_a_not_ready_frame_behind_a_dropped_one_gives_back_only_its_own_number(service, peer, frame_factory):
    opened = peer.ask(open_message(peer))
    sid, ring, layout = opened["session"], peer.rings[-1], reference_layout(W, H)
    fill(ring, layout, 0, frame_factory, 1)
    peer.send({"type": "frame", "session": sid, "seq": 1, "slot": 0})  # ready, but replaced before it runs
    peer.send({"type": "frame", "session": sid, "seq": 2, "slot": 1})  # not ready
    for _ in range(2):  # both queued before either runs, however slow the machine
        assert service.sock.poll(5000)
        service.handle(*service.sock.recv_multipart())
    got = peer.replies(2)
    assert [(m["type"], m["seq"], m.get("reason") or m.get("code")) for m in got] == [
        ("late", 1, "dropped"), ("error", 2, "not_ready")]
    assert service.sessions[sid].last_seq == 1  # the dropped frame's number stays used
    assert frame_stats(peer, sid) == {"frames_in": 1, "done": 0, "late": 0, "dropped": 1}
    fill(ring, layout, 1, frame_factory, 2)
    assert peer.ask({"type": "frame", "session": sid, "seq": 2, "slot": 1})["type"] == "done"
    assert peer.ask({"type": "frame", "session": sid, "seq": 1, "slot": 0})["code"] == "bad_sequence"


def test_a_multi_part_message_is_bad_message(service, peer):
    peer.sock.send_multipart([P.encode({"type": "stats", "req": 71}), b"more"])
    r = peer.replies(1)[0]
    assert (r["code"], r["req"]) == ("bad_message", 71) and "one ZeroMQ part" in r["message"]
    peer.sock.send_multipart([b"\xc1", b"", b"x"])
    r = peer.replies(1)[0]
    assert r["code"] == "bad_message" and "req" not in r
    alive(peer)


def test_an_oversized_message_under_the_sockets_limit_is_bad_message(service, peer):
    big = P.encode({"type": "stats", "req": 72, "pad": "x" * P.MAX_MESSAGE_BYTES})
    assert P.MAX_MESSAGE_BYTES < len(big) < service.sock.getsockopt(zmq.MAXMSGSIZE)
    r = peer.ask(big)
    assert r["code"] == "bad_message" and "exceeds" in r["message"]
    alive(peer)


# --- the catch-all -------------------------------------------------------------------------------

def _boom(*args, **kwargs):
    raise RuntimeError("injected fault")


def mappings(msg) -> int:
    """How many times this process maps the shared memory an open names (0 for other messages)."""
    if msg.get("type") != "open":
        return 0
    name = msg["ring"]["sync"]["handle"]
    with open("/proc/self/maps") as f:
        return sum(name in line for line in f)


# A fault injected into what each handler calls: no real input reaches one any more (the crash
# causes above are fixed), so this is the only way to show that the one catch-all covers them.
HANDLERS = [
    ("parse", lambda svc: (P, "parse_message"), {"type": "stats", "req": 81}, {"req": 81}),
    ("hello", lambda svc: (svc, "backends"), {"type": "hello", "protocol": 1, "req": 82}, {"req": 82}),
    ("stats", lambda svc: (svc, "service_stats"), {"type": "stats", "req": 83}, {"req": 83}),
    ("open", lambda svc: (svc.stylizer, "open_session"), None, {"req": 84}),
    ("prompt", lambda svc: (svc.stylizer, "set_prompt"), {"type": "prompt", "req": 85, "prompt": "noir"}, {"req": 85}),
    ("params", lambda svc: (svc.stylizer, "reseed"), {"type": "params", "req": 86, "params": {"seed": 3}}, {"req": 86}),
    ("close", lambda svc: (svc.stylizer, "close_session"), {"type": "close", "req": 87}, {"req": 87}),
    ("frame", lambda svc: (svc, "queue_frame"), {"type": "frame", "seq": 1, "slot": 0}, {"seq": 1}),
]


@pytest.mark.parametrize("name, target, msg, context", HANDLERS, ids=[h[0] for h in HANDLERS])
def test_a_failing_handler_answers_internal_and_the_service_keeps_serving(service, peer, monkeypatch, caplog,
                                                                           name, target, msg, context):
    opened = peer.ask(open_message(peer))
    sid = opened["session"]
    if msg is None:
        msg = open_message(peer, req=84)
    elif msg["type"] in ("prompt", "params", "close", "frame"):
        msg, context = {**msg, "session": sid}, {**context, "session": sid}
    before = state_of(service)
    maps = mappings(msg)
    obj, attr = target(service)
    if not hasattr(obj, attr):
        pytest.fail(f"{attr} is not there to fail")
    monkeypatch.setattr(obj, attr, _boom)
    with caplog.at_level(logging.ERROR, logger="streamstyle.service"):
        r = peer.ask(msg)
    assert r["type"] == "error" and r["code"] == "internal", r
    assert {k: r[k] for k in ("req", "session", "seq") if k in r} == context
    assert "injected fault" in caplog.text and "Traceback" in caplog.text
    monkeypatch.undo()
    if name != "close":
        after = state_of(service)
        assert after[0] == before[0] and after[1] == before[1]  # no session or page left behind
        assert mappings(msg) == maps  # nor a mapping of the refused ring
    alive(peer)


# --- the real client gets the service's answer at once -------------------------------------------

@pytest.fixture(scope="module")
def child_address(tmp_path_factory):
    from streamstyle.tools.launch import child_service

    log = tmp_path_factory.mktemp("svc") / "service.log"
    with child_service(["--preset", "tiny", "--no-prompts", "--quiet"], log_path=log) as address:
        yield address


def _open_huge(client, session):
    layout = reference_layout(64, 48)
    return client.request({"type": "open", "width": 100000, "height": 100000, "layout": layout.to_dict(),
                           "ring": session.ring.describe()})


@pytest.mark.parametrize("case, words", [
    ("steps=5", "steps must be in 1..4"),
    ("strength=2", "strength must be in 0.0..1.0"),
    ("unknown key", "unknown field(s) colour"),
    ("5000-character prompt", "at most 2000 characters"),
    ("100000x100000", "outside"),
])
def test_the_client_raises_the_services_error_at_once(child_address, case, words):
    """Before, these failed to parse, so the error carried no `req` and the client waited its
    whole timeout (10 s) and raised "no answer"."""
    from streamstyle.interop.client import Client, ServiceError

    with Client(child_address, timeout_s=10) as client:
        session = client.open_session(64, 48, reference_layout(64, 48))
        action = {
            "steps=5": lambda: client.open_session(64, 48, reference_layout(64, 48), params={"steps": 5}),
            "strength=2": lambda: session.set_params(strength=2),
            "unknown key": lambda: client.request({"type": "stats", "colour": 1}),
            "5000-character prompt": lambda: session.set_prompt("x" * 5000),
            "100000x100000": lambda: _open_huge(client, session),
        }[case]
        t0 = time.monotonic()
        with pytest.raises(ServiceError) as info:
            action()
        took = time.monotonic() - t0
        want = "bad_resolution" if case == "100000x100000" else "bad_field"
        assert info.value.code == want and words in info.value.message, info.value
        assert took < 2.0, f"{case}: the answer took {took:.1f} s"
        assert session.stats()["frames_in"] == 0  # the session and the connection go on
