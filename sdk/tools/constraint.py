"""The constraint of a completion with tools, for each `tool_choice`.

    "none"       the answer's own constraint (free text: none): no call can be written
    "required"   one call, or with `parallel` one or more: each `<tool_call>` block (`sdk.tools.format`)
                 holds `{"name": <one tool's name>, "arguments": <JSON of that tool's schema>}`
    named        exactly one call, of that tool
    "auto"       the answer (free text that does not start with `MARKER`, or the typed `output=`'s
                 language) OR calls as for "required"

Every byte outside the arguments is fixed text (one lexeme per tool for the call's head, so the
name decides which arguments grammar follows); the arguments are each tool's own compiled schema,
embedded with its rules renamed, so `$defs` stay scoped to their tool. Free text and calls are told
apart by their first bytes: free text is "any UTF-8 text not starting with `MARKER`" (one lexeme;
its DFA has a state per position in the marker and then one accepting loop), so the model chooses at
its first token and the choice is never ambiguous. A typed answer is JSON, a label or grammar text;
one that could start with `MARKER` is refused with the output.

Keys stay distinct in every JSON object of the arguments (and of a JSON answer): the key scanner
(`grammars.core.distinct_keys`) starts after `MARKER` in a completion of calls (the call format's
fixed text is JSON or holds no JSON punctuation, so the whole block reads as JSON), and where the
answer's own JSON begins in a completion that is the answer; free text is never read as JSON.

Composed constraints are cached by (tools' names and schemas, choice, parallel, answer).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from grammars.compiler import Constraint, compile_grammar
from grammars.compose import _renamed
from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.charset import MAX_CODE_POINT, CharSet, utf8_term
from runtime.errors import RequestError
from sdk.tools.definitions import Tool, Toolset
from sdk.tools.format import ARGUMENTS_OPEN, CALL_CLOSE, CALL_OPEN, CALL_SEPARATOR, MARKER, NAME_OPEN

__all__ = ["ChoiceMode", "ToolChoice", "resolve_tool_choice", "tool_call_constraint"]

ChoiceMode = Literal["none", "auto", "required", "named"]

#: Composed constraints kept in memory.
MAX_CACHED_CONSTRAINTS = 64


@dataclass(frozen=True)
class ToolChoice:
    """A resolved `tool_choice`: its mode, and for "named" the tool's name."""

    mode: ChoiceMode
    name: str | None = None


def resolve_tool_choice(choice: object, tools: Toolset | None, *, field: str = "tool_choice") -> ToolChoice:
    """A `tool_choice` argument resolved against the tools.

    Args:
        choice: "auto", "required", "none"; or one tool as its name, its function, its Pydantic model,
            its `Tool`, or OpenAI's `{"type": "function", "function": {"name": ...}}`.
        tools: the call's tools (None: no tools, where only "none" and "auto" make sense).

    Raises:
        RequestError: an unknown mode, a tool not among `tools`, or a call forced without tools.
    """
    if choice == "none" or choice == "auto" or choice == "required":
        if tools is None and choice == "required":
            raise RequestError("forces a tool call, but no tools were given", field)
        return ToolChoice(choice)
    if tools is None:
        raise RequestError("names a tool, but no tools were given", field)
    name = _chosen_name(choice, tools)
    if name is None:
        raise RequestError(f'expected "auto", "required", "none" or one of the tools, got {choice!r}', field)
    if tools.get(name) is None:
        raise RequestError(f"no tool named {name!r} among {[tool.name for tool in tools]}", field)
    return ToolChoice("named", name)


def _chosen_name(choice: object, tools: Toolset) -> str | None:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, Tool):
        return choice.name
    if isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        return name if isinstance(name, str) else None
    for tool in tools:
        if tool.function is not None and tool.function is choice or tool.model is not None and tool.model is choice:
            return tool.name
    return None


_cache: OrderedDict[tuple[Any, ...], Constraint | None] = OrderedDict()
_cache_lock = threading.Lock()


