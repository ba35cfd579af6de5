"""HOIVocabulary: built-in facts, look-ups, splits and validation of custom files."""

import json

import pytest
import torch

from hoiclip_lightning import AnnotationError, ConfigurationError, HOIVocabulary


@pytest.fixture(scope="module")
def hico():
    return HOIVocabulary.builtin("hico_det")


def test_hico_sizes_and_known_entries(hico):
    assert (hico.num_objects, hico.num_verbs, hico.num_hois, len(hico.rare_hois)) == (80, 117, 600, 138)
    # HOI 0 is "board airplane"; verb 4 = board, object 4 = airplane (COCO id 5)
    assert hico.hois[0] == (4, 4)
    assert hico.verbs[4] == "board" and hico.objects[4] == "airplane"
    assert hico.object_category_ids[4] == 5
    assert hico.object_index(5) == 4 and hico.object_index(12) is None  # 12 is an unused COCO id
    assert hico.verb_index(1) == 0 and hico.verb_index(117) == 116 and hico.verb_index(0) is None
    assert hico.hoi_index(4, 4) == 0
    assert hico.hoi_prompts[0] == "a photo of a person boarding an airplane"
    assert hico.object_prompts[-1] == "a photo of nothing" and len(hico.object_prompts) == 81


def test_hico_zero_shot_split_sizes(hico):
    expected = {"rare_first": 120, "non_rare_first": 120, "unseen_object": 100, "unseen_verb": 84, "uc0": 120}
    for split, n_unseen in expected.items():
        unseen = hico.unseen_hois(split)
        seen = hico.seen_hois(split)
        assert len(unseen) == n_unseen
        assert len(seen) == 600 - n_unseen
        assert not set(unseen) & set(seen)
    assert hico.seen_hois("default") == list(range(600))
    # rare_first's unseen classes are rare classes
    assert set(hico.unseen_hois("rare_first")) <= set(hico.rare_hois)
    # unseen_verb removes every HOI of 'ride' (verb 76)
    ride = [c for c, (v, _) in enumerate(hico.hois) if v == hico.verbs.index("ride")]
    assert set(ride) <= set(hico.unseen_hois("unseen_verb"))
    with pytest.raises(ConfigurationError, match="accepted"):
        hico.unseen_hois("no_such_split")


def test_verb_to_hoi_matrix_hand_case(hico):
    mat = hico.verb_to_hoi_matrix([0, 1, 599])
    assert mat.shape == (117, 3)
    assert mat.sum().item() == 3
    assert mat[4, 0] == 1 and mat[hico.hois[1][0], 1] == 1 and mat[hico.hois[599][0], 2] == 1
    full = hico.verb_to_hoi_matrix()
    assert torch.equal(full.sum(0), torch.ones(600))


def test_vcoco_has_no_object_slot():
    vc = HOIVocabulary.builtin("vcoco")
    assert (vc.num_verbs, vc.num_hois, vc.num_objects, vc.no_object_index) == (29, 263, 81, 80)
    assert vc.objects[80] == "none" and vc.object_index(-1) is None
    assert vc.hoi_prompts[vc.hoi_index(16, 80)] == "a photo of a person cutting with something"
    assert len(vc.object_prompts) == 82


def test_custom_vocabulary_round_trip_and_errors(tmp_path):
    vocab = HOIVocabulary(
        name="tiny", objects=["person", "ball"], object_category_ids=[1, 37], verbs=["kick", "hold"],
        verb_ids=[1, 2], hois=[(0, 1), (1, 1)], hoi_prompts=["a photo of a person kicking a ball",
                                                             "a photo of a person holding a ball"],
    )
    assert vocab.object_prompts == ["a photo of a person", "a photo of a ball", "a photo of nothing"]
    path = tmp_path / "vocab.json"
    vocab.to_json(path)
    again = HOIVocabulary.from_json(path)
    assert again.hois == [(0, 1), (1, 1)] and again.objects == ["person", "ball"]

    data = json.loads(path.read_text())
    data["hois"].append([5, 0])
    data["hoi_prompts"].append("x")
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"hois\[2\] verb index 5"):
        HOIVocabulary.from_json(path)

    data = HOIVocabulary.builtin("hico_det").to_dict()
    del data["verbs"]
    with pytest.raises(AnnotationError, match="missing field"):
        HOIVocabulary.from_dict(data, source="x.json")
    with pytest.raises(ConfigurationError, match="accepted"):
        HOIVocabulary.builtin("coco")


TINY = dict(
    name="tiny", objects=["person", "cat", "dog"], object_category_ids=[1, 2, 3], verbs=["pet", "feed"],
    verb_ids=[1, 2], hois=[[0, 1], [0, 2], [1, 2]],
    hoi_prompts=["a photo of a person petting a cat", "a photo of a person petting a dog",
                 "a photo of a person feeding a dog"],
)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("objects", ["person", "dog", "dog"], r"objects has the duplicate 'dog' at positions 1 and 2"),
    ("verbs", ["pet", "pet"], r"verbs has the duplicate 'pet' at positions 0 and 1"),
    # the case: category_id 2 would silently map every cat box to 'dog'
    ("object_category_ids", [1, 2, 2], r"object_category_ids has the duplicate 2 at positions 1 and 2 "
                                       r"\(objects 'cat' and 'dog'\)"),
    ("verb_ids", [7, 7], r"verb_ids has the duplicate 7 at positions 0 and 1 \(verbs 'pet' and 'feed'\)"),
    ("hoi_prompts", ["a photo of a person petting a cat", "a photo of a person feeding a dog",
                     "a photo of a person feeding a dog"],
     r"hoi_prompts has the duplicate 'a photo of a person feeding a dog' at positions 1 and 2"),
    ("object_prompts", ["a person", "a pet", "a pet", "nothing"], r"object_prompts has the duplicate 'a pet' at "
                                                                  r"positions 1 and 2"),
    ("verb_ids", [1, "2"], r"verb_ids\[1\] = '2', expected an integer"),
    ("hois", [[0, 1], [0, 2], [0, 2]], r"hois has the duplicate \(verb, object\) pair \(0, 2\) \('pet' 'dog'\) at "
                                       r"positions 1 and 2"),
])
def test_vocabulary_duplicates_rejected_naming_file_and_field(tmp_path, field, value, message):
    path = tmp_path / "vocabulary.json"
    path.write_text(json.dumps(dict(TINY, **{field: value})))
    with pytest.raises(AnnotationError, match=rf"{path}: vocabulary 'tiny': {message}"):
        HOIVocabulary.from_json(path)
    assert HOIVocabulary.from_dict(dict(TINY)).object_index(2) == 1  # the clean file is accepted


def test_several_pseudo_classes_may_share_category_id_minus_one():
    vocab = HOIVocabulary.from_dict(dict(TINY, object_category_ids=[1, -1, -1]))
    assert vocab.object_index(-1) is None and vocab.object_index(1) == 0
