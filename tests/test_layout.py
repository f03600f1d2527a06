import pytest
import torch

from streamstyle.model.errors import InputError, LayoutError
from streamstyle.model.layout import Channel, GBufferLayout, reference_layout


def test_reference_layout_views_a_slot_without_copying(gen):
    w, h = 40, 24
    layout = reference_layout(w, h)
    slot = torch.zeros(layout.slot_bytes(w, h), dtype=torch.uint8)
    planes = layout.view(slot, w, h)
    assert planes["color"].shape == (h, w, 4) and planes["color"].dtype == torch.float16
    assert planes["roughness"].data_ptr() == planes["metallic"].data_ptr()  # one shared RG8 plane
    value = torch.rand(h, w, 1, generator=gen) + 0.5
    planes["depth"].copy_(value)
    # The bytes in the slot changed, at the depth plane's offset.
    again = layout.view(slot, w, h)["depth"]
    assert torch.equal(again, value)
    start = layout["depth"].offset
    assert torch.equal(slot[start:start + 4 * w * h].view(torch.float32).view(h, w, 1), value)


def test_row_pitch_padding_is_respected(gen):
    w, h = 10, 6
    layout = GBufferLayout((Channel("depth", "r32f", offset=0, row_pitch=64),))
    slot = torch.zeros(64 * h, dtype=torch.uint8)
    plane = layout.view(slot, w, h)["depth"]
    plane[2, 3, 0] = 7.0
    assert slot.view(torch.float32)[2 * 16 + 3] == 7.0


@pytest.mark.parametrize("channels, words", [
    ((Channel("color", "rgba16f"),), "missing channels the model needs: depth, motion"),
    ((Channel("depth", "r32f"), Channel("motion", "rg16f", offset=1024), Channel("depth", "r32f", offset=4096)), "appears twice"),
    ((Channel("depth", "r24f"), Channel("motion", "rg16f", offset=1024)), "unknown format 'r24f'"),
    ((Channel("depth", "r32f"), Channel("motion", "r16f", offset=1024)), "needs 2 components"),
    ((Channel("depth", "r32f"), Channel("motion", "rg16f", offset=1024, encoding="furlongs")), "encoding 'furlongs'"),
    ((Channel("depth", "r32f", depth_range=(5.0, 1.0)), Channel("motion", "rg16f", offset=1024)), "0 < near < far"),
    ((Channel("depth", "r32f"), Channel("motion", "rg16f", offset=2)), "overlap"),
    ((Channel("depth", "r32f"), Channel("motion", "rg16f", offset=1023)), "not aligned"),
    ((Channel("depth", "r32f"), Channel("gloss", "r8_unorm", offset=1024)), "unknown channel name"),
])
def test_malformed_layouts_are_rejected_with_the_reason(channels, words):
    with pytest.raises(LayoutError, match=words):
        GBufferLayout(channels).validate(required=("depth", "motion"), width=16, height=16)


def test_layout_must_fit_the_slot():
    layout = reference_layout(32, 16)
    need = layout.slot_bytes(32, 16)
    layout.validate(width=32, height=16, slot_bytes=need)
    with pytest.raises(LayoutError, match="past the slot"):
        layout.validate(width=32, height=16, slot_bytes=need - 1)
    with pytest.raises(InputError, match="needs"):
        layout.view(torch.zeros(need - 1, dtype=torch.uint8), 32, 16)


def test_layout_round_trips_through_plain_data_and_rejects_garbage():
    layout = reference_layout(64, 32)
    assert GBufferLayout.from_dict(layout.to_dict()) == GBufferLayout(tuple(
        Channel(**{**c.__dict__, "encoding": c.resolved_encoding}) for c in layout.channels))
    for bad, words in [
        ({"channels": "color"}, "'channels' list"),
        ({"channels": [{"name": "depth", "format": "r32f", "size": 3}]}, "unknown fields size"),
        ({"channels": [{"name": "depth", "format": "r32f", "offset": "0"}]}, "offset must be an integer"),
        ({"channels": [{"name": 5, "format": "r32f"}]}, "must be strings"),
        ({"channels": [{"name": "depth", "format": "r32f", "depth_range": [1]}]}, "two numbers"),
    ]:
        with pytest.raises(LayoutError, match=words):
            GBufferLayout.from_dict(bad)


