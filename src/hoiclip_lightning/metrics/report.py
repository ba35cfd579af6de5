"""Reporting metric results: the paper-style table and the per-class AP CSV.

Used by ``hoiclip test`` (through the CLI and :class:`~hoiclip_lightning.models.HOICLIPModule`) and by
``hoiclip evaluate``; plain Python, so it can be used without Lightning.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..vocabulary import HOIVocabulary

#: (metric key, column title) of the table, in column order; a column is shown when any row has its key
TABLE_COLUMNS = (("mAP_full", "Full"), ("mAP_rare", "Rare"), ("mAP_non_rare", "Non-rare"),
                 ("mAP_full_ko", "Full KO"), ("mAP_rare_ko", "Rare KO"), ("mAP_non_rare_ko", "Non-rare KO"),
                 ("mAP_unseen", "Unseen"), ("mAP_seen", "Seen"), ("mAP_unseen_ko", "Unseen KO"),
                 ("mAP_seen_ko", "Seen KO"), ("mAP_role_s1", "Role AP S1"), ("mAP_role_s2", "Role AP S2"))


def format_metric_table(metrics: Mapping[str, float], prefix: str = "test",
                        rows: Sequence[tuple[str, str]] | None = None, title: str | None = None) -> str:
    """A paper-style table from metric values keyed ``<row prefix><metric key>``.

    Columns: Full, Rare, Non-rare, then Known-Object, Seen/Unseen and V-COCO role AP when present.

    Args:
        metrics: e.g. ``{"test/mAP_full": 34.69, "test/tfe/mAP_full": 35.0}`` (percent).
        prefix: the split name; the default rows are ``HOICLIP`` (``<prefix>/``) and ``HOICLIP + TFE``
            (``<prefix>/tfe/``).
        rows: ``(row label, key prefix)`` pairs instead of the default rows.
        title: first line (default ``HOI detection mAP (<prefix> split)``).

    Returns:
        The table as text, or ``""`` when no row has any value.
    """
    if rows is None:
        rows = (("HOICLIP", f"{prefix}/"), ("HOICLIP + TFE", f"{prefix}/tfe/"))
    known = {key for key, _ in TABLE_COLUMNS}
    # any other metric of a row (a single name after the row prefix) gets a column under its own name,
    # so that the table shows every logged metric of the split once
    others = sorted({name[len(pre):] for name in metrics for _, pre in rows
                     if name.startswith(pre) and "/" not in name[len(pre):]} - known)
    columns = [*TABLE_COLUMNS, *((key, key) for key in others)]
    rows = [(label, pre) for label, pre in rows if any(pre + key in metrics for key, _ in columns)]
    if not rows:
        return ""
    width = max(14, *(len(label) for label, _ in rows))
    present = [(key, name) for key, name in columns if any(pre + key in metrics for _, pre in rows)]
    widths = [max(11, len(name)) for _, name in present]
    header = f"| {'model':<{width}} | " + " | ".join(
        f"{name:>{w}}" for (_, name), w in zip(present, widths, strict=True)) + " |"
    sep = "|" + "-" * (width + 2) + "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    lines = [title or f"HOI detection mAP ({prefix} split)", header, sep]
    for label, pre in rows:
        cells = [f"{metrics[pre + key]:>{w}.2f}" if pre + key in metrics else f"{'-':>{w}}"
                 for (key, _), w in zip(present, widths, strict=True)]
        lines.append(f"| {label:<{width}} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_per_class_ap(
    path: str | Path,
    vocabulary: HOIVocabulary,
    ap: Sequence[float],
    unseen_hois: Sequence[int] = (),
    train_counts: Sequence[int] | None = None,
    extra_columns: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Write one CSV row per HOI class: ``hoi_id, verb, object, prompt, train_instances, rare, unseen, ap``.

    Args:
        path: the CSV file (its folder is created).
        vocabulary: names, prompts and the rare set.
        ap: ``[C_hoi]`` AP in percent, NaN for classes without ground truth (written as an empty cell).
        unseen_hois: unseen classes of the zero-shot split in use.
        train_counts: ``[C_hoi]`` training instances per class (empty cells when ``None``).
        extra_columns: further per-class columns after ``ap`` (e.g. ``{"ap_ko": ...}``), same NaN rule.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = dict(extra_columns or {})
    columns = {"ap": ap, **extra}
    for name, values in columns.items():
        if len(values) != vocabulary.num_hois:
            raise ValueError(f"{name} has {len(values)} entries, the vocabulary {vocabulary.num_hois} HOI classes")
    rare, unseen = set(vocabulary.rare_hois), set(int(c) for c in unseen_hois)

    def cell(value: float) -> float | str:
        value = float(value)
        return "" if math.isnan(value) else value

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["hoi_id", "verb", "object", "prompt", "train_instances", "rare", "unseen", *columns])
        for c, (v, o) in enumerate(vocabulary.hois):
            n = int(train_counts[c]) if train_counts is not None else ""
            writer.writerow([c, vocabulary.verbs[v], vocabulary.objects[o], vocabulary.hoi_prompts[c], n,
                             int(c in rare), int(c in unseen), *(cell(values[c]) for values in columns.values())])
    return path
