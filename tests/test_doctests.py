"""The docstring examples of src/ run as tests (pytest --doctest-modules, configured in pyproject.toml)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the only files whose examples may be skipped: they need real weights or a real dataset (file -> why)
SKIP_ALLOWED = {
    "src/hoiclip_lightning/data/vcoco_official.py": "the official V-COCO files",
    "src/hoiclip_lightning/metrics/vcoco.py": "the official V-COCO files",
    "src/hoiclip_lightning/knowledge/verb_embeddings.py": "OpenAI's ViT-B/32 weights and a dataset",
    "src/hoiclip_lightning/knowledge/clip_pretrain.py": "minutes of training",
    "src/hoiclip_lightning/models/module.py": "a trained checkpoint",
}


def test_pytest_runs_the_docstring_examples_of_src():
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+)
    assert re.search(r'^addopts = ".*--doctest-modules.*"$', pyproject, re.M)
    assert re.search(r'^testpaths = \["tests", "src"\]$', pyproject, re.M)
    assert re.search(r"pytest .*\btests src\b", (ROOT / "Makefile").read_text())


def test_examples_are_skipped_only_where_they_need_real_weights_or_data():
    skipped = {str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py") if "doctest: +SKIP" in p.read_text()}
    assert skipped <= set(SKIP_ALLOWED), sorted(skipped - set(SKIP_ALLOWED))


def test_every_module_with_an_example_is_collected(tmp_path):
    """A module whose examples sit in docstrings is collected by --doctest-modules (no import error hides one)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "src"],
                         capture_output=True, text=True, cwd=ROOT).stdout
    collected = {line.split("::")[0] for line in out.splitlines() if "::" in line}
    with_examples = {str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py") if ">>> " in p.read_text()}
    assert with_examples <= collected, sorted(with_examples - collected)
