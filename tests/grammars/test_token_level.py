"""Token-level behaviour on the real SmolLM2 vocabulary and real schemas.

- Every token of the canonical tokenization of a valid instance is allowed at its step, and EOS at
  the end.
- Random walks over masks only produce texts that `accepts()` and the `jsonschema` validator accept.
- Differential test against llguidance (same schemas, same whitespace policy): the masks agree at
  every step of the canonical tokenization, up to three documented differences, each listed.
"""

from __future__ import annotations

import json
from collections import Counter

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import grammars
from grammars.frontends.json_schema import canonical_json
from tests.shared_data import SHARED, reference_tokenizer

pytestmark = pytest.mark.slow  # the real model or an external corpus

BENCH = SHARED / "corpus" / "schemas" / "jsonschemabench"
#: One schema in SAMPLE_STRIDE of each JSONSchemaBench group (deterministic), to keep CI fast.
SAMPLE_STRIDE = 30

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "score": {"type": "number"},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def bench_cases() -> list[tuple[str, dict, list]]:
    cases = []
    for group in sorted(p for p in BENCH.iterdir() if p.is_dir()) if BENCH.is_dir() else []:
        for path in sorted(group.glob("*.json"))[::SAMPLE_STRIDE]:
            data = json.loads(path.read_text())
            valid = [t["data"] for t in data["tests"] if t["valid"]]
            if valid:
                cases.append((f"{group.name}/{path.name}", data["schema"], valid[:2]))
    return cases


CASES = bench_cases()


def compile_or_none(schema: dict, **options) -> grammars.Constraint | None:
    try:
        return grammars.compile(schema, **options)
    except grammars.GrammarError:
        return None  # an unsupported schema is covered by the conformance tests


@pytest.mark.parametrize("name, schema, instances", CASES, ids=[c[0] for c in CASES])
def test_canonical_tokenization_is_allowed_step_by_step(name, schema, instances, vocab, hf_tokenizer):
    constraint = compile_or_none(schema)
    if constraint is None:
        return
    for instance in instances:
        ids = hf_tokenizer.encode(canonical_json(schema, instance), add_special_tokens=False).ids
        matcher = constraint.matcher(vocab)
        for step, token_id in enumerate(ids):
            assert matcher.mask()[token_id], (
                f"step {step}: {hf_tokenizer.decode(ids[:step])[-40:]!r} + {hf_tokenizer.id_to_token(token_id)!r}"
            )
            matcher.advance(token_id)
        assert matcher.mask()[list(vocab.eos_token_ids)].all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_walks_produce_valid_json(data, vocab, hf_tokenizer):
    constraint = grammars.compile(PERSON)
    matcher = constraint.matcher(vocab)
    token_ids: list[int] = []
    for _ in range(60):
        allowed = np.flatnonzero(matcher.mask().numpy())
        eos = [i for i in allowed if i in vocab.eos_token_ids]
        if eos and data.draw(st.booleans(), label="stop"):
            break
        choice = int(allowed[data.draw(st.integers(0, len(allowed) - 1), label="token")])
        if choice in vocab.eos_token_ids:
            break
        matcher.advance(choice)
        token_ids.append(choice)
    else:
        return  # an unfinished walk proves nothing about completion
    text = b"".join(vocab.token_bytes[i] for i in token_ids).decode("utf-8")
    assert matcher.is_accepting() and constraint.accepts(text)
    jsonschema.validate(json.loads(text), PERSON, format_checker=jsonschema.FormatChecker())


# ----------------------------------------------------------------------------------------------
# Differential test against llguidance
# ----------------------------------------------------------------------------------------------

#: Differences between the engines that are design choices, not bugs; every other difference fails.
KNOWN_DIFFERENCES = {
    "forced-text": 'llguidance allows only the canonical tokens of text the grammar forces (`{"` as one'
    ' token, not `{` then `"`); Stencil allows every token sequence spelling it',
    "escapes": "Stencil accepts every JSON spelling of a string's characters (`\\u0063` for `c`), also"
    " under `pattern`/`enum`; llguidance only raw characters there",
    "raw-del": "Stencil allows a raw DEL (0x7F) in strings, as RFC 8259 does; llguidance escapes it",
    "negative-zero": "Stencil accepts `-0` where `minimum: 0` holds (it is 0); llguidance does not",
    "exponent": "Stencil accepts exponent notation where a bound is decided by the sign alone"
    " (`minimum: 0`); llguidance drops exponents under any bound",
    "bom-space": "`\\s` in a `pattern` follows ECMAScript, which counts U+FEFF as white space (its UTF-8"
    " lead byte starts the token); llguidance follows Unicode's White_Space",
    "second-eos": "Stencil allows every end-of-sequence id of the tokenizer (<|im_end|> and <|endoftext|>);"
    " llguidance was given one",
}


