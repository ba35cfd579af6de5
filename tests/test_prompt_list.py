"""A typed list of HOI prompts -> a vocabulary (inference/prompt_list.py): hand cases, every built-in prompt,
added / removed classes, and errors that name the line."""

import pytest

from hoiclip_lightning.data.synthetic import synthetic_vocabulary
from hoiclip_lightning.errors import ConfigurationError
from hoiclip_lightning.inference.prompt_list import parse_prompt, verb_phrases, vocabulary_from_prompts
from hoiclip_lightning.vocabulary import HOIVocabulary

KITE = "a person riding a kite"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (KITE, ("ride", "kite")),                                       # a new class of known verb and object
        ("A photo of a person  looking at an umbrella.", ("look_at", "umbrella")),  # prefix, case, spaces, period
        ("a person and a kite", ("no_interaction", "kite")),            # the no-interaction form
        ("the person ride the sports ball", ("ride", "sports ball")),   # verb name, two-word object
        ("a person surfing on a wave", ("surfing on", "wave")),         # new verb and new object, as written
    ],
)
def test_parse_prompt_hand_cases(line, expected):
    assert parse_prompt(line, synthetic_vocabulary()) == expected


@pytest.mark.parametrize("line", ["hello", "a dog riding a kite", "a person riding", "a person a kite"])
def test_parse_prompt_refuses_lines_outside_the_grammar(line):
    with pytest.raises(ConfigurationError, match="expected '\\[a photo of\\] a person <verb phrase>"):
        parse_prompt(line, synthetic_vocabulary())


@pytest.mark.parametrize("name", ["hico_det", "vcoco", "synthetic"])
def test_every_builtin_prompt_parses_to_its_own_class(name):
    vocab = synthetic_vocabulary() if name == "synthetic" else HOIVocabulary.builtin(name)
    phrases = verb_phrases(vocab)
    parsed = [parse_prompt(p, vocab, phrases) for p in vocab.hoi_prompts]
    assert parsed == [(vocab.verbs[v], vocab.objects[o]) for v, o in vocab.hois]


def test_verb_phrases_of_the_synthetic_prompts():
    phrases = verb_phrases(synthetic_vocabulary())
    assert phrases["riding"] == "ride" and phrases["looking at"] == "look_at" and phrases["sitting on"] == "sit_on"
    assert phrases["and"] == "no_interaction" and phrases["look at"] == "look_at" and phrases["ride"] == "ride"


def test_vocabulary_from_prompts_adds_and_removes_classes():
    base = synthetic_vocabulary()
    assert vocabulary_from_prompts(base, "\n".join(base.hoi_prompts)) is base  # unchanged list: the same object
    kept = base.hoi_prompts[:3]
    rare_class = next(c for c in base.rare_hois if c >= 3)
    rare = base.hoi_prompts[rare_class]
    text = "\n".join(["# a comment", *kept, "", rare, KITE, "a person surfing on a wave"])
    vocab = vocabulary_from_prompts(base, text)
    assert vocab.num_hois == 6
    assert vocab.hoi_prompts[:4] == [*kept, rare]
    assert vocab.hoi_prompts[4:] == ["a photo of a person riding a kite", "a photo of a person surfing on a wave"]
    assert vocab.objects == [*base.objects, "wave"] and vocab.verbs == [*base.verbs, "surfing on"]
    assert vocab.object_category_ids[-1] == -1 and vocab.verb_ids[-1] == max(base.verb_ids) + 1
    assert vocab.object_prompts[-2:] == ["a photo of a wave", "a photo of nothing"]
    assert vocab.hois[4] == (base.verbs.index("ride"), base.objects.index("kite"))
    assert vocab.hois[:4] == [base.hois[0], base.hois[1], base.hois[2], base.hois[rare_class]]  # same indices
    assert vocab.rare_hois == [c for c in (0, 1, 2) if c in base.rare_hois] + [3]  # rare flags kept, new: none


def test_vocabulary_from_prompts_errors_name_the_lines():
    base = synthetic_vocabulary()
    with pytest.raises(ConfigurationError, match="prompt lines 1 and 3 are the same class \\(ride, kite\\)"):
        vocabulary_from_prompts(base, f"{KITE}\n{base.hoi_prompts[0]}\na photo of a person riding a kite")
    with pytest.raises(ConfigurationError, match="prompt line 2: prompt 'a cat' does not start with 'a person'"):
        vocabulary_from_prompts(base, f"{KITE}\na cat")
    with pytest.raises(ConfigurationError, match="the prompt list is empty"):
        vocabulary_from_prompts(base, "\n# nothing\n")
