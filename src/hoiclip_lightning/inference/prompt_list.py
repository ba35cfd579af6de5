r"""A list of HOI prompts -> a vocabulary: the label space of prompts typed by a person (open vocabulary).

One prompt per line, in the grammar of the vocabularies' own prompts: ``[a photo of] a person <verb phrase>
<a|an|the> <object>`` (``a person and a kite`` is the no-interaction class; with a no-object class, as in
V-COCO, ``a person <verb phrase> [something]`` is a role without object). The verb phrase is matched against
the phrases of a base vocabulary's prompts (``riding`` is ``ride``) or its verb names (``ride``,
``look at``); the object against its object names. An unknown phrase or object becomes a new verb or object
named as written. The result goes to :meth:`HOIDetector.set_vocabulary` / :meth:`HOICLIPModule.set_vocabulary`,
which keep the trained rows of the classes the base vocabulary has and score new ones through their text.

Example:
    >>> from hoiclip_lightning.data.synthetic import synthetic_vocabulary
    >>> base = synthetic_vocabulary()
    >>> vocab = vocabulary_from_prompts(base, "a person riding a kite\na photo of a person flying a kite")
    >>> vocab.hoi_prompts
    ['a photo of a person riding a kite', 'a photo of a person flying a kite']
    >>> [(vocab.verbs[v], vocab.objects[o]) for v, o in vocab.hois]
    [('ride', 'kite'), ('fly', 'kite')]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import ConfigurationError
from ..vocabulary import HOIVocabulary

__all__ = ["parse_prompt", "verb_phrases", "vocabulary_from_prompts"]

_PROMPT_PREFIX = "a photo of "
_SUBJECT = re.compile(r"^(?:a |the )?person\s+")
_ARTICLES = ("a", "an", "the")


def _clean(text: str) -> str:
    return " ".join(text.strip().lower().split()).rstrip(".").strip()


def _spoken(name: str) -> str:
    """A class name as it reads in a prompt (``look_at`` -> ``look at``)."""
    return name.replace("_", " ").lower()


def _split_object(rest: str, objects: Sequence[str], no_object: str | None = None) -> tuple[str, str] | None:
    """``rest`` = ``<verb phrase> <article> <object>`` -> ``(verb phrase, object)``.

    The object is the longest name of ``objects`` that ends ``rest`` after an article, else the words after
    the last article (a new object). Without an article, ``rest`` is a role without object when the
    vocabulary has a no-object class (``no_object``; a final ``something`` is dropped: ``cutting with
    something``). ``None`` when nothing fits.
    """
    words = rest.split()
    for name in sorted(objects, key=lambda o: -len(_spoken(o))):
        tail = _spoken(name).split()
        n = len(tail)
        if len(words) > n and words[-n:] == tail and words[-n - 1] in _ARTICLES:
            return " ".join(words[: -n - 1]), name
    for i in range(len(words) - 2, -1, -1):
        if words[i] in _ARTICLES:
            return " ".join(words[:i]), " ".join(words[i + 1:])
    if no_object is not None:
        words = words[:-1] if words[-1:] == ["something"] else words
        if words:
            return " ".join(words), no_object
    return None


def verb_phrases(vocabulary: HOIVocabulary) -> dict[str, str]:
    """The verb phrase each verb has in the vocabulary's prompts, plus the verb names themselves.

    Example: ``"a photo of a person riding a bicycle"`` gives ``{"riding": "ride"}``; the no-interaction
    prompt ``"a photo of a person and a bicycle"`` gives ``{"and": "no_interaction"}``. Every verb also
    maps from its name, spoken (``"look at": "look_at"``). A phrase found for two verbs keeps the first.

    Returns:
        ``{phrase: verb name}`` (phrases lower case, single spaces).
    """
    phrases: dict[str, str] = {}
    for (v, o), prompt in zip(vocabulary.hois, vocabulary.hoi_prompts, strict=True):
        body = _clean(prompt)
        body = body[len(_PROMPT_PREFIX):] if body.startswith(_PROMPT_PREFIX) else body
        match = _SUBJECT.match(body)
        if match is None:
            continue
        no_object = vocabulary.objects[o] if o == vocabulary.no_object_index else None
        split = _split_object(body[match.end():], [vocabulary.objects[o]], no_object)
        if split is not None and split[1] == vocabulary.objects[o] and split[0]:
            phrases.setdefault(split[0], vocabulary.verbs[v])
    for verb in vocabulary.verbs:
        phrases.setdefault(_spoken(verb), verb)
        phrases.setdefault(verb.lower(), verb)
    return phrases


def parse_prompt(line: str, vocabulary: HOIVocabulary, phrases: dict[str, str] | None = None) -> tuple[str, str]:
    """The (verb name, object name) of one prompt line.

    Args:
        line: ``[a photo of] a person <verb phrase> <a|an|the> <object>`` (case and spacing free, a final
            period allowed); with a no-object class (V-COCO) also ``a person <verb phrase> [something]``.
        vocabulary: the vocabulary whose verbs, objects and prompt phrases are matched first.
        phrases: :func:`verb_phrases` of ``vocabulary`` (computed when not given).

    Returns:
        ``(verb, object)``: names of ``vocabulary`` when they match, else the phrase / object as written
        (a new verb or object).

    Raises:
        ConfigurationError: the line does not follow the grammar (the message shows the expected form).

    Example:
        >>> from hoiclip_lightning.data.synthetic import synthetic_vocabulary
        >>> parse_prompt("a person riding a kite", synthetic_vocabulary())
        ('ride', 'kite')
    """
    phrases = verb_phrases(vocabulary) if phrases is None else phrases
    body = _clean(line)
    body = body[len(_PROMPT_PREFIX):] if body.startswith(_PROMPT_PREFIX) else body
    expected = "expected '[a photo of] a person <verb phrase> <a|an|the> <object>', e.g. 'a person riding a kite'"
    match = _SUBJECT.match(body)
    if match is None:
        raise ConfigurationError(f"prompt {line.strip()!r} does not start with 'a person'; {expected}")
    no_object = None if vocabulary.no_object_index is None else vocabulary.objects[vocabulary.no_object_index]
    split = _split_object(body[match.end():], vocabulary.objects, no_object)
    if split is None or not split[0] or not split[1]:
        raise ConfigurationError(f"prompt {line.strip()!r} names no verb and object; {expected}")
    phrase, obj = split
    return phrases.get(phrase, phrase), obj


def vocabulary_from_prompts(base: HOIVocabulary, text: str) -> HOIVocabulary:
    """The label space of an edited prompt list.

    Every non-empty line (``#`` starts a comment line) is one HOI class, in order. A line equal to one of
    ``base``'s prompts is that class; another line is parsed with :func:`parse_prompt` and, when it lacks
    the prefix every prompt of ``base`` starts with (``a photo of ``), gets it. Objects and verbs are
    ``base``'s (so the object classifier is unchanged) followed by the new ones the lines name (new
    objects get category id ``-1`` and the prompt ``a photo of a/an <object>``). The rare set keeps
    ``base``'s rare classes; there is no zero-shot split. ``base`` itself is returned when the lines are
    exactly its prompts.

    Args:
        base: the checkpoint's vocabulary.
        text: the prompt list, one prompt per line.

    Raises:
        ConfigurationError: no prompt, a line that does not parse, or two lines of the same (verb, object)
            (the message names the line numbers).
    """
    lines = [(n, raw.strip()) for n, raw in enumerate(text.splitlines(), start=1)]
    lines = [(n, s) for n, s in lines if s and not s.startswith("#")]
    if not lines:
        raise ConfigurationError("the prompt list is empty; give at least one prompt, e.g. 'a person riding a kite'")
    if [s for _, s in lines] == list(base.hoi_prompts):
        return base
    known = {_clean(p): (base.verbs[v], base.objects[o]) for (v, o), p in zip(base.hois, base.hoi_prompts,
                                                                              strict=True)}
    prefixed = all(_clean(p).startswith(_PROMPT_PREFIX) for p in base.hoi_prompts)
    phrases = verb_phrases(base)
    objects, verbs = list(base.objects), list(base.verbs)
    hois: list[tuple[int, int]] = []
    prompts: list[str] = []
    first_line: dict[tuple[int, int], int] = {}
    for n, line in lines:
        try:
            verb, obj = known.get(_clean(line)) or parse_prompt(line, base, phrases)
        except ConfigurationError as err:
            raise ConfigurationError(f"prompt line {n}: {err}") from None
        if obj not in objects:
            objects.append(obj)
        if verb not in verbs:
            verbs.append(verb)
        pair = (verbs.index(verb), objects.index(obj))
        if pair in first_line:
            raise ConfigurationError(f"prompt lines {first_line[pair]} and {n} are the same class ({verb}, {obj}); "
                                     "keep one of them")
        first_line[pair] = n
        hois.append(pair)
        body = " ".join(line.split())
        needs_prefix = prefixed and not _clean(body).startswith(_PROMPT_PREFIX)
        prompts.append(_PROMPT_PREFIX + body if needs_prefix else body)
    new_objects = objects[len(base.objects):]
    base_rare = {(base.verbs[v], base.objects[o]) for c, (v, o) in enumerate(base.hois) if c in set(base.rare_hois)}
    nothing = base.object_prompts[-1:]
    return HOIVocabulary(
        name=f"{base.name}+prompts",
        objects=objects,
        object_category_ids=list(base.object_category_ids) + [-1] * len(new_objects),
        verbs=verbs,
        verb_ids=list(base.verb_ids) + [max(base.verb_ids, default=0) + 1 + i
                                        for i in range(len(verbs) - len(base.verbs))],
        hois=hois,
        hoi_prompts=prompts,
        object_prompts=list(base.object_prompts[:-1])
        + [f"a photo of {'an' if o[:1] in 'aeiou' else 'a'} {o}" for o in new_objects] + nothing,
        rare_hois=[c for c, (v, o) in enumerate(hois) if (verbs[v], objects[o]) in base_rare],
        no_object_index=base.no_object_index,
    )