def test_motion_encodings_scale_to_pixels():
    def layout(enc):
        return GBufferLayout((Channel("motion", "rg16f", encoding=enc),))
    assert layout("pixels").motion_scale(640, 360) == (1.0, 1.0)
    assert layout("uv").motion_scale(640, 360) == (640.0, 360.0)
    assert layout("ndc").motion_scale(640, 360) == (320.0, -180.0)


# --- the layout as contract data: numpy views, one table ------------------------------------

import numpy as np  # noqa: E402

from streamstyle.interop import layout as contract  # noqa: E402
from streamstyle.model import layout as model_layout  # noqa: E402


def test_the_model_reuses_the_contracts_layout_and_tables():
    assert model_layout.GBufferLayout is contract.GBufferLayout and model_layout.Channel is contract.Channel
    assert model_layout.SEMANTIC_CHANNELS is contract.SEMANTIC_CHANNELS
    assert model_layout.ENCODINGS is contract.ENCODINGS
    assert set(model_layout.FORMATS) == set(contract.FORMATS)
    for name, (dtype, comps, unorm) in model_layout.FORMATS.items():
        f = contract.FORMATS[name]
        assert (comps, unorm) == (f.components, f.unorm) and dtype.itemsize == f.component_bytes


def test_numpy_views_of_a_slot_are_the_bytes_torch_sees(gen):
    w, h = 37, 23  # odd sizes: planes not multiples of anything
    layout = contract.reference_layout(w, h)
    buf = bytearray(layout.slot_bytes(w, h))
    planes = layout.view_numpy(buf, w, h)
    assert planes["color"].shape == (h, w, 4) and planes["color"].dtype == np.float16
    assert planes["ids"].dtype == np.uint32 and planes["albedo"].dtype == np.uint8
    assert np.shares_memory(planes["roughness"], planes["metallic"])
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen)))
    values = {name: rng.random(p.shape).astype(p.dtype) if p.dtype.kind == "f" else
              rng.integers(0, 200, p.shape).astype(p.dtype) for name, p in planes.items()}
    for name, v in values.items():
        planes[name][...] = v
    tplanes = layout.view(torch.frombuffer(buf, dtype=torch.uint8), w, h)
    for name, v in values.items():
        if name == "roughness":  # shares its plane with metallic, written after it
            continue
        assert np.array_equal(tplanes[name].numpy().view(v.dtype) if name == "ids" else tplanes[name].numpy(), v), name


def test_numpy_views_respect_row_pitch_and_refuse_a_short_or_wrong_buffer():
    w, h = 10, 6
    layout = contract.GBufferLayout((contract.Channel("depth", "r32f", offset=0, row_pitch=64),))
    buf = np.zeros(64 * h, dtype=np.uint8)
    layout.view_numpy(buf, w, h)["depth"][2, 3, 0] = 7.0
    assert buf.view("<f4")[2 * 16 + 3] == 7.0
    with pytest.raises(InputError, match="needs"):
        layout.view_numpy(buf[:layout.slot_bytes(w, h) - 1], w, h)
    with pytest.raises(InputError, match="1-D uint8"):
        layout.view_numpy(buf.view(np.uint16), w, h)


def test_an_empty_layout_is_refused_not_a_crash():
    with pytest.raises(LayoutError, match="no channels"):
        contract.GBufferLayout.from_dict({"channels": []})


def test_output_views_and_sizes_come_from_the_contract():
    from streamstyle.interop.limits import OUTPUT_BYTES_PER_PIXEL

    w, h = 5, 3
    for fmt, dtype in (("rgba8", np.uint8), ("rgba16f", np.float16)):
        raw = np.zeros(contract.output_bytes(w, h, fmt) + 7, dtype=np.uint8)
        px = contract.output_view_numpy(raw, w, h, fmt)
        assert px.shape == (h, w, 4) and px.dtype == dtype and np.shares_memory(px, raw)
        assert contract.output_bytes(w, h, fmt) == w * h * OUTPUT_BYTES_PER_PIXEL[fmt]


