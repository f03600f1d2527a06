"""Protocol messages are validated at the edge: every malformed message gets its typed code."""

import msgpack
import pytest

from streamstyle.interop import protocol as P


def frame(**kw):
    return P.encode({"type": "frame", "session": 1, "seq": 3, "slot": 0, **kw})


def shm_ring(**kw):
    region = {"handle": "psm_x", "offset": 0, "size": 100, "device": -1}
    ring = {"backend": "shm", "slots": 3, "inputs": [region] * 3, "outputs": [region] * 3,
            "sync": {"handle": "psm_x", "offset": 64}}
    ring.update(kw)
    return ring


def test_valid_messages_parse_into_typed_values():
    m = P.parse_request(frame(view=list(range(16)), jitter=[0.25, -0.5], params={"steps": 3, "strength": 0.3}))
    assert isinstance(m, P.Frame) and m.seq == 3 and m.view[15] == 15.0 and m.params == {"steps": 3, "strength": 0.3}
    o = P.parse_request(P.encode({"type": "open", "req": 7, "width": 64, "height": 32, "layout": {"channels": []},
                                  "ring": shm_ring(), "prompt": [["ink", 2], ["wash", 1]]}))
    assert isinstance(o, P.Open) and o.ring["slots"] == 3 and o.prompt == (("ink", 2.0), ("wash", 1.0))
    assert P.parse_request(P.encode({"type": "hello", "protocol": 1})).protocol == 1
    r = P.parse_request(P.encode({"type": "record", "req": 2, "session": 1, "on": True, "what": "inputs"}))
    assert isinstance(r, P.Record) and (r.on, r.what) == (True, "inputs")
    assert P.parse_request(P.encode({"type": "record", "req": 2, "session": 1, "on": False})).what is None


@pytest.mark.parametrize("data, code, words", [
    (b"\xc1\x00", "bad_message", "not a msgpack"),
    (P.encode([1, 2, 3]), "bad_message", "must be a map"),
    (msgpack.packb({1: "frame"}), "bad_message", "not a msgpack"),  # strict_map_key
    (P.encode({"kind": "frame"}), "bad_message", "string 'type'"),
    (P.encode({"type": "frame"}) + b"\x00", "bad_message", "trailing data"),
    (b"\x00" * (P.MAX_MESSAGE_BYTES + 1), "bad_message", "exceeds"),
    (P.encode({"type": "teleport"}), "unknown_type", "unknown message type 'teleport'"),
    (P.encode({"type": "frame", "session": 1, "seq": 3}), "bad_field", "missing field 'slot'"),
    (frame(colour=3), "bad_field", "unknown field\\(s\\) colour"),
    (frame(seq="3"), "bad_field", "frame.seq must be an integer"),
    (frame(seq=True), "bad_field", "frame.seq must be an integer"),
    (frame(slot=9), "bad_field", "frame.slot must be in 0..7"),
    (frame(view=[1.0] * 15), "bad_field", "list of 16 numbers"),
    (frame(dt=float("nan")), "bad_field", "finite number"),
    (frame(params={"steps": 5}), "bad_field", "steps must be in 1..4"),
    (frame(params={"guidance": 5}), "bad_field", "unknown parameter\\(s\\) guidance"),
    (P.encode({"type": "prompt", "req": 1, "session": 1, "prompt": [["a"]]}), "bad_field", "\\[text, weight\\]"),
    (P.encode({"type": "prompt", "req": 1, "session": 1, "prompt": 42}), "bad_field", "string or a list"),
    (P.encode({"type": "record", "req": 1, "session": 1, "on": True, "what": "gbuffers"}), "bad_field",
     "record.what must be one of output, inputs, both"),
    (P.encode({"type": "record", "req": 1, "session": 1, "on": True, "what": 1}), "bad_field", "record.what must be a string"),
])
def test_malformed_messages_get_their_codes(data, code, words):
    with pytest.raises(P.ProtocolError, match=words) as info:
        P.parse_request(data)
    assert info.value.code == code


