"""Regenerate the generated parts of docs/configuration.md from the code and the YAML configs.

    python tools/gen_configuration_docs.py           # rewrite docs/configuration.md in place
    python tools/gen_configuration_docs.py --check   # exit 1 (and show the difference) when it is stale

The page is hand-written prose around blocks delimited by ``<!-- generated:NAME -->`` and
``<!-- /generated:NAME -->``; only the blocks are rewritten:

* ``config-files``: every YAML file under ``configs/``, with the first sentence of its header comment;
* ``HOIDataModule``, ``HOICLIPModule``, ``HOICLIPConfig``, ``WeightSources``, ``LossConfig``,
  ``PostProcessConfig``, ``OptimizerConfig``: one row per constructor argument or dataclass field, in
  signature order, with the default from the code and the meaning from the docstring's ``Args:`` /
  ``Attributes:`` entry (entries that name several arguments, ``a, b: ...``, give one row);
* ``runs``: what each run config sets (seed, trainer keys, logger, callbacks, model and data files and
  their values), read from the YAML files as they are.

tests/test_docs.py runs this generator on the committed page and fails when the output differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
CONFIGS = ROOT / "configs"
# the run configs described in the `runs` block, in this order
RUN_CONFIGS = ["quickstart.yaml", "hico_det.yaml", "detector_pretrain.yaml", "predict.yaml"]
_BLOCK = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


# ----------------------------------------------------------------------------------------- formatting
def fmt(value: Any) -> str:
    """A default as YAML would spell it (long sequences abbreviated)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            mantissa, exponent = f"{value:e}".split("e")
            mantissa = mantissa.rstrip("0").rstrip(".")
            return f"{mantissa}e{int(exponent)}"
        return repr(value)
    if isinstance(value, (list, tuple)):
        items = [fmt(v) for v in value]
        if len(items) > 6:
            items = [items[0], items[1], "...", items[-1]]
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    if dataclasses.is_dataclass(value):
        return f"{type(value).__name__}()"
    return str(value)


def markdown(text: str) -> str:
    """Docstring markup (reST roles, double backticks) as Markdown for a table cell."""
    text = re.sub(r":(?:class|func|meth|mod|data|attr|exc):`~?([\w.]+)`",
                  lambda m: f"`{m.group(1).rsplit('.', 1)[-1] if '~' in m.group(0) else m.group(1)}`", text)
    text = text.replace("``", "`").replace("|", "\\|")
    # outside code spans, <name> would be read as an HTML tag
    spans = text.split("`")
    return "`".join(s.replace("<", "&lt;").replace(">", "&gt;") if i % 2 == 0 else s for i, s in enumerate(spans))


# ----------------------------------------------------------------------------------------- docstrings
def docstring_entries(obj: Any, section: str) -> list[tuple[list[str], str]]:
    """``[(names, description)]`` of a Google-style ``Args:`` or ``Attributes:`` section."""
    lines = inspect.getdoc(obj).splitlines()
    try:
        start = lines.index(f"{section}:")
    except ValueError as err:
        raise SystemExit(f"{obj.__name__}: its docstring has no '{section}:' section") from err
    entries: list[tuple[list[str], str]] = []
    for line in lines[start + 1:]:
        if line and not line.startswith(" "):
            break  # the next section or paragraph
        if not line.strip():
            continue
        match = re.match(r"^    ([\w, ]+?):\s(.*)$", line) if not line.startswith("     ") else None
        if match:
            entries.append(([n.strip() for n in match.group(1).split(",")], match.group(2).strip()))
        elif entries:
            entries[-1] = (entries[-1][0], f"{entries[-1][1]} {line.strip()}")
    return entries


def argument_table(obj: Any, names: list[str], defaults: dict[str, Any], section: str, header: str) -> str:
    entries = docstring_entries(obj, section)
    described = [n for names_, _ in entries for n in names_]
    missing = [n for n in names if n not in described]
    unknown = [n for n in described if n not in names]
    if missing or unknown:
        raise SystemExit(f"{obj.__name__}: docstring '{section}:' misses {missing}, names unknown {unknown}")
    rows = []
    for names_, text in sorted(entries, key=lambda e: names.index(e[0][0])):
        cells = ", ".join(f"`{n}`" for n in names_)
        default = ", ".join(f"`{defaults[n]}`" for n in names_)
        rows.append(f"| {cells} | {default} | {markdown(text)} |")
    return f"| {header} | default | meaning |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def signature_table(cls: type) -> str:
    params = [p for p in inspect.signature(cls).parameters.values() if p.name != "self"]
    defaults = {}
    for p in params:
        annotation = str(p.annotation)
        if p.default is inspect.Parameter.empty:
            defaults[p.name] = "required"
        elif p.default is None and annotation.split(" |")[0] in ("HOICLIPConfig", "WeightSources", "LossConfig",
                                                                 "PostProcessConfig", "OptimizerConfig"):
            defaults[p.name] = annotation.split(" |")[0] + "()"  # None means the dataclass's defaults
        else:
            defaults[p.name] = fmt(p.default)
    return argument_table(cls, [p.name for p in params], defaults, "Args", "argument")


