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
