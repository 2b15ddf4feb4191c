import pytest
from fakes import word_tokenize

from pnpseg import ClassNameError
from pnpseg.method.prompts import build_prompt, plan_prompts, token_weights, tokens_of_spans, validate_names


def test_build_prompt_spans():
    prompt, spans = build_prompt(["cat", "traffic light"])
    assert prompt == "A picture of cat traffic light"
    assert [prompt[a:b] for a, b in spans] == ["cat", "traffic light"]


def test_tokens_by_offsets_multi_token_and_multi_word():
    # "A picture of cat traffic light": word pieces "traff", "##ic", then "light".
    offsets = [(0, 0), (0, 1), (2, 9), (10, 12), (13, 16), (17, 22), (22, 24), (25, 30), (0, 0), (0, 0)]
    assert tokens_of_spans(offsets, [(13, 16), (17, 30)]) == [[4], [5, 6, 7]]


def test_tokens_with_leading_space_offsets_stay_with_their_word():
    # Byte-level BPE tokenizers may include the preceding space in a token's span.
    offsets = [(0, 0), (12, 16), (16, 20)]
    assert tokens_of_spans(offsets, [(13, 16), (17, 20)]) == [[1], [2]]


def test_token_weights_average_each_class():
    prompt, spans = build_prompt(["cat", "traffic light"])
    plan = plan_prompts(["cat", "traffic light"], word_tokenize, 32)
    weights = token_weights(plan, 8, 2)
    assert weights.shape == (1, 2, 8)
    assert weights[0, 0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    assert weights[0, 1].tolist() == [0, 0, 0, 0, 0, 0.5, 0.5, 0]


def test_chunking_splits_when_prompt_too_long():
    names = list("abcdefg")
    # [CLS] A picture of x y z [SEP] = 8 tokens: three names per prompt.
    plan = plan_prompts(names, word_tokenize, 8)
    assert [chunk.classes for chunk in plan] == [(0, 1, 2), (3, 4, 5), (6,)]
    assert plan[1].prompt == "A picture of d e f"
    assert plan[1].tokens == ((4,), (5,), (6,))


def test_everything_fits_in_one_prompt():
    plan = plan_prompts(list("abcdefg"), word_tokenize, 64)
    assert len(plan) == 1 and plan[0].classes == tuple(range(7))


def test_name_longer_than_text_limit_is_an_error():
    with pytest.raises(ClassNameError, match="too long"):
        plan_prompts(["a", "b c d e"], word_tokenize, 8)


def test_untokenisable_names_are_named():
    def tokenize(prompts):
        return word_tokenize(prompts, unknown_words=frozenset({"🐱", "☃"}))

    with pytest.raises(ClassNameError, match="🐱, ☃"):
        plan_prompts(["cat", "🐱", "☃"], tokenize, 64)


@pytest.mark.parametrize(
    "names, message",
    [
        ([], "no class names"),
        (["cat", " "], "blank class name at position"),
        (["Cat", "dog", "cat"], "duplicate class name"),
    ],
)
def test_bad_class_lists(names, message):
    with pytest.raises(ClassNameError, match=message):
        validate_names(names)


def test_names_are_whitespace_normalised():
    assert validate_names([" traffic   light ", "dog"]) == ["traffic light", "dog"]
