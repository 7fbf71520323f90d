"""Length-aware masks over the real SmolLM2 vocabulary: a tight token budget still ends in a sentence.

A generation is driven here by a policy that never wants to stop (it picks anything but EOS while
it can), which is the worst case: the budget alone must bring it to a complete text.
"""

import random

import pytest
import torch
from pydantic import BaseModel, Field, create_model

import grammars
from grammars.core import byte_regex as rx
from grammars.core.completion import CompletionLengths, min_term_len
from grammars.masking.masks import MaskTable


class Item(BaseModel):
    name: str
    count: int
    tags: list[str] = Field(default_factory=list)


class Order(BaseModel):
    customer: str
    items: list[Item]
    note: str | None = None


def drive(constraint, vocab, max_tokens: int, choose) -> tuple[bytes, bool]:
    """Generate under a budget of `max_tokens`; `choose(allowed_ids)` picks among non-EOS tokens.
    Returns the text and whether it ended with EOS."""
    matcher = constraint.matcher(vocab)
    eos = set(vocab.eos_token_ids)
    text = b""
    for used in range(max_tokens):
        mask = matcher.mask(max_remaining_tokens=max_tokens - used)
        assert matcher.error is None
        allowed = mask.nonzero().flatten().tolist()
        assert allowed, text
        others = [t for t in allowed if t not in eos]
        if not others:
            return text, True
        token = choose(others)
        matcher.advance(token)
        text += vocab.token_bytes[token]
    return text, False


def test_min_term_len_counts_the_shortest_string() -> None:
    digits = rx.repeat(rx.byte_range(48, 57), 2, None)
    assert min_term_len(rx.concat(rx.literal(b"ab"), rx.alt(rx.literal(b"xyz"), digits))) == 4
    assert min_term_len(rx.star(digits)) == 0
    assert min_term_len(rx.EMPTY) == float("inf")
    no_digits = rx.ALL_BYTES & ~sum(1 << b for b in range(48, 58))
    assert min_term_len(digits, no_digits) == float("inf")


def test_completion_length_of_states() -> None:
    constraint = grammars.compile(Item)
    automaton = constraint.automaton
    lengths = CompletionLengths(automaton)
    shortest = b'{"name":"","count":0}'
    assert lengths.of_state(automaton.initial) == len(shortest)
    inside = automaton.walk(automaton.initial, b'{"name":"ab')
    complete = automaton.walk(automaton.initial, shortest)
    assert inside is not None and complete is not None
    assert lengths.of_state(inside) == len(b'","count":0}')
    assert lengths.of_state(complete) == 0


def test_int_runaway_ends_within_the_budget(vocab) -> None:
    """The greedy `1000000...` loop: a policy that always prefers the most zeros stops in time."""
    constraint = grammars.compile(int)

    def most_zeros(ids: list[int]) -> int:  # anything but a lone "0", which would end the number
        return max(ids, key=lambda t: (vocab.token_bytes[t] != b"0", vocab.token_bytes[t].count(b"0"), -t))

    for budget in range(2, 8):
        text, ended = drive(constraint, vocab, budget, most_zeros)
        assert ended and constraint.accepts(text.decode()), (budget, text)
    unbounded = constraint.matcher(vocab)
    for _ in range(10):
        allowed = unbounded.mask().nonzero().flatten().tolist()
        unbounded.advance(most_zeros([t for t in allowed if t not in vocab.eos_token_ids]))
    assert not unbounded.is_finished()  # without a budget the policy never stops


@pytest.mark.parametrize("seed", range(6))
def test_random_walks_under_a_tight_budget_end_valid(vocab, seed: int) -> None:
    constraint = grammars.compile(Order)
    rng = random.Random(seed)
    shortest = len(b'{"customer":"","items":[]}')
    for budget in (shortest + 1, shortest + 8, shortest + 30):
        text, ended = drive(constraint, vocab, budget, rng.choice)
        assert ended, (budget, text)
        Order.model_validate_json(text)


def test_keep_going_policy_ends_valid(vocab) -> None:
    """A policy that prefers the longest token that does not close anything ends valid in budget."""
    constraint = grammars.compile(Order)

    def keep_going(ids: list[int]) -> int:
        return max(
            ids,
            key=lambda t: (
                b"}" not in vocab.token_bytes[t],
                b"]" not in vocab.token_bytes[t],
                len(vocab.token_bytes[t]),
                -t,
            ),
        )

    for budget in (40, 60):
        text, ended = drive(constraint, vocab, budget, keep_going)
        assert ended, text
        Order.model_validate_json(text)


