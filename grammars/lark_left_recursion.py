"""Turning indirect left recursion into direct left recursion, which the parser rewrites into loops.

Lark grammars reach left recursion through helper rules all the time (`?from_item: join | name` with
`join: from_item "JOIN" from_item`), since Lark's LALR and Earley parsers take it. Our parser
(`grammars.parser`, after `grammars.normalize`) turns *direct* left recursion (`a: a "x" | "y"`)
into a loop and refuses the indirect kind. This module closes the gap the classic way: while some
rule `a` calls `b` first and `b` leads back to `a`, substitute `b`'s alternatives for the leading
`b` in `a` (Paull's substitution step), which preserves the language and shortens the cycle, until
the recursion is direct. The rule chosen is the first of its cycle for which that works, each callee
being substituted at most once (so the rewrite always ends). Alternatives are first spread out at
their head (`(x | y) z` gives `x z` and `y z`; `[x] y` gives `x y` and `y`) so that left calls in
groups and optional prefixes are seen.
"""

from __future__ import annotations

from grammars import ir
from grammars.normalize import left_calls, nullable_rules

#: Rules made directly recursive before giving up (the parser then reports what is left).
MAX_ROUNDS = 100
#: Alternatives one rule may be spread into.
MAX_HEAD_OPTIONS = 512

Option = tuple[ir.Expr, ...]


def remove_indirect_left_recursion(rules: dict[str, ir.Expr]) -> dict[str, ir.Expr]:
    """Rules with the same language whose left recursion, if any, is direct (`a: a ... | ...`).

    Returns the rules unchanged where a cycle cannot be resolved within the budgets (a left call
    behind a nullable rule, say); the parser then reports that cycle.
    """
    rules = dict(rules)
    for _ in range(MAX_ROUNDS):
        graph = _left_call_graph(rules)
        cyclic = [name for name in rules if _leads_back(name, graph[name] - {name}, graph)]
        resolved = None
        for name in cyclic:
            resolved = _make_direct(name, rules, graph)
            if resolved is not None:
                rules[name] = resolved
                break
        if resolved is None:
            break
    graph = _left_call_graph(rules)
    for name, expr in rules.items():
        if name in graph[name]:
            options = _head_options(expr)
            if options is not None:
                rules[name] = ir.alt(*(ir.seq(*o) for o in options))
    return rules


def _left_call_graph(rules: dict[str, ir.Expr]) -> dict[str, set[str]]:
    nullable = nullable_rules(rules)
    return {name: left_calls(expr, nullable) for name, expr in rules.items()}


def _leads_back(target: str, starts: set[str], graph: dict[str, set[str]]) -> bool:
    """Whether some rule in `starts` reaches `target` through left calls."""
    seen = set(starts)
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node == target:
            return True
        for nxt in graph.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def _make_direct(name: str, rules: dict[str, ir.Expr], graph: dict[str, set[str]]) -> ir.Expr | None:
    """`name`'s body with every leading call that leads back to `name` substituted, each callee at
    most once; None if that does not make the recursion direct."""
    body = rules[name]
    substituted: set[str] = set()
    while True:
        options = _head_options(body)
        if options is None:
            return None
        callees = {o[0].name for o in options if o and isinstance(o[0], ir.Ref) and o[0].name != name}
        returning = sorted(c for c in callees if _leads_back(name, {c}, graph))
        if not returning:
            return body if substituted else None
        callee = returning[0]
        if callee in substituted:
            return None
        substituted.add(callee)
        body = _substitute(options, callee, rules[callee])
        if body is None:
            return None


def _substitute(options: list[Option], callee: str, callee_body: ir.Expr) -> ir.Expr | None:
    """The alternatives `options` with every leading call of `callee` replaced by its alternatives."""
    callee_options = _head_options(callee_body)
    if callee_options is None:
        return None
    result: list[Option] = []
    for option in options:
        if option and option[0] == ir.Ref(callee):
            result.extend(inner + option[1:] for inner in callee_options)
        else:
            result.append(option)
    if len(result) > MAX_HEAD_OPTIONS:
        return None
    return ir.alt(*(ir.seq(*o) for o in result))


def _head_options(expr: ir.Expr) -> list[Option] | None:
    """`expr` as alternatives whose first item is a lexeme or a rule call (or that are empty);
    None past MAX_HEAD_OPTIONS."""
    result: list[Option] = []
    todo: list[Option] = [(expr,)]
    while todo:
        option = todo.pop()
        if not option:
            result.append(option)
            continue
        first, rest = option[0], option[1:]
        if isinstance(first, ir.Seq):
            todo.append(first.items + rest)
        elif isinstance(first, ir.Alt):
            todo.extend((o,) + rest for o in first.options)
        elif isinstance(first, ir.Repeat):
            todo.extend(_unroll_head(first, rest))
        else:
            result.append(option)
        if len(result) + len(todo) > MAX_HEAD_OPTIONS:
            return None
    result.reverse()
    return result


def _unroll_head(repeat: ir.Repeat, rest: Option) -> list[Option]:
    """`x{m,n} rest` as `x x{m-1,n-1} rest` (plus `rest` when m == 0)."""
    later = ir.repeat(repeat.item, max(repeat.min - 1, 0), None if repeat.max is None else repeat.max - 1)
    options = [(repeat.item, later) + rest]
    if repeat.min == 0:
        options.append(rest)
    return options
