"""What the prompt says the model should write: the output's form, the way a model reads it.

`describe_output` turns a resolved output into one instruction: its labels, the shape of its JSON,
its regex or its grammar. A JSON Schema is written as the shape of the expected JSON, not the schema.

Small models copy what they see, so `{"name": string, "age": integer}` works better in a prompt
than the schema document that says the same. Field descriptions become `//` comments, enums and
constants become their literal values joined by `|`, `$ref`s are expanded (a recursive reference
is written by its name), and a field's type is written once however deeply it nests.

A description is at most `MAX_DESCRIPTION_CHARS` long, since it is paid for in context window and
prefill time on every call while the constraint already enforces the full form: a large schema is
abridged (shallower nesting, then fewer fields and options), a large grammar is summarized (the start
rule and the rules it reaches first), and long option lists and patterns are cut, each with a note
saying the constraint enforces the rest. Small outputs are written in full.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grammars.specs import GBNF, Choice, Lark, Regex

if TYPE_CHECKING:
    from sdk.outputs import OutputSpec

__all__ = ["MAX_DESCRIPTION_CHARS", "describe_output", "describe_schema"]

#: Longest output description put in a prompt: 500-1,200 tokens of the embedded model (grammar text
#: tokenizes densest), a seventh of its context window at most.
MAX_DESCRIPTION_CHARS = 2_000
#: Deepest nesting written out in full; deeper objects are written as `object`.
MAX_DEPTH = 6
_INDENT = "  "
#: (deepest nesting, most fields/options/branches per node) tried in turn until a schema's shape fits.
_ABRIDGEMENTS: tuple[tuple[int, int | None], ...] = (
    (MAX_DEPTH, None),
    (4, None),
    (3, None),
    (2, None),
    (1, None),
    (2, 50),
    (1, 50),
    (2, 20),
    (1, 20),
    (1, 8),
    (1, 3),
)
_ABRIDGED_NOTE = "\n(abridged; the constraint enforces the full schema)"
_CUT = " ..."


def describe_output(spec: OutputSpec) -> str | None:
    """How the prompt tells the model what to write, in at most `MAX_DESCRIPTION_CHARS` characters.

    Args:
        spec: the resolved output.

    Returns:
        One instruction, or None for free text (nothing to say).
    """
    output = spec.output
    if spec.labels is not None:
        return _one_of(spec.labels)
    if spec.json_schema is not None:
        head = "Respond with JSON of this form:\n"
        return head + describe_schema(spec.json_schema, max_chars=MAX_DESCRIPTION_CHARS - len(head))
    if isinstance(output, Choice):
        return _one_of(output.options)
    if isinstance(output, Regex):
        head = "Respond with text that matches the regular expression "
        note = " (cut; the constraint enforces the full pattern)"
        room = MAX_DESCRIPTION_CHARS - len(head)
        pattern = output.pattern if len(output.pattern) <= room else _clip(output.pattern, room - len(note)) + note
        return head + pattern
    if isinstance(output, Lark):
        return _describe_grammar(output)
    if isinstance(output, GBNF):
        head = f"Respond with text in this grammar (GBNF syntax, start rule {output.start!r}):\n"
        note = "\n... (cut; the constraint enforces the full grammar)"
        room = MAX_DESCRIPTION_CHARS - len(head)
        return head + (output.text if len(output.text) <= room else _clip(output.text, room - len(note)) + note)
    return None


def describe_schema(schema: Mapping[str, Any] | bool, *, max_chars: int | None = None) -> str:
    """The shape of the JSON that `schema` accepts, as a short multi-line text.

    Args:
        schema: a JSON Schema (dict or bool).
        max_chars: the longest text to return. A longer shape is abridged: nested objects written as
            `object`, then fields, enum values and union branches past a count written as
            `... N more`, with a closing note; as a last resort it is cut. None: no bound.

    Returns:
        E.g. '{\\n  "name": string,\\n  "age": integer  // in years\\n}'.
    """
    defs = _definitions(schema) if isinstance(schema, Mapping) else {}
    if max_chars is None:
        return _Writer(defs).shape(schema, depth=0, seen=())
    text = ""
    for index, (max_depth, max_items) in enumerate(_ABRIDGEMENTS):
        room = max_chars if index == 0 else max_chars - len(_ABRIDGED_NOTE)
        writer = _Writer(defs, max_depth=max_depth, max_items=max_items, max_chars=room)
        try:
            text = writer.shape(schema, depth=0, seen=())
        except _TooLong:
            continue
        if len(text) <= room:
            return text if index == 0 else text + _ABRIDGED_NOTE
    if not text:  # even the tightest abridgement overflowed: write it whole once, to cut it
        text = _Writer(defs, max_depth=1, max_items=_ABRIDGEMENTS[-1][1]).shape(schema, depth=0, seen=())
    return _clip(text, max_chars - len(_ABRIDGED_NOTE)) + _ABRIDGED_NOTE


def _one_of(options: Sequence[str]) -> str:
    head, end = "Respond with exactly one of: ", "."
    room = MAX_DESCRIPTION_CHARS - len(head) - len(end)
    if _fitting(options, ", ", room) == len(options):
        return head + ", ".join(options) + end
    note = ", ... ({} more; the constraint enforces the full list)"
    num_shown = _fitting(options, ", ", room - len(note.format(len(options))))
    return head + ", ".join(options[:num_shown]) + note.format(len(options) - num_shown) + end


def _fitting(parts: Sequence[str], separator: str, room: int) -> int:
    """How many of `parts`, from the first, fit in `room` characters joined by `separator`."""
    used = -len(separator)
    for count, part in enumerate(parts):
        used += len(separator) + len(part)
        if used > room:
            return count
    return len(parts)


def _clip(text: str, room: int) -> str:
    """`text` cut to `room` characters, the cut marked."""
    return text if len(text) <= room else text[: max(0, room - len(_CUT))] + _CUT


# Lark grammars

#: The head of a rule or terminal definition: `?name`, `!name`, `name.2`, `name{x}`, then `:`.
_DEFINITION = re.compile(r"[?!]?([A-Za-z_]\w*)(?:\.-?\d+)?(?:\{[^}\n]*\})?\s*:")
#: A grammar's tokens: string literals and regexps (skipped), comments (skipped), names (group 1).
_GRAMMAR_TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|/(?!/)(?:\\.|[^/\\\n])+/|//[^\n]*|([A-Za-z_]\w*)')


@dataclass(frozen=True)
class _Block:
    """A rule, terminal or `%` directive of a grammar, as written, and the names its body refers to."""

    text: str
    name: str | None  # None for a directive
    refs: frozenset[str]


def _describe_grammar(output: Lark) -> str:
    """The grammar whole when it fits, else the start rule, the directives, and the definitions it
    reaches first (breadth first), as many as fit."""
    head = f"Respond with text in this grammar (Lark syntax, start rule {output.start!r}):\n"
    if len(head) + len(output.text) <= MAX_DESCRIPTION_CHARS:
        return head + output.text
    blocks = _reached_first(_grammar_blocks(output.text), output.start)
    num_definitions = sum(block.name is not None for block in blocks)
    note = "\n... ({} more rules and terminals; the constraint enforces the full grammar)"
    room = MAX_DESCRIPTION_CHARS - len(head) - len(note.format(num_definitions))
    texts = [block.text for block in blocks] or [output.text]
    num_shown = _fitting(texts, "\n", room)
    body = "\n".join(texts[:num_shown]) if num_shown else _clip(texts[0], room)  # the first one, cut
    num_omitted = num_definitions - sum(block.name is not None for block in blocks[: max(num_shown, 1)])
    return head + body + note.format(num_omitted)


def _grammar_blocks(text: str) -> list[_Block]:
    """The grammar's definitions and `%` directives in file order, without comment lines.

    A definition runs from the line that starts with its name until the next definition or directive;
    lines before the first are dropped.
    """
    found: list[tuple[str | None, int, list[str]]] = []  # name, where its body starts, lines
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("//"):
            continue
        match = _DEFINITION.match(stripped)
        if stripped.startswith("%"):
            found.append((None, 0, [line.rstrip()]))
        elif match is not None:
            found.append((match.group(1), len(line) - len(line.lstrip()) + match.end(), [line.rstrip()]))
        elif found and found[-1][0] is not None:
            found[-1][2].append(line.rstrip())
    blocks = []
    for name, body_start, lines in found:
        block = "\n".join(lines)
        refs = {match.group(1) for match in _GRAMMAR_TOKEN.finditer(block, body_start) if match.group(1)}
        blocks.append(_Block(block, name, frozenset(refs) if name is not None else frozenset()))
    return blocks


def _reached_first(blocks: Sequence[_Block], start: str) -> list[_Block]:
    """The start rule, the directives, the definitions the start rule reaches (breadth first over
    the names each refers to), then the others, in file order."""
    definitions = [block for block in blocks if block.name is not None]
    by_name: dict[str | None, list[_Block]] = {}
    for block in definitions:
        by_name.setdefault(block.name, []).append(block)
    reached = list(by_name.get(start, ()))
    seen = {start}
    for block in reached:  # grows while it is walked: breadth first
        for name in sorted(block.refs - seen):
            seen.add(name)
            reached.extend(by_name.get(name, ()))
    directives = [block for block in blocks if block.name is None]
    rest = [block for block in definitions if block.name not in seen]
    return [*reached[:1], *directives, *reached[1:], *rest]


# JSON Schemas


def _definitions(schema: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for section in ("$defs", "definitions"):
        for name, sub in (schema.get(section) or {}).items():
            found[f"#/{section}/{name}"] = sub
    return found


class _TooLong(Exception):
    """The shape being written is already longer than its bound (so an abridged one is tried)."""


class _Writer:
    """Writes a schema's shape; with `max_chars`, gives up (`_TooLong`) as soon as the text it has
    written exceeds it, so a schema whose `$ref`s expand to a huge text costs no more than the bound."""

    def __init__(
        self,
        defs: Mapping[str, Any],
        *,
        max_depth: int = MAX_DEPTH,
        max_items: int | None = None,
        max_chars: int | None = None,
    ) -> None:
        self.defs = defs
        self.max_depth = max_depth
        self.max_items = max_items
        self.max_chars = max_chars
        self.num_chars = 0  # written so far, not counting brackets and separators: at most the text's length

    def shape(self, schema: Any, *, depth: int, seen: tuple[str, ...]) -> str:
        if schema is True or schema == {}:
            return self._leaf("any")
        if schema is False:
            return self._leaf("nothing")
        ref = schema.get("$ref")
        if isinstance(ref, str):
            if ref in seen or ref not in self.defs:
                return self._leaf(ref.rsplit("/", 1)[-1])
            return self.shape(self.defs[ref], depth=depth, seen=(*seen, ref))
        if "const" in schema:
            return self._leaf(json.dumps(schema["const"], ensure_ascii=False))
        if "enum" in schema:
            return self._union(
                [self._leaf(json.dumps(v, ensure_ascii=False)) for v in self._first(schema["enum"])],
                len(schema["enum"]),
            )
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                branches = schema[combinator]
                return self._union(
                    [self.shape(s, depth=depth, seen=seen) for s in self._first(branches)], len(branches)
                )
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return self.shape(schema["allOf"][0], depth=depth, seen=seen)
        kind = schema.get("type")
        if isinstance(kind, list):
            return " | ".join(self.shape({**schema, "type": k}, depth=depth, seen=seen) for k in kind)
        if kind == "object" or "properties" in schema:
            return self._object(schema, depth=depth, seen=seen)
        if kind == "array":
            return self._array(schema, depth=depth, seen=seen)
        if kind == "string" and "format" in schema:
            return self._leaf(f"string ({schema['format']})")
        return self._leaf(kind if isinstance(kind, str) else "any")

    def _object(self, schema: Mapping[str, Any], *, depth: int, seen: tuple[str, ...]) -> str:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        if not properties or depth >= self.max_depth:
            extra = schema.get("additionalProperties")
            if isinstance(extra, Mapping) and extra:
                return f"{{string: {self.shape(extra, depth=depth + 1, seen=seen)}}}"
            return self._leaf("object")
        required = set(schema.get("required") or ())
        pad = _INDENT * (depth + 1)
        shown = self._first(list(properties.items()))
        lines = []
        for index, (name, sub) in enumerate(shown):
            comma = "," if index < len(properties) - 1 else ""
            description = sub.get("description") if isinstance(sub, Mapping) else None
            notes = [" ".join(str(description).split())] if description else []
            if name not in required:
                notes.append("optional")
            comment = f"  // {'; '.join(notes)}" if notes else ""
            key = f"{pad}{json.dumps(name, ensure_ascii=False)}: "
            self._count(len(key) + len(comment))
            value = self.shape(sub, depth=depth + 1, seen=seen)
            lines.append(f"{key}{value}{comma}{comment}")
        if len(shown) < len(properties):
            lines.append(self._leaf(f"{pad}// ... {len(properties) - len(shown)} more properties"))
        return "{\n" + "\n".join(lines) + "\n" + _INDENT * depth + "}"

    def _array(self, schema: Mapping[str, Any], *, depth: int, seen: tuple[str, ...]) -> str:
        items = schema.get("items", True)
        prefix: object
        if isinstance(items, list):  # drafts 4 to 2019-09: a list of `items` is what `prefixItems` became
            prefix, items = items, schema.get("additionalItems", True)
        else:
            prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            shapes = [self.shape(s, depth=depth + 1, seen=seen) for s in self._first(prefix)]
            if len(shapes) < len(prefix):
                shapes.append(self._leaf(f"... {len(prefix) - len(shapes)} more"))
            return "[" + ", ".join(shapes) + "]"
        return f"[{self.shape(items, depth=depth, seen=seen)}, ...]"

    def _union(self, shapes: list[str], num_options: int) -> str:
        if len(shapes) < num_options:
            shapes.append(self._leaf(f"... {num_options - len(shapes)} more"))
        return " | ".join(shapes)

    def _first(self, items: Sequence[Any]) -> Sequence[Any]:
        """The items written out: all, or the first `max_items`."""
        return items if self.max_items is None else items[: self.max_items]

    def _leaf(self, text: str) -> str:
        """`text`, counted against `max_chars`."""
        self._count(len(text))
        return text

    def _count(self, num_chars: int) -> None:
        self.num_chars += num_chars
        if self.max_chars is not None and self.num_chars > self.max_chars:
            raise _TooLong