@pytest.mark.parametrize("ring, words", [
    (shm_ring(slots=2), "slots must be in 3..8"),
    (shm_ring(backend="vulkan"), "backend must be one of shm, cuda-ipc"),
    (shm_ring(inputs=[{"handle": "x", "offset": 0, "size": 1}] * 2), "one region per slot"),
    (shm_ring(inputs=[{"handle": "x", "offset": -4, "size": 1}] * 3), "offset must be in 0"),
    (shm_ring(inputs=[{"handle": "x", "offset": 0, "size": 0}] * 3), "size must be in 1"),
    (shm_ring(inputs=[{"handle": "x", "offset": 0, "size": 1, "extra": 1}] * 3), "unknown field"),
    (shm_ring(sync={"handle": "x"}), "exactly handle and offset"),
    (shm_ring(backend="cuda-ipc"), "64 bytes of a CUDA IPC memory handle"),
    (shm_ring(output_format="bgra8"), "output_format must be one of"),
])
def test_malformed_rings_are_refused(ring, words):
    msg = {"type": "open", "req": 1, "width": 64, "height": 32, "layout": {}, "ring": ring}
    with pytest.raises(P.ProtocolError, match=words):
        P.parse_request(P.encode(msg))


def open_msg(**kw):
    layout = {"channels": [{"name": "depth", "format": "r32f", "offset": 0, "depth_range": [0.1, 100.0]}]}
    return {"type": "open", "req": 5, "width": 64, "height": 32, "layout": layout, "ring": shm_ring(),
            "params": {"steps": 2}, **kw}


@pytest.mark.parametrize("where", ["top", "layout", "channel", "ring", "region", "sync", "params"])
def test_bin_map_keys_at_any_level_are_bad_message_with_the_context(where):
    msg = open_msg()
    target = {"top": msg, "layout": msg["layout"], "channel": msg["layout"]["channels"][0], "ring": msg["ring"],
              "region": msg["ring"]["outputs"][2], "sync": msg["ring"]["sync"], "params": msg["params"]}[where]
    target[b"steps"] = 1
    with pytest.raises(P.ProtocolError, match="map keys must be strings") as info:
        P.parse_request(msgpack.packb(msg, use_bin_type=True))
    assert info.value.code == "bad_message" and info.value.context == {"req": 5}


@pytest.mark.parametrize("data, context", [
    (P.encode({"type": "stats", "req": 3}) + b"\xc1", {"req": 3}),  # not msgpack at all
    (P.encode({"type": "stats", "req": 3}) + b"\x91", {"req": 3}),  # the start of an array
    (P.encode({"type": "frame", "session": 2, "seq": 4, "slot": 0}) + P.encode({"type": "frame"}), {"session": 2, "seq": 4}),
    (P.encode([1, 2]) + b"\x00", {}),
])
def test_trailing_bytes_of_any_kind_are_refused(data, context):
    with pytest.raises(P.ProtocolError, match="trailing data") as info:
        P.parse_request(data)
    assert info.value.code == "bad_message" and info.value.context == context


@pytest.mark.parametrize("data", [b"\x91" * 5000 + b"\xc0", b"\x81\xa1a" * 3000 + b"\xc0", b"", b"\xdd\xff\xff\xff\xff"])
def test_deep_nesting_and_impossible_lengths_are_bad_message(data):
    with pytest.raises(P.ProtocolError) as info:
        P.parse_request(data)
    assert info.value.code == "bad_message"


@pytest.mark.parametrize("msg, context", [
    ({"type": "frame", "session": 2, "seq": 4, "slot": 99}, {"session": 2, "seq": 4}),
    ({"type": "frame", "session": True, "seq": -4, "slot": 0}, {"seq": -4}),  # a boolean is not an integer
    ({"type": "prompt", "req": 9, "session": 1, "prompt": 42}, {"req": 9, "session": 1}),
    ({"type": "nope", "req": 2 ** 64 - 1}, {"req": 2 ** 64 - 1}),
    ({"type": "stats", "req": 1.0}, {}),
])
def test_a_refused_message_carries_the_integers_that_identify_it(msg, context):
    with pytest.raises(P.ProtocolError) as info:
        P.parse_request(P.encode(msg))
    assert info.value.context == context


@pytest.mark.parametrize("weight, ok", [(1e-6, True), (1e6, True), (3, True), (1e-300, False), (1e300, False),
                                        (0.0, False), (-0.0, False), (-2.0, False), (float("inf"), False),
                                        (float("nan"), False), (False, False)])
def test_blend_weights_lie_in_the_contracts_range(weight, ok):
    data = P.encode({"type": "prompt", "req": 1, "session": 1, "prompt": [["ink", 1.0], ["wash", weight]]})
    if ok:
        assert P.parse_request(data).prompt[1] == ("wash", float(weight))
    else:
        with pytest.raises(P.ProtocolError, match="weight must be") as info:
            P.parse_request(data)
        assert info.value.code == "bad_field"
