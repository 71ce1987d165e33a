"""Formulas of concepts (compositional NetDissect's labels): left-deep chains `c0 op1 c1 op2 c2 ...`
evaluated left to right, ops OR, AND, AND NOT (the right side of AND NOT is negated), as in Mu &
Andreas 2020 (`((a OR b) AND NOT c)`).

A formula is a tuple (c0, op1, c1, ...) of concept indices and op indices into OPS. Written out:
`circle OR red`, `(circle OR red) AND NOT large`; the concept column spells the ids the same way
(`shape:circle OR color:red`), which `parse` reads back (evaluation uses it).
"""

from __future__ import annotations

import re

import torch

OPS = ("OR", "AND", "AND NOT")
_SPLIT = re.compile(r" (AND NOT|OR|AND) ")


def length(formula: tuple) -> int:
    """The number of leaves."""
    return (len(formula) + 1) // 2


def render(formula: tuple, names) -> str:
    """`names[c]` joined by the ops, earlier pairs in parentheses: "(a OR b) AND NOT c"."""
    text = str(names[formula[0]])
    for i in range(1, len(formula), 2):
        if i > 1:
            text = f"({text})"
        text = f"{text} {OPS[formula[i]]} {names[formula[i + 1]]}"
    return text


def parse(text: str) -> tuple[list[str], list[str]]:
    """The leaves and ops of a rendered formula: "(a OR b) AND NOT c" -> ([a, b, c], [OR, AND NOT])."""
    parts = _SPLIT.split(str(text).replace("(", "").replace(")", ""))
    return [p.strip() for p in parts[0::2]], parts[1::2]


def canonical(text: str) -> tuple[str, frozenset] | None:
    """("LEAF"|"OR"|"AND", leaves) for a single concept or a chain of one op (order does not
    matter); None for formulas that mix ops or negate (no synthetic truth has that shape)."""
    leaves, ops = parse(text)
    if not ops:
        return "LEAF", frozenset(leaves)
    if len(set(ops)) == 1 and ops[0] in ("OR", "AND"):
        return ops[0], frozenset(leaves)
    return None


def positive_leaves(text: str) -> set[str]:
    """The concepts a formula names without negation."""
    leaves, ops = parse(text)
    return {leaves[0]} | {leaf for op, leaf in zip(ops, leaves[1:]) if op != "AND NOT"}


def truth_vector(formula: tuple, bits: torch.Tensor) -> torch.Tensor:
    """(P,) bool: which concept patterns the formula selects (bits: (P, C) bool)."""
    t = bits[:, formula[0]].clone()
    for i in range(1, len(formula), 2):
        c = bits[:, formula[i + 1]]
        op = OPS[formula[i]]
        t = t | c if op == "OR" else t & c if op == "AND" else t & ~c
    return t


__all__ = ["OPS", "canonical", "length", "parse", "positive_leaves", "render", "truth_vector"]
