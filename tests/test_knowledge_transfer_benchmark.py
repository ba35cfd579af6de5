"""benchmarks/knowledge_transfer.py and the sweep grid under it: the mean ± std table, the plan, a tiny run."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import pytest

from hoiclip_lightning.sweep import SweepRun, aggregate, grid_markdown, write_grid_summary

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("knowledge_transfer", ROOT / "benchmarks/knowledge_transfer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["knowledge_transfer"] = module
    spec.loader.exec_module(module)
    return module


def _run(variant, fraction, seed, full=None, rare=None, returncode=0, seconds=10.0):
    metrics = {k: v for k, v in (("test/mAP_full", full), ("test/mAP_rare", rare)) if v is not None}
    return SweepRun(fraction, Path(f"/x/{variant}/{fraction}/{seed}"), returncode, seconds, metrics, variant, seed)


def test_mean_and_std_over_seeds_on_a_hand_made_grid(tmp_path):
    runs = [_run("a", 0.5, 0, 1.0, 4.0), _run("a", 0.5, 1, 2.0, float("nan")), _run("a", 0.5, 2, 6.0, 2.0),
            _run("a", 0.5, 3, 50.0, 50.0, returncode=1),  # failed: left out of the statistics
            _run("b", 0.5, 0, 3.0), _run("a", 1.0, 0, 7.5, 1.5)]
    groups = aggregate(runs, ["test/mAP_full", "test/mAP_rare"])
    assert [(g.variant, g.fraction, g.runs, g.failed) for g in groups] == [("a", 0.5, 4, 1), ("b", 0.5, 1, 0),
                                                                          ("a", 1.0, 1, 0)]
    a = groups[0]
    assert a.mean["test/mAP_full"] == pytest.approx(3.0) and a.n["test/mAP_full"] == 3
    assert a.std["test/mAP_full"] == pytest.approx(math.sqrt(7.0))  # sample std: (4 + 1 + 9) / (3 - 1)
    assert a.mean["test/mAP_rare"] == pytest.approx(3.0) and a.std["test/mAP_rare"] == pytest.approx(math.sqrt(2.0))
    assert a.n["test/mAP_rare"] == 2 and a.seconds == pytest.approx(40.0)
    b = groups[1]
    assert b.mean["test/mAP_full"] == 3.0 and math.isnan(b.std["test/mAP_full"]) and b.n["test/mAP_rare"] == 0

    cols = [("test/mAP_full", "Full"), ("test/mAP_rare", "Rare")]
    lines = grid_markdown(runs, cols).splitlines()
    assert lines[0] == "| variant | fraction | seeds | Full | Rare | time (s) |"
    assert lines[2] == "| a | 0.5 | 3 (1 failed) | 3.00 ± 2.65 | 3.00 ± 1.41 | 40 |"
    assert lines[3] == "| b | 0.5 | 1 | 3.00 | - | 10 |"
    write_grid_summary(runs, tmp_path, cols)
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert list(rows[0]) == ["variant", "fraction", "runs", "failed", "test/mAP_full_mean", "test/mAP_full_std",
                             "test/mAP_full_n", "test/mAP_rare_mean", "test/mAP_rare_std", "test/mAP_rare_n",
                             "seconds"]
    assert (rows[0]["test/mAP_full_mean"], rows[0]["test/mAP_full_std"]) == ("3.0000", "2.6458")
    assert rows[1]["test/mAP_full_std"] == "" and len(rows) == 3
    every = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert len(every) == 6 and every[3]["returncode"] == "1" and every[3]["seconds"] == "10.0"
    assert (tmp_path / "map_vs_fraction.png").read_bytes()[:4] == b"\x89PNG"


def test_default_plan_and_budget_rule(bench):
    planned = bench.plan_runs(bench.DEFAULT_VARIANTS, [0.05, 0.25, 1.0], [0, 1, 2], ["rare_first", "unseen_verb"],
                              ["full", "random_clip"])
    # no_tfe is read from the full runs: 5 trained variants x 3 fractions x 3 seeds + 2 splits x 2 x 3
    assert len(planned) == 57 and "no_tfe" not in {p.name for p in planned}
    zs = [p for p in planned if p.name == "random_clip@unseen_verb"]
    assert len(zs) == 3 and zs[0].fraction == 1.0 and zs[0].overrides[-2:] == ["--data.init_args.zero_shot",
                                                                              "unseen_verb"]
    budget = bench.plan_budget(57)
    # 90 min less CLIP (9.5 + 0.5) and detector (9 + 0.5) pretraining, less 15 s per run, shared by 57 runs
    assert budget.train_seconds == pytest.approx((5400 - 60 * 19.5 - 57 * 15) / 57)
    assert (budget.max_steps, budget.val_every) == (280, 140)  # 59.2 s x 5 steps/s = 296, down to a multiple of 20
    no_detector = bench.plan_budget(57, detector_minutes=0)
    assert no_detector.train_seconds == pytest.approx((5400 - 600 - 57 * 15) / 57) and no_detector.max_steps == 340
    assert bench.plan_budget(57, max_steps=100).max_steps == 100
    with pytest.raises(ValueError, match="fewer than"):
        bench.plan_budget(400)


def test_tfe_columns_become_the_variant_columns(bench):
    run = SweepRun(1.0, Path("/x"), 0, 5.0, {"test/mAP_full": 1.0, "test/tfe/mAP_full": 2.0,
                                             "test/tfe/mAP_unseen": 3.0}, "full", 0)
    assert bench.as_variant(run, "full", "tfe").metrics == {"test/mAP_full": 2.0, "test/mAP_unseen": 3.0}
    plain = bench.as_variant(run, "no_tfe", "plain")
    assert plain.metrics == {"test/mAP_full": 1.0} and plain.variant == "no_tfe" and plain.seconds == 5.0


def test_genvlkt_variant_and_model_option(bench, tmp_path, capsys):
    """Issue 17 item 7: GEN-VLKT as a variant (its model file first, the shared overrides then apply to it)."""
    from hoiclip_lightning.sweep import fit_command

    assert "genvlkt" not in bench.DEFAULT_VARIANTS and set(bench.DEFAULT_VARIANTS) < set(bench.VARIANTS)
    planned = bench.plan_runs(["full", "genvlkt"], [0.25, 1.0], [0], [], [])
    assert [(p.name, p.fraction) for p in planned] == [("full", 0.25), ("full", 1.0), ("genvlkt", 0.25),
                                                      ("genvlkt", 1.0)]
    common = ["--model", str(bench.MODEL_CONFIG), "--model.init_args.net.clip_pretrained", "clip.pt"]
    cmd = fit_command("base.yaml", 0.25, tmp_path, [*common, *planned[2].overrides], seed=0)
    models = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--model"]
    assert models == [str(bench.MODEL_CONFIG), str(bench.GENVLKT_CONFIG)]  # the last one wins: GEN-VLKT
    assert cmd.index("--model.init_args.net.clip_pretrained") > cmd.index(str(bench.GENVLKT_CONFIG))
    assert bench.is_genvlkt(bench.GENVLKT_CONFIG) and not bench.is_genvlkt(bench.MODEL_CONFIG)
    # GEN-VLKT has no TFE: its runs are read from the plain columns, whatever the variant asks
    run = SweepRun(1.0, Path("/x"), 0, 5.0, {"test/mAP_full": 4.0}, "genvlkt", 0)
    assert bench.as_variant(run, "full", "tfe").metrics == {"test/mAP_full": 4.0}
    # switches GEN-VLKT lacks are refused before anything runs
    with pytest.raises(SystemExit) as info:
        bench.main(["--model", str(bench.GENVLKT_CONFIG), "--variants", "full", "no_verb_adapter", "--plan",
                    "--out", str(tmp_path / "o")])
    assert info.value.code == 2 and "no_verb_adapter" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_benchmark_writes_its_table_and_plot(bench, tmp_path, monkeypatch):
    """Two variants (pretrained and random CLIP), one fraction, one seed, 4 steps, on a tiny world."""
    from hoiclip_lightning.knowledge.clip_pretrain import pretrain_clip

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    clip = tmp_path / "clip.pt"
    pretrain_clip(str(clip), clip_model="hoiclip-tiny", synthetic=16, synthetic_val=4, synthetic_image_size=64,
                  max_steps=2, batch_size=8, num_threads=1, progress=False)
    out = tmp_path / "out"
    bench.main(["--clip", str(clip), "--clip-model", "hoiclip-tiny", "--data-root", str(tmp_path / "world"),
                "--world", "16", "6", "6", "--image-size", "96", "--out", str(out), "--variants", "full",
                "random_clip", "--fractions", "0.5", "--seeds", "3", "--zero-shot", "--max-steps", "4",
                "--detector", "none"])
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["variant"], r["fraction"], r["runs"], r["failed"]) for r in rows] == [("full", "0.5", "1", "0"),
                                                                                    ("random_clip", "0.5", "1", "0")]
    assert {"test/mAP_full_mean", "test/mAP_full_std", "test/mAP_rare_mean", "test/mAP_unseen_mean"} <= set(rows[0])
    assert all(r["test/mAP_full_mean"] != "" and float(r["seconds"]) > 0 for r in rows)
    assert (out / "map_vs_fraction.png").read_bytes()[:4] == b"\x89PNG"
    assert "| full | 0.5 | 1 |" in (out / "summary.md").read_text()
    full_log = (out / "full/frac_0.5/seed_3/log.txt").read_text()
    random_log = (out / "random_clip/frac_0.5/seed_3/log.txt").read_text()
    assert str(clip) in full_log and "--seed_everything 3" in full_log.splitlines()[0]
    assert "{\"clip_pretrained\": null}" in random_log.splitlines()[0] and "max_steps=4" in full_log
    assert "{\"detr_checkpoint\": null}" in full_log.splitlines()[0]  # --detector none: from scratch
    assert not list(out.rglob("*.ckpt"))  # checkpoints are deleted once a run is tested


def test_sweep_grid_options_are_checked_before_any_run(tmp_path, capsys):
    from hoiclip_lightning.cli import main

    config = str(ROOT / "tests/conf/hico_tiny.yaml")
    for argv, message in (
        (["--variants", '{"a/b": ""}'], "folder names"),
        (["--seeds", "[1, 1]"], "repeated seed"),
    ):
        with pytest.raises(SystemExit) as info:
            main(["sweep", "--config", config, "--fractions", "[0.5]", "--out", str(tmp_path / "o"), *argv])
        assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
