"""Lark grammars to the grammar IR: `lark_grammar(text)`.

Lark's own loader reads the text (`grammars.frontends.lark.sources`); this module translates its definitions,
keeping their EBNF shape: a rule becomes an IR rule whose body is alternatives, sequences and
repetitions (`x*`, `x+`, `x?`, `[x]`, `x ~ n`, `x ~ n..m` become `ir.repeat`, so no helper rules and no
left recursion are introduced), references to rules become `ir.Ref`, templates are expanded once per
distinct argument list, and each terminal becomes one lexeme (`grammars.frontends.lark.terminals`). Only what
the start rule reaches (plus `%ignore`) is translated, so an unsupported construct in an unused part
of an imported grammar costs nothing.

Meaning kept, and what differs from Lark:

- Tree shaping is ignored, since it does not change the language: `?rule` inlining, `_rule` and
  `_TERMINAL` filtering, `!` keep-all-tokens, aliases `-> name`, rule priorities.
- The empty string literal `""` stands for the empty sequence (Lark refuses it; llguidance allows it).
- The lexer is a union lexer: at each point every terminal the parser allows may match, the longest
  match wins, and a text several terminals match is kept for all of them (the parser disambiguates).
  Lark's contextual LALR lexer instead picks one terminal by priority, then by length; so where a
  literal keyword and a name pattern both match (`"if"` and `NAME`), Lark's LALR front end lexes
  only the keyword while we also let `if` be a NAME wherever the parser allows one: our language is
  then a superset. Terminal priorities (`NAME.2:`) are not used; a grammar whose prioritized
  terminal overlaps another reachable terminal gets a `LarkPriorityWarning`, since Lark's choice
  there may reject texts we accept.
- Lexing is greedy (maximal munch without backtracking, see `grammars.core.automaton`), like Lark's
  standard lexers, unlike its Earley "dynamic_complete" lexer, which tries every split.
- `%declare`d terminals (made by a post-lexer, like Python's `_INDENT`) cannot be enforced: using
  one from the start rule is an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import cast

from lark import Token, Tree
from lark.grammar import TOKEN_DEFAULT_PRIORITY, NonTerminal, Terminal

from grammars.core import byte_regex as rx
from grammars.core import ir
from grammars.core.analysis import productive_rules
from grammars.core.budget import Check, no_check
from grammars.core.lexer import is_empty_language
from grammars.core.normalize import normalize
from grammars.errors import ConstraintLimitError, EmptyLanguageError, GrammarError, LarkPriorityWarning
from grammars.frontends.lark.sources import Sources
from grammars.frontends.lark.terminals import TerminalCompiler, repetition

#: Rules and template instances one grammar may create (a template that passes itself growing
#: arguments, `t{x}: x | t{x "a"}`, would otherwise expand forever).
MAX_RULES = 20_000
#: Longest grammar text accepted (UTF-8 bytes): ten times the largest real grammar seen (SQLite's,
#: 20 KB); Lark's own loader, which runs first, takes seconds per hundred kilobytes.
MAX_GRAMMAR_BYTES = 256 * 1024


def lark_grammar(
    text: str, *, start: str = "start", import_paths: Sequence[str] = (), check: Check = no_check
) -> ir.Grammar:
    """The IR grammar of a Lark grammar text.

    Args:
        text: the grammar, in Lark's syntax.
        start: the start rule.
        import_paths: directories `%import` searches (for relative imports from `text`, and before
            Lark's bundled grammars for `%import common.X`).
        check: the compile deadline, called between phases and per translated rule.
    Returns:
        The grammar, with one IR rule per Lark rule (or template instance) the start rule reaches.
    Raises:
        GrammarSyntaxError: bad Lark syntax, or an unsupported construct (a used `%declare`d terminal,
            a lookaround reading outside its terminal, a backreference, ...), with its line and column.
        GrammarError: the start rule is not defined, `text` or `start` is not a str, or a Lark error
            that names no location.
        EmptyLanguageError: the start rule derives no string (naming the rules that cannot finish).
        ConstraintLimitError: templates that keep instantiating themselves, a text over
            MAX_GRAMMAR_BYTES, or from `check`.
    """
    if not isinstance(text, str) or not isinstance(start, str):
        raise GrammarError(
            f"a Lark grammar and its start rule must be str, not {type(text).__name__} and {type(start).__name__}"
        )
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_GRAMMAR_BYTES:
        raise ConstraintLimitError(f"the Lark grammar has {size} bytes; the limit is {MAX_GRAMMAR_BYTES}")
    sources = Sources(text, tuple(import_paths))
    grammar = _Translator(sources, start, check).grammar()
    normalize(grammar, check)
    return grammar


class _Translator:
    """Translates the definitions the start rule reaches, each once."""

    def __init__(self, sources: Sources, start: str, check: Check) -> None:
        loaded = sources.load()
        check()
        self._check = check
        self._sources = sources
        self._start = start
        self._rule_defs = {name: (tuple(params), tree) for name, params, tree, _options in loaded.rule_defs}
        self._term_defs = {name: (tree, priority) for name, (tree, priority) in loaded.term_defs}
        self._ignore_names = list(loaded.ignore)
        self._terminals = TerminalCompiler(sources.error_at)
        self._rules = ir.RuleSet()
        self._refs: dict[object, ir.Expr] = {}
        self._lark_names: dict[str, str] = {}  # IR rule name -> the Lark rule (or template) it comes from
        self._lexemes: dict[object, ir.Expr] = {}
        self._used_terminals: dict[str, rx.Term] = {}
        self._pending: list[tuple[str, Tree, dict[str, ir.Expr]]] = []

    def grammar(self) -> ir.Grammar:
        params, _tree = self._rule_defs.get(self._start, ((), None))
        if self._start not in self._rule_defs or params:
            defined = ", ".join(sorted(n for n, (p, t) in self._rule_defs.items() if not p and t is not None))
            raise GrammarError(f"start rule {self._start!r} is not defined (rules: {defined or 'none'})")
        start = self._rule(self._start)
        while self._pending:  # a work list, not recursion: rule chains can be long
            name, tree, env = self._pending.pop()
            self._check()
            self._rules.set(name, self._expr(tree, env))
        ignore = tuple(self._terminal_term(name) for name in self._ignore_names)
        self._warn_about_priorities()
        grammar = self._rules.grammar(start, ignore)
        self._check_finite(grammar)
        return grammar

    def _check_finite(self, grammar: ir.Grammar) -> None:
        """Refuse rules that derive no finite string (every expansion needs one of them again, as in
        `a: b` and `b: a`): they are a mistake, and the normalizer cannot turn their left recursion
        into loops.

        Raises:
            EmptyLanguageError: the start rule is one of them.
            GrammarSyntaxError: another rule is (at the first one's definition; GrammarError when it
                cannot be found in the texts).
        """
        stuck = sorted(set(grammar.rules) - productive_rules(grammar.rules))
        if not stuck:
            return
        names = list(dict.fromkeys(self._lark_names[name] for name in stuck))
        reason = f"rules that derive no finite string (every expansion needs one of them again): {', '.join(names)}"
        if grammar.start in stuck:
            raise EmptyLanguageError(f"the grammar admits no string: {reason}")
        raise self._sources.error_at_definition(names[0], reason)

    # ------------------------------------------------------------------------------------------
    # Rules
    # ------------------------------------------------------------------------------------------
    def _rule(self, name: str) -> ir.Expr:
        found = self._refs.get(name)
        if found is not None:
            return found
        params, tree = self._rule_defs[name]
        if tree is None:
            reason = f"rule {name!r} is only %declare'd: it has no definition to enforce"
            raise self._sources.error_at_definition(name, reason)
        rule_name = self._rules.reserve(name)
        self._lark_names[rule_name] = name
        ref = self._refs[name] = ir.ref(rule_name)
        self._pending.append((rule_name, tree, {}))
        return ref

    def _template(self, name: str, args: tuple[ir.Expr, ...]) -> ir.Expr:
        key = (name, args)
        found = self._refs.get(key)
        if found is not None:
            return found
        params, tree = self._rule_defs[name]
        if len(self._refs) > MAX_RULES:
            raise ConstraintLimitError(
                f"more than {MAX_RULES} rules and template instances (last: {name}); "
                f"does {name} pass itself growing arguments?"
            )
        rule_name = self._rules.reserve(f"{name}__t")
        self._lark_names[rule_name] = name
        ref = self._refs[key] = ir.ref(rule_name)
        self._pending.append((rule_name, tree, dict(zip(params, args))))
        return ref

    def _expr(self, tree: Tree | Token | NonTerminal | Terminal, env: dict[str, ir.Expr]) -> ir.Expr:
        """The IR of a rule's EBNF tree; `env` maps template parameters to their arguments."""
        if isinstance(tree, NonTerminal):
            return env[tree.name] if tree.name in env else self._rule(tree.name)
        if isinstance(tree, Terminal):
            return env[tree.name] if tree.name in env else self._terminal(tree.name)
        if isinstance(tree, Token):
            return self._literal(tree)
        kind = tree.data
        children = tree.children
        if kind == "expansions":
            return ir.alt(*(self._expr(child, env) for child in children))
        if kind == "expansion":
            return ir.seq(*(self._expr(child, env) for child in children))
        if kind in ("alias", "value"):  # an alias names the tree node only
            return self._expr(children[0], env)
        if kind == "maybe":
            return ir.opt(self._expr(children[0], env))
        if kind == "expr":
            item, low, high = repetition(children, self._sources.error_at)
            return ir.repeat(self._expr(item, env), low, high)
        if kind in ("literal", "range"):
            return self._literal(tree)
        if kind == "template_usage":
            template, *args = children  # a NonTerminal, then the argument trees
            return self._template(cast(NonTerminal, template).name, tuple(self._expr(arg, env) for arg in args))
        raise GrammarError(f"unexpected Lark tree node {kind!r}")  # Lark's loader produces no other

    # ------------------------------------------------------------------------------------------
    # Terminals
    # ------------------------------------------------------------------------------------------
    def _terminal(self, name: str) -> ir.Expr:
        found = self._lexemes.get(name)
        if found is None:
            found = ir.lex(self._terminal_term(name), name)
            self._lexemes[name] = found
        return found

    def _terminal_term(self, name: str) -> rx.Term:
        term = self._used_terminals.get(name)
        if term is None:
            tree, _priority = self._term_defs[name]
            if tree is None:
                raise self._sources.error_at_definition(
                    name, f"terminal {name} is %declare'd (made by a post-lexer, e.g. an indenter): cannot be enforced"
                )
            term = self._terminals.term(tree)
            self._used_terminals[name] = term
        return term

    def _literal(self, tree: Tree | Token) -> ir.Expr:
        """A string, regex or range written inside a rule: an anonymous terminal."""
        key = tree if isinstance(tree, Token) else tuple(str(t) for t in tree.children)
        found = self._lexemes.get(key)
        if found is None:
            tokens = [tree] if isinstance(tree, Token) else tree.children
            name = " .. ".join(str(t) for t in tokens)
            found = ir.lex(self._terminals.term(tree), name)
            self._lexemes[key] = found
        return found

    def _warn_about_priorities(self) -> None:
        for name, term in self._used_terminals.items():
            _tree, priority = self._term_defs[name]
            if priority == TOKEN_DEFAULT_PRIORITY:
                continue
            rivals = [
                other
                for other, other_term in self._used_terminals.items()
                if other != name and not is_empty_language(rx.intersect(term, other_term))
            ]
            if rivals:
                warnings.warn(
                    f"terminal {name} has priority {priority} and shares strings with {', '.join(sorted(rivals))}: "
                    "Stencil's lexer keeps every match, so texts Lark would lex otherwise may be accepted",
                    LarkPriorityWarning,
                    stacklevel=4,
                )
