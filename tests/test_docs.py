"""The docs' examples are the code's truth."""

import json
import re
from pathlib import Path

from streamstyle.model.layout import GBufferLayout, reference_layout

ROOT = Path(__file__).resolve().parents[1]


def test_layout_example_in_the_docs_is_the_reference_layout():
    text = (ROOT / "docs" / "gbuffer-layout.md").read_text()
    block = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    documented = GBufferLayout.from_dict(json.loads(block))
    documented.validate(required=("depth", "motion"), width=64, height=32)
    assert documented.to_dict() == reference_layout(64, 32).to_dict()


def test_the_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Using the model from Python\n\n```python\n(.*?)```", text, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    rgb = scope["rgb"]
    assert rgb.shape == (3, 128, 256) and bool(((rgb >= 0) & (rgb <= 1)).all())