def tool_call_constraint(
    tools: Toolset, choice: ToolChoice, *, parallel: bool, answer: Constraint | None
) -> Constraint | None:
    """The constraint of the whole completion (cached).

    Args:
        tools: the tools (each one's arguments constraint already compiled).
        choice: the resolved tool choice.
        parallel: allow more than one call ("required" and "auto").
        answer: the constraint of a non-call answer (`output=`), None for free text.

    Returns:
        None only for "none" without an answer constraint (free text).

    Raises:
        RequestError: an answer grammar with `%ignore` terms (whitespace allowed between the call
            format's fixed parts could not be told from it), or one whose language may start with
            `MARKER` ("auto" could not tell a call from an answer).
    """
    if choice.mode == "none":
        return answer
    key = (
        tuple((tool.name, json.dumps(tool.parameters, sort_keys=False, default=str), tool.strict) for tool in tools),
        choice,
        parallel,
        id(answer) if choice.mode == "auto" else None,
    )
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    constraint = _compose(tools, choice, parallel=parallel, answer=answer if choice.mode == "auto" else None)
    with _cache_lock:
        _cache[key] = constraint
        # Keyed by the answer's id: keep the answer alive with its entry, so the id is never reused.
        _answers[key] = answer
        while len(_cache) > MAX_CACHED_CONSTRAINTS:
            dropped, _ = _cache.popitem(last=False)
            _answers.pop(dropped, None)
    return constraint


_answers: dict[tuple[Any, ...], Constraint | None] = {}


def _compose(tools: Toolset, choice: ToolChoice, *, parallel: bool, answer: Constraint | None) -> Constraint:
    rules = ir.RuleSet()
    chosen = [tool for tool in tools if choice.mode != "named" or tool.name == choice.name]
    heads = []
    for index, tool in enumerate(chosen):
        head = ir.lit(CALL_OPEN + NAME_OPEN + tool.name + ARGUMENTS_OPEN)
        heads.append(ir.seq(head, _embedded(rules, tool.constraint, f"t{index}"), ir.lit(CALL_CLOSE)))
    call = rules.define("tool_call", ir.alt(*heads))
    is_many = parallel and choice.mode != "named"
    calls = ir.separated(call, ir.lit(CALL_SEPARATOR), 1, None if is_many else 1)
    description = f"tool calls ({', '.join(tool.name for tool in chosen)})"
    # Every tool's arguments are a JSON Schema grammar: their keys are tracked from the marker on.
    calls_keys_after = rx.literal(MARKER.encode("utf-8"))
    if choice.mode != "auto":
        return _keyed(rules.grammar(calls), calls_keys_after, description)
    if answer is None:
        text = rx.difference(rx.star(_ANY_CHAR), rx.concat(rx.literal(MARKER.encode("utf-8")), rx.ANYTHING))
        grammar = rules.grammar(ir.alt(ir.lex(text, "text"), calls))
        return _keyed(grammar, calls_keys_after, f"text or {description}")
    if answer.grammar.ignore:
        raise RequestError("an output grammar with %ignore cannot be combined with tool calls", "output")
    if answer.automaton.walk(answer.automaton.initial, MARKER.encode("utf-8")) is not None:
        raise RequestError(f"the output's language may start with {MARKER!r}, which starts a tool call", "output")
    grammar = rules.grammar(ir.alt(_embedded(rules, answer, "answer"), calls))
    # An answer never starts with the marker, so there only its own prefix opens the scanner; in a
    # call the marker opens it at the latest, and any earlier opening skips only marker bytes.
    answer_keys_after = answer.grammar.distinct_keys_after
    keys_after = calls_keys_after if answer_keys_after is None else rx.alt(calls_keys_after, answer_keys_after)
    return _keyed(grammar, keys_after, f"{answer.description} or {description}")


def _keyed(grammar: ir.Grammar, keys_after: rx.Term, description: str) -> Constraint:
    """The constraint of `grammar`, its JSON keys kept distinct after `keys_after`."""
    grammar.distinct_keys_after = keys_after
    return compile_grammar(grammar, description)


#: One Unicode scalar value, UTF-8 encoded.
_ANY_CHAR = utf8_term(CharSet.range(0, MAX_CODE_POINT))


def _embedded(rules: ir.RuleSet, constraint: Constraint, prefix: str) -> ir.Expr:
    """A reference to `constraint`'s grammar, its rules copied into `rules` under `prefix`ed names.

    The prefix, unique per embedded grammar, keeps names apart: `RuleSet.reserve` numbers a repeated
    hint `x` as `x__1`, which another grammar may already use as a rule name of its own.
    """
    grammar = constraint.grammar
    names = {name: rules.reserve(f"{prefix}_{name}") for name in grammar.rules}
    for name, expr in grammar.rules.items():
        rules.set(names[name], _renamed(expr, names))
    return ir.ref(names[grammar.start])
