"""Facts about a grammar's rules: references, nullability, productivity, left calls and their cycles.

Every analysis here is linear in the grammar's size (worklists and Tarjan's algorithm, not repeated
sweeps), because generated grammars are big: a JSON Schema with 5,000 optional properties or
10,000 levels of nesting has as many rules.
"""

from __future__ import annotations

from collections.abc import Callable

from grammars.core import ir
from grammars.errors import GrammarError


def rule_refs(expr: ir.Expr) -> set[str]:
    """Names of the rules `expr` refers to."""
    found: set[str] = set()
    todo = [expr]
    while todo:
        node = todo.pop()
        kind = type(node)  # exact types (the IR has no subclasses): the hottest walk of a compile
        if kind is ir.Ref:
            found.add(node.name)  # type: ignore[union-attr]
        elif kind is ir.Seq:
            todo += node.items  # type: ignore[union-attr]
        elif kind is ir.Alt:
            todo += node.options  # type: ignore[union-attr]
        elif kind is ir.Repeat:
            todo.append(node.item)  # type: ignore[union-attr]
    return found


def rule_users(refs: dict[str, set[str]]) -> dict[str, list[str]]:
    """Rule -> the rules that refer to it (from rule -> `rule_refs` of its body): what the fixpoints
    below re-examine when a rule joins."""
    users: dict[str, list[str]] = {name: [] for name in refs}
    for name, called in refs.items():
        for ref in called:
            if ref in users:
                users[ref].append(name)
    return users


def _least_fixpoint(
    rules: dict[str, ir.Expr], holds: Callable[[ir.Expr, set[str]], bool], users: dict[str, list[str]] | None
) -> set[str]:
    """The smallest set S of rules with `holds(rules[r], S)` for every r in S (holds is monotone):
    a rule is re-examined only when a rule it refers to joins S."""
    if users is None:
        users = rule_users({name: rule_refs(expr) for name, expr in rules.items()})
    found: set[str] = set()
    todo = list(rules)
    while todo:
        name = todo.pop()
        if name not in found and holds(rules[name], found):
            found.add(name)
            todo.extend(user for user in users[name] if user not in found)
    return found


def nullable_rules(rules: dict[str, ir.Expr], users: dict[str, list[str]] | None = None) -> set[str]:
    """Rules that derive the empty string (`users`: `rule_users` of `rules`, when the caller has it)."""
    return _least_fixpoint(rules, is_nullable, users)


def is_nullable(expr: ir.Expr, nullable: set[str]) -> bool:
    return _derives(expr, nullable, lambda lexeme: lexeme.term.nullable)


def productive_rules(rules: dict[str, ir.Expr], users: dict[str, list[str]] | None = None) -> set[str]:
    """Rules that derive at least one string (the others can never finish)."""
    return _least_fixpoint(rules, lambda expr, productive: _derives(expr, productive, lambda lexeme: True), users)


def _derives(expr: ir.Expr, known: set[str], lexeme_derives: Callable[[ir.Lexeme], bool]) -> bool:
    """Whether `expr` derives a string of the kind asked (empty, or any), given the rules in `known` do."""
    kind = type(expr)
    if kind is ir.Ref:
        return expr.name in known  # type: ignore[union-attr]
    if kind is ir.Lexeme:
        return lexeme_derives(expr)  # type: ignore[arg-type]
    if kind is ir.Seq:
        for item in expr.items:  # type: ignore[union-attr]
            if not _derives(item, known, lexeme_derives):
                return False
        return True
    if kind is ir.Alt:
        for option in expr.options:  # type: ignore[union-attr]
            if _derives(option, known, lexeme_derives):
                return True
        return False
    return expr.min == 0 or _derives(expr.item, known, lexeme_derives)  # type: ignore[union-attr]  # Repeat


def reachable_rules(rules: dict[str, ir.Expr], start: str, refs: dict[str, set[str]] | None = None) -> set[str]:
    """Rules reachable from `start` (`refs`: rule -> `rule_refs` of its body, when the caller has it)."""
    seen = {start}
    todo = [start]
    while todo:
        name = todo.pop()
        for ref in rule_refs(rules[name]) if refs is None else refs[name]:
            if ref not in seen and ref in rules:
                seen.add(ref)
                todo.append(ref)
    return seen


def left_calls(expr: ir.Expr, nullable: set[str]) -> set[str]:
    """Rules `expr` may call before consuming any input."""
    kind = type(expr)
    if kind is ir.Ref:
        return {expr.name}  # type: ignore[union-attr]
    if kind is ir.Seq:
        found: set[str] = set()
        for item in expr.items:  # type: ignore[union-attr]
            found |= left_calls(item, nullable)
            if not is_nullable(item, nullable):
                break
        return found
    if kind is ir.Alt:
        return set().union(*(left_calls(e, nullable) for e in expr.options))  # type: ignore[union-attr]
    if kind is ir.Repeat:
        return left_calls(expr.item, nullable)  # type: ignore[union-attr]
    return set()


def left_call_graph(rules: dict[str, ir.Expr], nullable: set[str] | None = None) -> dict[str, set[str]]:
    """Rule -> the rules it may call before consuming input.

    `nullable`: `nullable_rules(rules)`, when the caller has it (language-preserving rewrites keep it).
    """
    if nullable is None:
        nullable = nullable_rules(rules)
    return {name: left_calls(expr, nullable) & rules.keys() for name, expr in rules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of `graph` (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def check_no_left_recursion(rules: dict[str, ir.Expr]) -> None:
    """Raises GrammarError naming a cycle if some rule can call itself without consuming input."""
    graph = left_call_graph(rules)
    for component in strongly_connected(graph):
        if len(component) > 1 or component[0] in graph[component[0]]:
            raise GrammarError("left recursion is not supported: " + " -> ".join(_cycle(component, graph)))


def _cycle(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A cycle through the first member of a strongly connected component, for the message."""
    members = set(component)
    start = min(component)
    path = [start]
    seen = {start}
    node = start
    while True:
        nxt = min(graph[node] & members)
        if nxt in seen:
            return path[path.index(nxt) :] + [nxt]
        path.append(nxt)
        seen.add(nxt)
        node = nxt
