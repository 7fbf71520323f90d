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
        if isinstance(node, ir.Ref):
            found.add(node.name)
        elif isinstance(node, ir.Seq):
            todo.extend(node.items)
        elif isinstance(node, ir.Alt):
            todo.extend(node.options)
        elif isinstance(node, ir.Repeat):
            todo.append(node.item)
    return found


def _least_fixpoint(rules: dict[str, ir.Expr], holds: Callable[[ir.Expr, set[str]], bool]) -> set[str]:
    """The smallest set S of rules with `holds(rules[r], S)` for every r in S (holds is monotone):
    a rule is re-examined only when a rule it refers to joins S."""
    users: dict[str, list[str]] = {name: [] for name in rules}
    for name, expr in rules.items():
        for ref in rule_refs(expr):
            if ref in users:
                users[ref].append(name)
    found: set[str] = set()
    todo = list(rules)
    while todo:
        name = todo.pop()
        if name not in found and holds(rules[name], found):
            found.add(name)
            todo.extend(user for user in users[name] if user not in found)
    return found


def nullable_rules(rules: dict[str, ir.Expr]) -> set[str]:
    """Rules that derive the empty string."""
    return _least_fixpoint(rules, is_nullable)


def is_nullable(expr: ir.Expr, nullable: set[str]) -> bool:
    return _derives(expr, nullable, lambda lexeme: lexeme.term.nullable)


def productive_rules(rules: dict[str, ir.Expr]) -> set[str]:
    """Rules that derive at least one string (the others can never finish)."""
    return _least_fixpoint(rules, lambda expr, productive: _derives(expr, productive, lambda lexeme: True))


def _derives(expr: ir.Expr, known: set[str], lexeme_derives: Callable[[ir.Lexeme], bool]) -> bool:
    """Whether `expr` derives a string of the kind asked (empty, or any), given the rules in `known` do."""
    if isinstance(expr, ir.Lexeme):
        return lexeme_derives(expr)
    if isinstance(expr, ir.Ref):
        return expr.name in known
    if isinstance(expr, ir.Seq):
        return all(_derives(e, known, lexeme_derives) for e in expr.items)
    if isinstance(expr, ir.Alt):
        return any(_derives(e, known, lexeme_derives) for e in expr.options)
    return expr.min == 0 or _derives(expr.item, known, lexeme_derives)  # Repeat


def reachable_rules(rules: dict[str, ir.Expr], start: str) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for ref in rule_refs(rules[todo.pop()]):
            if ref not in seen and ref in rules:
                seen.add(ref)
                todo.append(ref)
    return seen


def left_calls(expr: ir.Expr, nullable: set[str]) -> set[str]:
    """Rules `expr` may call before consuming any input."""
    if isinstance(expr, ir.Ref):
        return {expr.name}
    if isinstance(expr, ir.Seq):
        found: set[str] = set()
        for item in expr.items:
            found |= left_calls(item, nullable)
            if not is_nullable(item, nullable):
                break
        return found
    if isinstance(expr, ir.Alt):
        return set().union(*(left_calls(e, nullable) for e in expr.options)) if expr.options else set()
    if isinstance(expr, ir.Repeat):
        return left_calls(expr.item, nullable)
    return set()


def left_call_graph(rules: dict[str, ir.Expr]) -> dict[str, set[str]]:
    """Rule -> the rules it may call before consuming input."""
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