def dataclass_table(cls: type) -> str:
    fields = dataclasses.fields(cls)
    defaults = {f.name: fmt(f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in fields}
    return argument_table(cls, [f.name for f in fields], defaults, "Attributes", "field")


# ----------------------------------------------------------------------------------------- configs
def header_sentence(path: Path) -> str:
    """First sentence of a YAML file's leading comment block (up to a full stop, or a line ending in ':')."""
    sentence = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        line = line.lstrip("#").strip()
        stop = re.search(r"\.(\s|$)", line)
        if stop or line.endswith(":"):
            sentence.append(line[: stop.start() + 1] if stop else line[:-1])
            break
        sentence.append(line)
    return " ".join(sentence)


def config_files_block() -> str:
    rows = [f"| `{p.relative_to(ROOT).as_posix()}` | {markdown(header_sentence(p))} |"
            for p in sorted(CONFIGS.rglob("*.yaml"), key=lambda p: (len(p.relative_to(CONFIGS).parts), p))]
    return "| file | what it is |\n|---|---|\n" + "\n".join(rows) + "\n"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _component(spec: Any, base: Path) -> tuple[str | None, dict]:
    """``(file, init_args)`` of a model/data section given inline or as a file path."""
    if isinstance(spec, str):
        path = (base / spec).resolve()
        return path.relative_to(ROOT).as_posix(), _load(path).get("init_args", {})
    return None, (spec or {}).get("init_args", {})


def _flat(values: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append(f"`{prefix}{key}: {fmt(value)}`")
    return out


def _class(spec: Any) -> str:
    if isinstance(spec, str):
        return f"`{spec.rsplit('.', 1)[-1]}`"
    name = spec["class_path"].rsplit(".", 1)[-1]
    args = spec.get("init_args") or {}
    return f"`{name}`" + (f" ({', '.join(_flat(args))})" if args else "")


def run_block() -> str:
    parts = []
    for name in RUN_CONFIGS:
        path = CONFIGS / name
        config = _load(path)
        included = config.pop("config", None)
        trainer = dict(config.get("trainer") or {})
        if included:  # `config: trainer_paper.yaml` loads a file of top-level keys first
            base = _load(path.parent / included)
            trainer = {**(base.get("trainer") or {}), **trainer}
        lines = [f"**`configs/{name}`**: {markdown(header_sentence(path))}"
                 + (f" The trainer comes from `configs/{included}`." if included else ""), ""]
        top = [f"`{k}: {fmt(v)}`" for k, v in config.items() if k not in ("trainer", "model", "data")]
        if top:
            lines.append("- top level: " + ", ".join(top))
        plain = {k: v for k, v in trainer.items() if k not in ("logger", "callbacks")}
        if plain:
            lines.append("- trainer: " + ", ".join(_flat(plain)))
        if "logger" in trainer:
            lines.append("- logger: " + (_class(trainer["logger"]) if trainer["logger"] else "`false`"))
        if trainer.get("callbacks"):
            lines.append("- callbacks: " + "; ".join(_class(c) for c in trainer["callbacks"]))
        for section in ("model", "data"):
            if section in config:
                file, args = _component(config[section], path.parent)
                where = f"`{file}`" if file else "inline"
                lines.append(f"- {section} ({where}): " + ", ".join(_flat(args)))
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------- the page
def blocks() -> dict[str, str]:
    sys.path.insert(0, str(ROOT / "src"))
    from hoiclip_lightning.data import HOIDataModule
    from hoiclip_lightning.models import (
        HOICLIPConfig,
        HOICLIPModule,
        LossConfig,
        OptimizerConfig,
        PostProcessConfig,
        WeightSources,
    )

    return {
        "config-files": config_files_block(),
        "HOIDataModule": signature_table(HOIDataModule),
        "HOICLIPModule": signature_table(HOICLIPModule),
        "HOICLIPConfig": dataclass_table(HOICLIPConfig),
        "WeightSources": dataclass_table(WeightSources),
        "LossConfig": dataclass_table(LossConfig),
        "PostProcessConfig": dataclass_table(PostProcessConfig),
        "OptimizerConfig": dataclass_table(OptimizerConfig),
        "runs": run_block(),
    }


def render(page: str, generated: dict[str, str] | None = None) -> str:
    """``page`` with every generated block rewritten (every block of :func:`blocks` must be present)."""
    generated = blocks() if generated is None else generated
    found = [m.group("name") for m in _BLOCK.finditer(page)]
    if sorted(found) != sorted(generated):
        raise SystemExit(f"{PAGE}: generated blocks {sorted(found)}, expected {sorted(generated)}")
    return _BLOCK.sub(lambda m: m.group(1) + generated[m.group("name")] + m.group(4), page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 when the page is stale")
    args = parser.parse_args(argv)
    page = PAGE.read_text()
    new = render(page)
    if args.check:
        if new != page:
            sys.stdout.writelines(difflib.unified_diff(page.splitlines(True), new.splitlines(True),
                                                       "docs/configuration.md", "generated"))
            return 1
        return 0
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
