"""The same-record fields a formula field reads, from the describe's ``calculatedFormula``.

A change event never carries a formula field, but it does carry the fields the formula
reads: when one of those changes, the formula's new value is read at flush time. That
only works for formulas whose every input is a field of the same record. A formula is
*not followable* (``None``) when it reads another record (``Owner.Name``,
``Parent.AnnualRevenue``), a global variable (``$User.Id``) or the clock (``TODAY()``,
``NOW()``): those change without a change event of the record, and only a reconcile
re-reads them.
"""

from __future__ import annotations

import re
from typing import Final

# Functions whose value moves with the clock.
TIME_FUNCTIONS: Final = frozenset(("TODAY", "NOW", "TIMENOW"))
# Words of the formula language that are not fields.
_KEYWORDS: Final = frozenset(("NULL", "TRUE", "FALSE"))

_TOKENS: Final = re.compile(
    r"""
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<comment>/\*.*?\*/)
    | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<name>\$?[A-Za-z_][A-Za-z0-9_]*(?:\.\$?[A-Za-z_][A-Za-z0-9_]*)*)(?P<call>\s*\()?
    """,
    re.VERBOSE | re.DOTALL,
)


def formula_inputs(formula: str) -> frozenset[str] | None:
    """The fields of the same record ``formula`` reads, or ``None`` when it is not followable.

    ``"IF(NumberOfEmployees > 0, AnnualRevenue / NumberOfEmployees, NULL)"`` ->
    ``{"NumberOfEmployees", "AnnualRevenue"}``; ``"TODAY() - CloseDate"`` -> ``None``.
    Names are returned as written (Salesforce matches them case-insensitively).
    """
    names: set[str] = set()
    for match in _TOKENS.finditer(formula):
        name = match.group("name")
        if name is None:
            continue  # a string literal, a comment or a number
        if match.group("call"):
            if name.upper() in TIME_FUNCTIONS:
                return None
            continue  # a function name
        if "." in name or name.startswith("$"):
            return None  # another record, or a global variable
        if name.upper() not in _KEYWORDS:
            names.add(name)
    return frozenset(names)


def followable(formula: str | None) -> bool:
    """Whether a change event of the record can tell when ``formula`` changes."""
    return formula is not None and formula_inputs(formula) is not None