def _classify(vocab, matcher, theirs, token_id: int, text: bytes) -> str | None:
    """Which known difference explains that Stencil allows `token_id` after `text` and llguidance does not."""
    data = vocab.token_bytes[token_id]
    if token_id in vocab.eos_token_ids:
        return "second-eos"
    if not data:
        return None
    if 0x7F in data:
        return "raw-del"
    if b"\\" in data or (len(text) - len(text.rstrip(b"\\"))) % 2:  # an escape, or the rest of one
        return "escapes"
    if bytes(theirs.compute_ff_bytes()).startswith(data):
        return "forced-text"
    if "\ufeff".encode().startswith(data):
        return "bom-space"
    if data[:1] in (b"e", b"E") and data.lstrip(b"eE+-").isdigit() or data in (b"e", b"E", b"e-", b"e+", b"E-", b"E+"):
        return "exponent"
    if data == b"-":
        after = matcher.fork()
        after.advance(token_id)
        digits = [vocab.token_bytes.index(digit) for digit in (b"0", b"1")]
        if after.mask()[digits].tolist() == [True, False]:  # only a zero may follow the sign
            return "negative-zero"
    return None


def test_masks_agree_with_llguidance(vocab, hf_tokenizer):
    llguidance = pytest.importorskip("llguidance")
    text = reference_tokenizer().read_text()
    tokenizer = llguidance.LLTokenizer(text, n_vocab=vocab.size, eos_token=vocab.eos_token_ids[-1])
    defaults = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
    counts: Counter[str] = Counter()
    unexplained: list[str] = []
    for name, schema, instances in [("person", PERSON, [{"name": "Ada", "age": 36, "tags": ["a"]}]), *CASES]:
        ours = compile_or_none(schema, whitespace="compact")
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=defaults)
        if ours is None or llguidance.LLMatcher(tokenizer, grammar, log_level=0).is_error():
            counts["schemas supported by only one engine (skipped)"] += 1
            continue
        counts["schemas compared"] += 1
        for instance in instances:
            ids = hf_tokenizer.encode(
                canonical_json(schema, instance, whitespace="compact"), add_special_tokens=False
            ).ids
            matcher = ours.matcher(vocab)
            theirs = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
            for step, token_id in enumerate(ids):
                mine = matcher.mask().numpy()
                bits = np.unpackbits(np.frombuffer(theirs.compute_bitmask(), dtype=np.uint8), bitorder="little")
                other = bits[: vocab.size].astype(bool)
                counts["steps compared"] += 1
                for extra in np.flatnonzero(mine & ~other).tolist():
                    kind = _classify(vocab, matcher, theirs, extra, b"".join(vocab.token_bytes[i] for i in ids[:step]))
                    counts[kind or "unexplained"] += 1
                    if kind is None:
                        unexplained.append(
                            f"{name} step {step}: only Stencil allows {hf_tokenizer.id_to_token(extra)!r}"
                        )
                for missing in np.flatnonzero(other & ~mine).tolist():
                    counts["unexplained"] += 1
                    unexplained.append(
                        f"{name} step {step}: only llguidance allows {hf_tokenizer.id_to_token(missing)!r}"
                    )
                matcher.advance(token_id)
                if not theirs.consume_token(token_id):  # e.g. a number spelling llguidance does not emit
                    counts["instances whose canonical text llguidance rejects (comparison stops there)"] += 1
                    print(f"  llguidance rejects {name} at step {step}: {hf_tokenizer.decode(ids[: step + 1])[-40:]!r}")
                    break
    print("\nmask differences against llguidance:", dict(counts))
    for kind, why in KNOWN_DIFFERENCES.items():
        print(f"  {kind}: {why}")
    assert counts["schemas compared"] >= 10 and counts["steps compared"] > 500
    assert not unexplained, "\n".join(unexplained[:40])
