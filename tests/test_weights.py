import pickle

import pytest
import torch

from streamstyle.model.config import preset
from streamstyle.model.errors import CheckpointError
from streamstyle.model.network import StreamStyleModel
from streamstyle.model.weights import load_weights, read_config, save_weights


def test_save_and_load_round_trip(tmp_path, tiny_model):
    folder = save_weights(tiny_model, tmp_path / "ckpt")
    loaded = load_weights(folder)
    assert loaded.config == tiny_model.config
    for (k, a), (_, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    # The safetensors file alone carries its config.
    (folder / "config.json").unlink()
    alone = load_weights(folder / "model.safetensors")
    assert alone.config == tiny_model.config
    assert read_config(folder / "model.safetensors") == tiny_model.config


def test_pickle_files_are_refused_before_reading(tmp_path, tiny_model):
    pt = tmp_path / "model.pt"
    torch.save(tiny_model.state_dict(), pt)
    with pytest.raises(CheckpointError, match="pickle-based checkpoint"):
        load_weights(pt)
    raw = tmp_path / "weights.safetensors"  # a pickle under an innocent name
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="pickle-based"):
        load_weights(raw)
    folder = tmp_path / "old"
    folder.mkdir()
    torch.save({}, folder / "model.ckpt")
    with pytest.raises(CheckpointError, match="pickle-based"):
        load_weights(folder)


def test_config_that_does_not_match_the_tensors_is_named(tmp_path, tiny_model):
    folder = save_weights(tiny_model, tmp_path / "ckpt")
    wider = preset("tiny").__class__(**{**preset("tiny").__dict__, "width": 48, "heads": 2})
    (folder / "config.json").write_text(wider.to_json())
    with pytest.raises(CheckpointError, match=r"shape mismatches: .*checkpoint \(32.*vs config \(48"):
        load_weights(folder)
    deeper = preset("tiny").__class__(**{**preset("tiny").__dict__, "depth": 3})
    (folder / "config.json").write_text(deeper.to_json())
    with pytest.raises(CheckpointError, match=r"missing tensors: dit\.blocks\.2\."):
        load_weights(folder)


def test_truncated_or_garbage_files_are_refused(tmp_path, tiny_model):
    folder = save_weights(tiny_model, tmp_path / "ckpt")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(folder)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_weights(tmp_path / "nowhere.safetensors")
    (folder / "config.json").write_text("{not json")
    (folder / "model.safetensors").write_bytes(data)
    with pytest.raises(CheckpointError, match="config is invalid"):
        load_weights(folder)


def test_loaded_model_computes_the_same_function(tmp_path, gen):
    model = StreamStyleModel(preset("tiny")).eval()
    loaded = load_weights(save_weights(model, tmp_path / "m"))
    x = torch.randn(1, 3, 16, 16, generator=gen)
    guide = torch.randn(1, 10, 64, 64, generator=gen)
    hist, mask = torch.rand(1, 3, 64, 64, generator=gen), (torch.rand(1, 1, 64, 64, generator=gen) > 0.5).float()
    ids, surface = torch.randint(0, 40, (1, 64, 64), generator=gen), torch.randn(1, 64, 64, 3, generator=gen)
    pooled = torch.randn(1, model.config.text_dim, generator=gen)
    args = (x, guide, hist, mask, ids, surface, pooled, 64, 64)
    assert torch.equal(model.refiner(*args), loaded.refiner(*args))


def test_an_older_checkpoint_starts_a_run_with_a_fresh_refiner(tmp_path):
    """A version-1 checkpoint (before the refiner) loads only partially, by request: its DiT
    tensors are taken, the refiner starts fresh and is listed, and a plain load refuses it."""
    import json

    from safetensors.torch import save_file

    from streamstyle.model.errors import CheckpointError

    model = StreamStyleModel(preset("tiny"))
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("refiner.")}
    old["decoder.conv.weight"] = torch.zeros(8, 13, 3, 3)
    folder = tmp_path / "v1"
    folder.mkdir()
    save_file(old, str(folder / "model.safetensors"))
    cfg = json.loads(model.config.to_json())
    cfg["config_version"] = 1
    for key in ("refiner_width", "id_features", "surface_features"):
        cfg.pop(key)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing tensors: refiner"):
        load_weights(folder)
    loaded = load_weights(folder, partial=True)
    assert loaded.partial_load["ignored"] == ["decoder.conv.weight"]
    assert all(k.startswith("refiner.") for k in loaded.partial_load["missing"]) and loaded.partial_load["missing"]
    dit = {k: v for k, v in model.state_dict().items() if k.startswith("dit.")}
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in dit.items())


def test_a_safetensors_header_whose_length_looks_like_a_pickle_still_loads(tmp_path, tiny_model):
    """The file opens with the header's length: when its first byte is 0x80 (a pickle's first
    byte) or its first two spell "PK" (a zip's), the file is still safetensors and loads."""
    import json
    import struct

    folder = save_weights(tiny_model, tmp_path / "ckpt")
    data = (folder / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    for low in (0x80, 0x4B50):
        text = json.dumps(header).encode()
        width = 256 if low < 256 else 65536
        pad = (low - len(text)) % width
        text = text[:-1] + b" " * pad + text[-1:]  # spaces before the closing brace
        assert len(text) % width == low
        path = tmp_path / f"odd-{low:x}.safetensors"
        path.write_bytes(struct.pack("<Q", len(text)) + text + body)
        loaded = load_weights(path)
        for k, v in tiny_model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k


def test_config_changes_at_load_build_the_changed_model_or_say_why_not(tiny_model, tmp_path):
    """`load_weights(changes=...)`: with `partial`, a deeper refiner than the checkpoint's takes its
    tensors and leaves the new pass fresh; without `partial` the new pass's tensors are missing and
    the load is refused; a change the config refuses is a CheckpointError naming it."""
    save_weights(tiny_model, tmp_path / "w")
    grown = load_weights(tmp_path / "w", partial=True, changes={"refiner_depth": 2})
    assert len(grown.refiner.middle) == 2
    assert sorted({k.split(".")[2] for k in grown.partial_load["missing"]}) == ["0", "1"]
    assert torch.equal(grown.refiner.conv1.weight, tiny_model.refiner.conv1.weight)
    with pytest.raises(CheckpointError, match="missing tensors: refiner.middle"):
        load_weights(tmp_path / "w", changes={"refiner_depth": 1})
    with pytest.raises(CheckpointError, match="the changed config is invalid: .*refiner_depth"):
        load_weights(tmp_path / "w", partial=True, changes={"refiner_depth": -1})
    with pytest.raises(CheckpointError, match="the changed config is invalid"):
        load_weights(tmp_path / "w", partial=True, changes={"no_such_field": 1})
