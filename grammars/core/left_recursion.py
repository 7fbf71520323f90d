"""Left recursion: found, and rewritten into loops, which the stack-set parser needs.

The parser (`grammars.core.parser`) cannot run a rule that calls itself before consuming input: its stacks
would grow forever. Grammars reach left recursion directly (`sum: sum "+" term | term`) and through
helper rules (`?from_item: join | name` with `join: from_item "JOIN" from_item`), since Lark's
parsers take both. Direct left recursion becomes a loop (`a: a x | y` is `a: y x*`). Indirect
recursion is first made direct the classic way: while some rule `a` calls `b` first and `b` leads
back to `a`, substitute `b`'s alternatives for the leading `b` in `a` (Paull's substitution step),
which preserves the language and shortens the cycle, until the recursion is direct. The rule chosen is the first of its cycle for which that works, each callee
being substituted at most once (so the rewrite always ends). Alternatives are first spread out at
their head (`(x | y) z` gives `x z` and `y z`; `[x] y` gives `x y` and `y`) so that left calls in
groups and optional prefixes are seen.
"""

from __future__ import annotations

from grammars.core import ir
from grammars.core.analysis import left_call_graph, left_calls, nullable_rules, rule_refs, strongly_connected

#: Rules made directly recursive before giving up (the parser then reports what is left).
MAX_ROUNDS = 100
#: Alternatives one rule may be spread into.
MAX_HEAD_OPTIONS = 512

Option = tuple[ir.Expr, ...]


def remove_left_recursion(rules: dict[str, ir.Expr], nullable: set[str] | None = None) -> dict[str, ir.Expr]:
    """Rules with the same language and no left recursion, where the rewrite succeeds.

    Where a cycle cannot be resolved within the budgets (a left call behind a nullable rule, say),
    it is left in place and `check_no_left_recursion` (called by the parser) reports it.
    `nullable`: `nullable_rules(rules)`, when the caller has it.
    """
    rules, graph = _make_recursion_direct(rules, nullable_rules(rules) if nullable is None else nullable)
    # Only a rule among its own left calls can have an option that starts with itself.
    return {
        name: _direct_recursion_as_loop(name, expr) if name in graph[name] else expr for name, expr in rules.items()
    }


def _make_recursion_direct(
    rules: dict[str, ir.Expr], nullable: set[str]
) -> tuple[dict[str, ir.Expr], dict[str, set[str]]]:
    """The rules with indirect recursion made direct where that works, and their left-call graph."""
    # Every rewrite keeps each rule's language, so `nullable` stays true and only the rewritten
    # rule's left calls change: the graph is built once and patched.
    rules = dict(rules)
    graph = left_call_graph(rules, nullable)
    for _ in range(MAX_ROUNDS):
        cyclic = [name for component in strongly_connected(graph) if len(component) > 1 for name in sorted(component)]
        resolved = None
        for name in cyclic:
            resolved = _make_direct(name, rules, graph)
            if resolved is not None:
                rules[name] = resolved
                graph[name] = left_calls(resolved, nullable) & rules.keys()
                break
        if resolved is None:
            break
    for name, expr in rules.items():
        if name in graph[name]:
            options = _head_options(expr)
            if options is not None:
                rules[name] = ir.alt(*(ir.seq(*o) for o in options))  # the same left calls
    return rules, graph


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
        direct = _substitute(options, callee, rules[callee])
        if direct is None:
            return None
        body = direct


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


def _direct_recursion_as_loop(name: str, expr: ir.Expr) -> ir.Expr:
    """A -> A a1 | ... | b1 | ...  becomes  A -> (b1 | ...) (a1 | ...)*  (same language).

    Binary operators written both left- and right-recursive (`e: e "+" e | atom`) leave a loop whose
    options end with A again, which is ambiguous: the parser would track one stack per way to nest a
    chain. When neither the bases B nor the loop prefixes mention A, such a trailing A is replaced by
    B: the least solution of A = B (a A | c)* is B (a B | c)*, so the language is unchanged.
    """
    options = expr.options if isinstance(expr, ir.Alt) else (expr,)
    recursive: list[ir.Expr] = []
    base: list[ir.Expr] = []
    for option in options:
        items = option.items if isinstance(option, ir.Seq) else (option,)
        if items and items[0] == ir.Ref(name):
            recursive.append(ir.seq(*items[1:]))
        else:
            base.append(option)
    if not recursive:
        return expr
    head = ir.alt(*base) if base else ir.NOTHING
    recursive = _trailing_self_as_base(name, head, recursive)
    return ir.seq(head, ir.star(ir.alt(*recursive)))


def _trailing_self_as_base(name: str, head: ir.Expr, loop_options: list[ir.Expr]) -> list[ir.Expr]:
    self_ref = ir.Ref(name)
    prefixes = [o.items[:-1] if isinstance(o, ir.Seq) and o.items[-1] == self_ref else None for o in loop_options]
    others = [item for o, p in zip(loop_options, prefixes) for item in ((o,) if p is None else p)]
    if any(name in rule_refs(e) for e in (head, *others)):
        return loop_options
    return [o if p is None else ir.seq(*p, head) for o, p in zip(loop_options, prefixes)]
