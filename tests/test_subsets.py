"""Low-data subsets, zero-shot filtering and class counts (subsets.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hoiclip_lightning import ConfigurationError, HOIVocabulary
from hoiclip_lightning.data import (
    count_hoi_instances,
    load_annotations,
    rare_hoi_ids,
    subsample_indices,
    subsample_records,
    subset_stats,
    zero_shot_filter,
)

HICO = Path(__file__).parent / "data" / "hico_det"


@pytest.fixture(scope="module")
def vocab() -> HOIVocabulary:
    return HOIVocabulary.builtin("hico_det")


@pytest.fixture(scope="module")
def records(vocab):
    return load_annotations(HICO / "annotations/trainval_hico.json", vocab, HICO / "images/train2015").records


def test_subsample_deterministic_and_seed_dependent():
    a = subsample_indices(100, 0.3, seed=0)
    assert len(a) == 30 and a == sorted(a) and len(set(a)) == 30
    assert subsample_indices(100, 0.3, seed=0) == a
    assert subsample_indices(100, 0.3, seed=1) != a
    assert subsample_indices(7, 1.0, seed=5) == list(range(7))
    assert len(subsample_indices(10, 0.01, seed=0)) == 1  # at least one image
    with pytest.raises(ConfigurationError, match=r"train_fraction must be in \(0, 1\], got 0"):
        subsample_indices(10, 0.0)


def test_subsample_does_not_touch_global_rng():
    import random

    import numpy as np
    import torch

    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    subsample_indices(50, 0.5, seed=3)
    assert random.random() == pytest.approx(0.13436424411240122)
    assert np.random.randint(1000) == 37
    torch.manual_seed(1)
    expected = torch.rand(1)
    torch.manual_seed(1)
    subsample_indices(50, 0.5, seed=3)
    assert torch.equal(torch.rand(1), expected)


def test_subset_stats(records):
    s = subset_stats(records)
    # 3 + 0 + 3 + 2 + 1 + 9 annotations; classes ride/hold/sit_on/wash bicycle, hold/drink_with cup, pet bird
    assert (s.images, s.hoi_instances, s.classes_present) == (6, 18, 7)
    kept, stats = subsample_records(records, 0.5, seed=0)
    assert len(kept) == 3 and stats.images == 3
    assert stats.hoi_instances == sum(records[i].num_hois for i in kept)


def test_zero_shot_filter_rare_first(records, vocab):
    unseen = vocab.unseen_hois("rare_first")
    assert 22 in unseen and 27 in unseen  # wash bicycle, pet bird
    out = zero_shot_filter(records, unseen, drop_empty=True)
    # record 1 has no HOI, record 4 only the unseen "pet bird"
    assert [r.file_name[-6:-4] for r in out] == ["01", "03", "04", "06"]
    for r in out:
        assert not set(r.hois[:, 3].tolist()) & set(unseen)
    # record 2: pair (0, 1) carried wash (unseen) and hold (seen) bicycle -> both gone
    assert out[1].hois.tolist() == [[2, 1, 36, 11]]
    assert out[1].boxes.shape == (3, 4)  # boxes stay as background
    assert records[2].num_hois == 3  # input not modified


def test_zero_shot_filter_default_and_keep_empty(records):
    assert len(zero_shot_filter(records, [], drop_empty=True)) == 5
    assert len(zero_shot_filter(records, [], drop_empty=False)) == 6


def test_counts_and_rare(records, vocab):
    counts = count_hoi_instances(records, vocab.num_hois)
    assert counts.shape == (600,)
    assert counts[297].item() == 10 and counts[11].item() == 3 and counts[18].item() == 1
    assert counts[22].item() == 1 and int(counts.sum()) == 18
    rare = rare_hoi_ids(counts)
    assert len(rare) == 599 and 297 not in rare and 11 in rare and 0 in rare