def test_the_shm_ring_is_numpy_on_the_engine_side_and_torch_on_the_service_side(gen):
    from streamstyle.interop import create_ring, import_ring

    w, h = 24, 16
    layout = contract.reference_layout(w, h)
    ring = create_ring("shm", 3, layout.slot_bytes(w, h), contract.output_bytes(w, h, "rgba8"))
    try:
        assert isinstance(ring.input(1), np.ndarray) and isinstance(ring.output(1), np.ndarray)
        depth = torch.rand(h, w, 1, generator=gen).numpy() + 1
        layout.view_numpy(ring.input(1), w, h)["depth"][...] = depth
        service = import_ring(ring.describe(), layout.slot_bytes(w, h), contract.output_bytes(w, h, "rgba8"))
        try:
            seen = layout.view(service.input(1), w, h)["depth"]
            assert isinstance(seen, torch.Tensor) and np.array_equal(seen.numpy(), depth)
            service.output(1)[:4] = torch.tensor([1, 2, 3, 4], dtype=torch.uint8)
            assert ring.output(1)[:4].tolist() == [1, 2, 3, 4]
        finally:
            del seen
            service.close()
    finally:
        ring.close()


@pytest.mark.parametrize("offset, words", [(0, "at or after byte 64"), (32, "at or after byte 64"),
                                           (68, "8-byte aligned"), (1 << 40, "inside its segment")])
def test_the_shm_signal_block_must_lie_past_the_header(offset, words):
    from streamstyle.interop import RingError, create_ring, import_ring

    ring = create_ring("shm", 3, 64, 64)
    try:
        desc = ring.describe()
        desc["sync"] = {**desc["sync"], "offset": offset}
        with pytest.raises(RingError, match=words):
            import_ring(desc, 64, 64)
        bad = {**desc, "sync": {**desc["sync"], "handle": "/" + desc["sync"]["handle"]}}
        with pytest.raises(RingError, match="not valid"):
            import_ring(bad, 64, 64)
    finally:
        ring.close()


def test_unknown_top_level_layout_keys_are_refused():
    data = contract.reference_layout(16, 8).to_dict()
    with pytest.raises(LayoutError, match="unknown key.*colour_space"):
        contract.GBufferLayout.from_dict({**data, "colour_space": "srgb"})
    assert contract.GBufferLayout.from_dict(data) == contract.reference_layout(16, 8)


def test_the_optional_surface_channel():
    """`surface` (object-space position) takes a float format only; the reference slot carries it
    on request, after the other planes, and a frame with NaN in it is refused like any channel."""
    lay = reference_layout(16, 8, surface=True)
    assert lay["surface"].format == "rgba16f" and lay.slot_bytes(16, 8) > reference_layout(16, 8).slot_bytes(16, 8)
    plain = reference_layout(16, 8)
    for fmt in ("rgba8_unorm", "r32_uint"):
        bad = GBufferLayout(plain.channels + (Channel("surface", fmt, offset=1 << 20),))
        with pytest.raises(LayoutError, match="surface.*does not suit"):
            bad.validate()


def test_a_frame_with_nan_in_its_surface_channel_is_refused(tiny_model, frame_factory):
    from streamstyle.model.frame import FrameParams
    from streamstyle.model.stylizer import Stylizer

    lay = reference_layout(32, 16, surface=True)
    sty = Stylizer(tiny_model)
    s = sty.open_session(32, 16, lay)
    frame = frame_factory(32, 16, lay)
    sty.step(s, frame, FrameParams(steps=1))
    before = sty.cache.read(s.id).clone()
    frame["surface"] = frame["surface"].clone()
    frame["surface"][3, 4, 0] = float("nan")
    with pytest.raises(InputError, match="NaN or infinite values in: surface"):
        sty.step(s, frame, FrameParams(steps=1))
    assert torch.equal(sty.cache.read(s.id), before)


def test_a_layout_remembers_its_hash_and_sizes_but_never_another_process_s():
    """`slot_bytes` and the hash are remembered per layout (they run on every frame); a layout
    pickled in another process (its strings hash with another seed) arrives without them and
    still finds its entry in a dict keyed by an equal layout built here."""
    import pickle
    import subprocess
    import sys

    layout = reference_layout(64, 32)
    for w, h in [(64, 32), (1920, 1080), (64, 32), (37, 21)]:
        assert layout.slot_bytes(w, h) == max(ch.plane_end(w, h) for ch in layout.channels)
    graphs = {(layout, 64, 32): "graph"}
    code = ("import pickle, sys; from streamstyle.interop.layout import reference_layout; "
            "l = reference_layout(64, 32); hash(l); l.slot_bytes(64, 32); sys.stdout.buffer.write(pickle.dumps(l))")
    blob = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                          env={**__import__("os").environ, "PYTHONHASHSEED": "12345"}).stdout
    other = pickle.loads(blob)
    assert "_hash" not in other.__dict__ and "_slot_bytes" not in other.__dict__
    assert other == layout and graphs[(other, 64, 32)] == "graph"
