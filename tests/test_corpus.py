"""Tests for the built-in corpus: determinism, diversity, world facts, grammar, labelled set."""

import re
from collections import Counter

import pytest

from nlpssl.corpus import (
    _NEGATIVE,
    _POSITIVE,
    DEFAULT_NUM_STORIES,
    LABELS,
    CorpusStats,
    corpus_stats,
    generate_stories,
    labelled_examples,
)

_SENTENCE_END = re.compile(r"(?<=[.!?]) ")


@pytest.fixture(scope="module")
def stories() -> list[str]:
    """A few thousand stories: enough for every statistical check here, fast to make."""
    return list(generate_stories(5000, seed=0))


def test_same_seed_same_text_other_seed_differs():
    a = list(generate_stories(300, seed=7))
    assert a == list(generate_stories(300, seed=7))
    assert a != list(generate_stories(300, seed=8))
    assert a[:50] == list(generate_stories(50, seed=7)), "a shorter run must be a prefix"


def test_stories_are_single_nonempty_ascii_lines(stories):
    for story in stories[:1000]:
        assert story and "\n" not in story and story.isascii()
        assert story[0].isupper() and story.endswith(".")


def test_default_size_meets_diversity_figures():
    # The slow test of this file (~3 s): generates and measures the full default corpus.
    stats = corpus_stats(generate_stories())
    assert stats.num_stories == DEFAULT_NUM_STORIES
    assert stats.word_types >= 2000
    assert stats.distinct_sentences >= 200_000
    assert stats.num_bytes > 10_000_000


def test_corpus_stats_counts_hand_written_text():
    stats = corpus_stats(["The cat sat. The dog ran!", "The cat sat.", "Mia's hat."])
    # words: the cat sat dog ran mia s hat; sentences: 3 distinct ("The cat sat." twice)
    assert stats == CorpusStats(num_stories=3, num_bytes=47, word_types=8, distinct_sentences=3)


def test_named_child_is_referred_to_later(stories):
    recurs = []
    for story in stories:
        first, *rest = _SENTENCE_END.split(story)
        name = re.search(r"(?:named|called) ([A-Z][a-z]+)|^([A-Z][a-z]+) was ", first)
        if name:
            name = name.group(1) or name.group(2)
            recurs.append(any(name in sentence for sentence in rest[2:]))
    assert len(recurs) > 0.9 * len(stories)
    assert sum(recurs) / len(recurs) > 0.95


def test_treasured_object_is_referred_to_by_the_colour_noun_later(stories):
    intro = re.compile(r"\ban? [a-z]+ ([a-z]+ [a-z]+)(?: that| for|\.)")
    referred = []
    for story in stories:
        sentences = _SENTENCE_END.split(story)
        for i, sentence in enumerate(sentences[:4]):
            owned = " had " in sentence or " gave " in sentence or "favourite" in sentence
            if owned and (match := intro.search(sentence)):
                thing = "the " + match.group(1)
                referred.append(any(thing in later for later in sentences[i + 1 :]))
                break
    assert len(referred) > 0.9 * len(stories)
    assert sum(referred) / len(referred) > 0.85


def test_cat_always_sits_on_the_mat(stories):
    text = " ".join(stories)
    seats = Counter(re.findall(r"\bcats? (?:\w+ )?sat on (?:the |a )?(\w+)", text))
    assert set(seats) == {"mat"}
    assert text.count("The cat sat on the mat.") > 300
    assert "The dog sat on the rug." in text  # other pets sit elsewhere


def test_stories_often_open_once_upon_a_time(stories):
    share = sum(s.startswith("Once upon a time, ") for s in stories) / len(stories)
    assert 0.5 < share < 0.9


def test_articles_and_pronouns_agree(stories):
    text = " ".join(stories)
    assert not re.search(r"\b[Aa] [aeiou]", text)
    assert not re.search(r"\b[Aa]n [^aeiou]", text)
    checked = Counter()
    for story in stories:
        starts = {s.split(" ", 1)[0] for s in _SENTENCE_END.split(story)}
        if " girl " in story.split(".", 1)[0]:
            assert not starts & {"He", "His"}, story
            checked["girl"] += 1
        elif " boy " in story.split(".", 1)[0]:
            assert not starts & {"She", "Her"}, story
            checked["boy"] += 1
    assert checked["girl"] > 1000 and checked["boy"] > 1000, checked  # the pronoun checks above ran (~2,500 each)


def test_mood_words_occur_in_stories(stories):
    # The labelled set leans on these synonyms; pretraining can only help if the stories use them.
    words = Counter(" ".join(stories).replace(".", " ").replace(",", " ").split())
    assert all(words[w] >= 20 for w in _POSITIVE + _NEGATIVE)


def test_labelled_examples_are_deterministic_and_seeded():
    a = labelled_examples(200, seed=3)
    assert a == labelled_examples(200, seed=3)
    assert a != labelled_examples(200, seed=4)
    assert all(set(e) == {"text", "label"} and e["label"] in LABELS for e in a)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_labelled_labels_are_balanced(split):
    examples = labelled_examples(300, split=split)
    assert Counter(e["label"] for e in examples) == {label: 150 for label in LABELS}
    assert len({e["text"] for e in examples}) == 300


def test_labelled_splits_share_no_text():
    texts = {
        s: {e["text"] for e in labelled_examples(1000, split=s)}
        for s in ("train", "validation", "test")
    }
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]


def test_labelled_examples_use_negation_and_are_not_story_copies(stories):
    examples = labelled_examples(400)
    negated = sum(" not " in e["text"] for e in examples) / len(examples)
    assert negated > 0.15
    text = "\n".join(stories)
    assert not any(e["text"] in text for e in examples)


def test_labelled_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown split"):
        labelled_examples(10, split="dev")
    with pytest.raises(ValueError, match="num_examples must be >= 0"):
        labelled_examples(-1)
    with pytest.raises(ValueError, match="num_stories must be >= 0"):
        generate_stories(-1)
