"""The documentation site: a strict MkDocs build (broken links, anchors, nav, docstrings) and page contents.

`make test` runs this file, so CI fails on a documentation error as it does on a code error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API_MODULES = ["data", "models", "metrics", "vocabulary", "structures"]


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(ROOT / "src"))
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent, env=env, capture_output=True, text=True, timeout=300,
    )


def _load_mkdocs_yml(path: Path) -> dict:
    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml names Python objects (`!!python/name:...`); only the text is needed here
    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: suffix)
    return yaml.load(path.read_text(), Loader=Loader)


def _nav_files(nav) -> list[str]:
    out: list[str] = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        out.extend(_nav_files(value) if isinstance(value, list) else [value])
    return out


def test_mkdocs_build_strict(tmp_path):
    """`mkdocs build --strict` succeeds: every link, anchor, nav entry and API docstring resolves."""
    result = _mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    for module in API_MODULES:
        page = (tmp_path / "site" / "api" / module / "index.html").read_text()
        # the API page holds the rendered objects, not just the `::: identifier` line
        assert f'id="hoiclip_lightning.{module}.' in page, f"API page of hoiclip_lightning.{module} has no members"
    html = (tmp_path / "site" / "api" / "data" / "index.html").read_text()
    assert 'id="hoiclip_lightning.data.HOIDataModule"' in html


def test_strict_build_rejects_a_broken_link(tmp_path):
    """The site's validation settings turn a link to a missing page or anchor into a build failure."""
    config = _load_mkdocs_yml(ROOT / "mkdocs.yml")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the missing page](missing.md) and [a section](#nowhere).\n")
    small = {
        "site_name": "check",
        "docs_dir": "docs",
        "strict": True,
        "validation": config["validation"],
        "theme": {"name": "mkdocs"},  # no plugins: this checks the validation settings only
    }
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(small))
    result = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"a broken link was accepted:\n{output}"
    assert "missing.md" in output and "nowhere" in output


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    """Each docs/*.md page is reachable from the navigation, and the navigation names no missing page."""
    config = _load_mkdocs_yml(ROOT / "mkdocs.yml")
    nav = set(_nav_files(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert not pages - nav, f"pages missing from the nav of mkdocs.yml: {sorted(pages - nav)}"
    assert not nav - pages, f"nav entries without a page: {sorted(nav - pages)}"


def test_api_reference_pages_cover_the_public_modules():
    for module in API_MODULES:
        text = (DOCS / "api" / f"{module}.md").read_text()
        assert f"::: hoiclip_lightning.{module}" in text


def test_getting_started_has_the_two_readme_commands():
    """README's two set-up commands appear verbatim in the README and the getting-started page."""
    readme = (ROOT / "README.md").read_text()
    page = (DOCS / "getting-started.md").read_text()
    for command in ("make quickstart", "make test"):
        assert re.search(rf"^{command}\b", readme, re.M), f"README lost `{command}`"
        assert re.search(rf"^{command}\b", page, re.M), f"getting-started.md lost `{command}`"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^quickstart:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_reproducing_page_lists_every_experiment_config():
    """Each configs/experiments/*.yaml paper setting has its command on the reproducing page."""
    page = (DOCS / "reproducing.md").read_text()
    configs = sorted((ROOT / "configs" / "experiments").glob("*.yaml"))
    assert configs, "configs/experiments/ is empty"
    missing = [c.name for c in configs
               if c.name != "quickstart.yaml" and f"--config configs/experiments/{c.name}" not in page]
    assert not missing, f"docs/reproducing.md has no command for: {missing}"


@pytest.mark.parametrize("figure", ["34.69", "31.12", "35.74", "37.61", "22.64", "27.07", "28.44", "30.88",
                                    "25.53", "26.39", "16.20", "24.30", "63.50", "64.81"])
def test_reproducing_page_quotes_the_paper_figures(figure):
    assert figure in (DOCS / "reproducing.md").read_text()


def test_benchmarks_page_lists_every_script_with_a_command():
    """Each benchmarks/*.py script is on docs/benchmarks.md with the command that runs it."""
    page = (DOCS / "benchmarks.md").read_text()
    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
    assert scripts
    missing = [s for s in scripts if f"python benchmarks/{s}" not in page]
    assert not missing, f"docs/benchmarks.md has no command for: {missing}"
    assert "2 CPU cores" in page  # the machine the figures come from


def test_configuration_page_documents_every_argument():
    """Every constructor argument of the datamodule and the module, and every config-dataclass field, has a row."""
    import dataclasses
    import inspect

    from hoiclip_lightning.data import HOIDataModule
    from hoiclip_lightning.models import HOICLIPConfig, HOICLIPModule, LossConfig, OptimizerConfig, PostProcessConfig

    page = (DOCS / "configuration.md").read_text()
    names = {
        "HOIDataModule": list(inspect.signature(HOIDataModule).parameters),
        "HOICLIPModule": list(inspect.signature(HOICLIPModule).parameters),
    }
    for config in (HOICLIPConfig, LossConfig, OptimizerConfig, PostProcessConfig):
        names[config.__name__] = [f.name for f in dataclasses.fields(config)]
    missing = {owner: [n for n in args if f"`{n}`" not in page] for owner, args in names.items()}
    missing = {owner: args for owner, args in missing.items() if args}
    assert not missing, f"docs/configuration.md has no row for: {missing}"


def _generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_configuration_docs", ROOT / "tools/gen_configuration_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_page_is_what_the_generator_writes():
    """docs/configuration.md's tables and run summaries are those generated from the code and configs/ (defaults,
    docstrings, YAML files); after changing any of them run `python tools/gen_configuration_docs.py`."""
    gen = _generator()
    page = (DOCS / "configuration.md").read_text()
    assert gen.render(page) == page, "docs/configuration.md is stale: run `python tools/gen_configuration_docs.py`"
    # the quickstart as it is: its model and data files, epochs, checkpoints, and the new values they get
    runs = gen.run_block()
    quick = runs[: runs.index("**`configs/hico_det.yaml`**")]
    assert "`configs/model/knowledge_small.yaml`" in quick and "`configs/data/quickstart.yaml`" in quick
    assert "`max_epochs: 60`" in quick and "`check_val_every_n_epoch: 2`" in quick
    assert quick.count("`RunCheckpoint`") == 2 and "`every_n_train_steps: 200`" in quick


def test_configuration_generator_follows_the_code(tmp_path):
    """A changed default, a new field and a stale page are all seen (the comparison above can fail)."""
    import dataclasses

    gen = _generator()

    @dataclasses.dataclass
    class Example:
        """An example.

        Attributes:
            lr: learning rate.
            steps, warmup: step counts.
        """

        lr: float = 1e-4
        steps: int = 10
        warmup: tuple = (1, 2)

    assert gen.dataclass_table(Example).splitlines()[2:] == [
        "| `lr` | `1e-4` | learning rate. |", "| `steps`, `warmup` | `10`, `[1, 2]` | step counts. |"]
    Example.__doc__ = Example.__doc__.replace("            steps, warmup: step counts.\n", "")
    with pytest.raises(SystemExit, match=r"misses \['steps', 'warmup'\]"):
        gen.dataclass_table(Example)
    page = "intro\n<!-- generated:a -->\nold row\n<!-- /generated:a -->\nend\n"
    assert gen.render(page, {"a": "new row\n"}) == "intro\n<!-- generated:a -->\nnew row\n<!-- /generated:a -->\nend\n"
    with pytest.raises(SystemExit, match="generated blocks"):
        gen.render(page, {"a": "x\n", "b": "y\n"})