@pytest.mark.parametrize("seed", range(3))
def test_a_loose_budget_leaves_masks_unchanged(vocab, seed: int) -> None:
    constraint = grammars.compile(Order)
    matcher = constraint.matcher(vocab)
    rng = random.Random(seed)
    eos = set(vocab.eos_token_ids)
    for used in range(30):
        plain = matcher.mask()
        budgeted = matcher.mask(max_remaining_tokens=200 - used)
        assert torch.equal(plain, budgeted)
        others = [t for t in plain.nonzero().flatten().tolist() if t not in eos]
        if not others:
            break
        matcher.advance(rng.choice(others))


def test_a_budget_mask_is_not_cached_as_the_plain_mask(vocab) -> None:
    constraint = grammars.compile(Order)
    matcher = constraint.matcher(vocab)
    single = {data: i for i, data in enumerate(vocab.token_bytes) if data is not None and len(data) == 1}
    for byte in b'{"customer":"a","items":[':
        matcher.advance(single[bytes([byte])])
    tight = matcher.mask(max_remaining_tokens=4)  # "]}" fits, an item does not
    plain = matcher.mask()
    kept = tight.nonzero().flatten().tolist()
    assert single[b"]"] in kept and all(vocab.token_bytes[t].startswith(b"]") for t in kept)
    assert bool(plain[single[b"{"]])
    assert torch.equal(matcher.mask(), plain)


def test_a_budget_that_cannot_be_met_keeps_the_plain_mask(vocab) -> None:
    constraint = grammars.compile(Order)
    matcher = constraint.matcher(vocab)
    assert torch.equal(matcher.mask(max_remaining_tokens=3), matcher.mask())


#: Twenty required booleans with long names: 20 * `"configuration_tracking_NN":false,` is far more
#: bytes than tokens (a name is a few tokens).
Wide = create_model("Wide", **{f"configuration_tracking_{i:02d}": (bool, ...) for i in range(20)})  # type: ignore[call-overload]


def test_completions_are_counted_in_tokens(vocab) -> None:
    constraint = grammars.compile(Wide)
    automaton = constraint.automaton
    in_bytes = CompletionLengths(automaton, vocab.single_byte_tokens).of_state(automaton.initial)
    in_tokens = MaskTable(automaton, vocab).shortest_completion(automaton.initial)
    shortest = b"{" + b",".join(b'"%s":true' % name.encode() for name in Wide.model_fields) + b"}"
    assert in_bytes == len(shortest)
    assert in_tokens < in_bytes / 2


@pytest.mark.parametrize("policy", ["keep_going", "random"])
def test_a_budget_between_the_token_and_byte_counts_still_ends_valid(vocab, policy: str) -> None:
    """The token count is a guarantee too: a budget the byte count calls hopeless is met."""
    constraint = grammars.compile(Wide)
    automaton = constraint.automaton
    in_tokens = MaskTable(automaton, vocab).shortest_completion(automaton.initial)
    rng = random.Random(0)

    def keep_going(ids: list[int]) -> int:
        return max(ids, key=lambda t: (b"}" not in vocab.token_bytes[t], len(vocab.token_bytes[t]), -t))

    for budget in (int(in_tokens) + 2, int(in_tokens) + 12):
        text, ended = drive(constraint, vocab, budget, keep_going if policy == "keep_going" else rng.choice)
        assert ended, (budget, text)
        Wide.model_validate_json(text)


@pytest.mark.parametrize(
    "prefix", [b'{"customer":"ab', b'{"customer":"a","items":[{"name":"b","count":12', b'{"customer":"a","items":[']
)
def test_the_closing_mask_keeps_only_tokens_that_shorten_the_completion(vocab, prefix: bytes) -> None:
    constraint = grammars.compile(Order)
    automaton = constraint.automaton
    table = MaskTable(automaton, vocab)
    matcher = constraint.matcher(vocab)
    single = {data: i for i, data in enumerate(vocab.token_bytes) if data is not None and len(data) == 1}
    for byte in prefix:
        matcher.advance(single[bytes([byte])])
    state = automaton.walk(automaton.initial, prefix)
    assert state is not None
    distance = table.shortest_completion(state)
    closing = matcher.closing_mask().nonzero().flatten().tolist()
    plain = matcher.mask()
    assert closing and len(closing) < int(plain.sum())
    assert all(bool(plain[t]) for t in closing)
    for token in closing:
        after = automaton.walk(state, vocab.token_bytes[token])
        assert after is not None and table.shortest_completion(after) < distance, vocab.token_bytes[token]


def test_a_complete_number_closes_with_eos(vocab) -> None:
    constraint = grammars.compile(int)
    matcher = constraint.matcher(vocab)
    single = {data: i for i, data in enumerate(vocab.token_bytes) if data is not None and len(data) == 1}
    for byte in b"1000":
        matcher.advance(single[bytes([byte])])
    assert set(matcher.closing_mask().nonzero().flatten().tolist()) == set(vocab.eos_token_ids)
    assert int(matcher.mask().sum()) > len(vocab.eos_token_ids)
