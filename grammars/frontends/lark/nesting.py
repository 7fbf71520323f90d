"""Depth budget of Lark grammar text, checked on the parse tree before Lark's loader runs.

Lark's loader and our translation walk a definition's tree recursively, and Lark inlines terminals
into the terminals that use them (so `T0: T1`, `T1: T2`, ... nests as deep as the chain is long).
Deep input would end in a `RecursionError` (and a chain of a thousand terminals takes Lark half a
minute to fail), so nesting is measured here, without recursion, on the tree of Lark's own LALR
parser of its syntax, and refused past MAX_NESTING with the position of the offending part.
"""

from __future__ import annotations

from lark import Token, Tree

#: Groups (`( )`, `[ ]`, template arguments) nested in one definition, counting for a terminal the
#: levels of the terminals it uses, since Lark inlines them. Matches the regex front end's budget.
MAX_NESTING = 100

#: Tree nodes that open one level: a group's alternatives, and a template usage.
_LEVELS = ("expansions", "template_usage")


def nesting_problem(tree: Tree) -> tuple[str, int] | None:
    """What nests deeper than MAX_NESTING in a grammar, if anything, and its text offset.

    Args:
        tree: Lark's parse tree of a grammar text (its grammar parser's "start").
    Returns:
        None, or (reason, offset): a group nested too deep (at its first token), or a terminal whose
        inlined terminals nest too deep (at its definition).
    """
    uses: dict[str, list[tuple[str, int]]] = {}  # terminal -> (terminal it uses, the level of that use)
    own_depth: dict[str, int] = {}
    names: dict[str, Token] = {}
    for definition in tree.children:
        if not isinstance(definition, Tree):
            continue
        name = definition.children[0] if definition.data == "term" else None
        deepest = 0
        refs: list[tuple[str, int]] = []
        todo: list[tuple[Tree | Token, int]] = [(definition, 0)]
        while todo:
            node, depth = todo.pop()
            if isinstance(node, Token):
                continue
            if node.data in _LEVELS:
                depth += 1
                if depth > MAX_NESTING:
                    return f"groups nested deeper than {MAX_NESTING} levels", _first_offset(node)
                deepest = max(deepest, depth)
            elif node.data == "terminal" and isinstance(node.children[0], Token):
                refs.append((node.children[0].value, depth))
            todo += ((child, depth) for child in node.children)
        if isinstance(name, Token):
            names[name.value] = name
            own_depth[name.value] = deepest
            uses[name.value] = refs
    depths = _inlined_depths(own_depth, uses)
    for terminal in own_depth:  # the first in the text
        depth = depths[terminal]
        if depth > MAX_NESTING:
            reason = f"terminal {terminal} nests {depth} levels deep with the terminals it uses inlined"
            return f"{reason} (at most {MAX_NESTING})", names[terminal].start_pos or 0
    return None


def _inlined_depths(own_depth: dict[str, int], uses: dict[str, list[tuple[str, int]]]) -> dict[str, int]:
    """Each terminal's depth once the terminals it uses are inlined (depth-first, iterative; a use
    that closes a cycle counts as a leaf: Lark reports the cycle itself)."""
    found: dict[str, int] = {}
    on_path: set[str] = set()
    for root in own_depth:
        todo: list[tuple[str, bool]] = [(root, False)]
        while todo:
            terminal, is_done = todo.pop()
            if is_done:
                on_path.discard(terminal)
                depths = [level + found.get(used, 0) for used, level in uses[terminal] if used in own_depth]
                found[terminal] = max([own_depth[terminal], *depths])
                continue
            if terminal in found or terminal in on_path:
                continue
            on_path.add(terminal)
            todo.append((terminal, True))
            todo += ((used, False) for used, _ in uses[terminal] if used in own_depth and used not in found)
    return found


def _first_offset(node: Tree) -> int:
    """The text offset of the first token under `node` (0 when it holds none)."""
    todo: list[Tree | Token] = [node]
    while todo:
        item = todo.pop()
        if isinstance(item, Token):
            return item.start_pos or 0
        todo += reversed(item.children)
    return 0
