"""A SOQL subset: tokenizer and recursive-descent parser producing a small AST.

Grammar::

    query     := SELECT (COUNT '(' ')' | field (',' field)*) FROM name
                 [WHERE or] [ORDER BY order (',' order)*] [LIMIT int] [OFFSET int]
    or        := and (OR and)*
    and       := unary (AND unary)*
    unary     := NOT unary | '(' or ')' | field op value
               | field [NOT] IN '(' value (',' value)* ')' | field LIKE string
               | field (INCLUDES | EXCLUDES) '(' string (',' string)* ')'
    order     := field [ASC | DESC] [NULLS (FIRST | LAST)]
    value     := string | number | TRUE | FALSE | NULL | date | datetime
               | TODAY | YESTERDAY | TOMORROW | LAST_N_DAYS:n | NEXT_N_DAYS:n

Syntax errors carry Salesforce's MALFORMED_QUERY text (query line, caret, row and column).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sfamp_sandbox.salesforce.api_error import ApiError

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>[-+]?\d+(?:\.\d+)?)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?::\d+)?)
    """,
    re.VERBOSE,
)
KEYWORDS = frozenset(
    {
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ORDER",
        "BY",
        "ASC",
        "DESC",
        "NULLS",
        "FIRST",
        "LAST",
        "LIMIT",
        "OFFSET",
        "NULL",
        "TRUE",
        "FALSE",
        "INCLUDES",
        "EXCLUDES",
        "GROUP",
        "HAVING",
    }
)
DATE_WORDS = frozenset({"TODAY", "YESTERDAY", "TOMORROW"})
DATE_RANGE_WORDS = frozenset({"LAST_N_DAYS", "NEXT_N_DAYS"})
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # string datetime date number op punct word eof
    text: str
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


@dataclass(frozen=True, slots=True)
class Literal:
    kind: str  # string number boolean null date datetime dateword
    value: Any


@dataclass(frozen=True, slots=True)
class FieldRef:
    path: str
    pos: int


@dataclass(frozen=True, slots=True)
class Comparison:
    field: FieldRef
    op: str  # = != < > <= >= like in notin includes excludes
    value: Literal | tuple[Literal, ...]


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # AND, OR
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Condition


Condition = Comparison | BoolOp | Not


@dataclass(frozen=True, slots=True)
class OrderItem:
    field: FieldRef
    descending: bool = False
    nulls_first: bool = True


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    fields: tuple[FieldRef, ...]
    count: bool
    object_name: str
    object_pos: int
    where: Condition | None = None
    order_by: tuple[OrderItem, ...] = ()
    limit: int | None = None
    offset: int = 0


def malformed(text: str, pos: int, message: str) -> ApiError:
    """The MALFORMED_QUERY error with Salesforce's caret display of the bad position."""
    row = text.count("\n", 0, pos) + 1
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start : line_end if line_end >= 0 else len(text)]
    column = pos - line_start + 1
    caret = " " * (column - 1) + "^"
    return ApiError(
        400,
        "MALFORMED_QUERY",
        f"\n{line}\n{caret}\nERROR at Row:{row}:Column:{column}\n{message}",
    )


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise malformed(
                text, pos, f"line 1:{pos} no viable alternative at character '{text[pos]}'"
            )
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("eof", "<EOF>", len(text)))
    return tokens


def _unquote(raw: str) -> str:
    body = raw[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def parse(text: str) -> Query:
    """Parse one SOQL statement; raises ApiError(MALFORMED_QUERY) on a syntax error."""
    return _Parser(text).query()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.token
        self.index += 1
        return token

    def fail(self, token: Token | None = None) -> ApiError:
        token = token or self.token
        return malformed(self.text, token.pos, f"unexpected token: {token.text}")

    def accept(self, *words: str) -> bool:
        if self.token.upper in words:
            self.index += 1
            return True
        return False

    def expect(self, word: str) -> None:
        if not self.accept(word):
            raise self.fail()

    def punct(self, char: str) -> None:
        if self.token.kind != "punct" or self.token.text != char:
            raise self.fail()
        self.index += 1

    def query(self) -> Query:
        self.expect("SELECT")
        fields, count = self.select_list()
        self.expect("FROM")
        name = self.field_ref()
        if "." in name.path:
            raise self.fail(self.tokens[self.index - 1])
        where = self.disjunction() if self.accept("WHERE") else None
        if self.token.upper in {"GROUP", "HAVING"}:
            raise self.fail()
        order: tuple[OrderItem, ...] = ()
        if self.accept("ORDER"):
            self.expect("BY")
            order = self.order_list()
        limit = self.integer() if self.accept("LIMIT") else None
        offset = self.integer() if self.accept("OFFSET") else 0
        if self.token.kind != "eof":
            raise self.fail()
        return Query(self.text, fields, count, name.path, name.pos, where, order, limit, offset)

    def select_list(self) -> tuple[tuple[FieldRef, ...], bool]:
        if self.token.upper == "COUNT" and self.tokens[self.index + 1].text == "(":
            self.index += 1
            self.punct("(")
            self.punct(")")
            return (), True
        fields = [self.field_ref()]
        while self.token.text == ",":
            self.index += 1
            fields.append(self.field_ref())
        return tuple(fields), False

    def field_ref(self) -> FieldRef:
        token = self.token
        if token.kind != "word" or token.upper in KEYWORDS or ":" in token.text:
            raise self.fail()
        self.index += 1
        return FieldRef(token.text, token.pos)

    def integer(self) -> int:
        token = self.advance()
        if token.kind != "number" or not token.text.isdigit():
            raise self.fail(token)
        return int(token.text)

    def order_list(self) -> tuple[OrderItem, ...]:
        items = []
        while True:
            ref = self.field_ref()
            descending = self.accept("DESC")
            if not descending:
                self.accept("ASC")
            nulls_first = not descending
            if self.accept("NULLS"):
                if not self.accept("FIRST", "LAST"):
                    raise self.fail()
                nulls_first = self.tokens[self.index - 1].upper == "FIRST"
            items.append(OrderItem(ref, descending, nulls_first))
            if self.token.text != ",":
                return tuple(items)
            self.index += 1

    def disjunction(self) -> Condition:
        items = [self.conjunction()]
        while self.accept("OR"):
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else BoolOp("OR", tuple(items))

    def conjunction(self) -> Condition:
        items = [self.unary()]
        while self.accept("AND"):
            items.append(self.unary())
        return items[0] if len(items) == 1 else BoolOp("AND", tuple(items))

    def unary(self) -> Condition:
        if self.accept("NOT"):
            return Not(self.unary())
        if self.token.text == "(":
            self.index += 1
            inner = self.disjunction()
            self.punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Condition:
        ref = self.field_ref()
        token = self.advance()
        if token.kind == "op":
            op = "!=" if token.text == "<>" else token.text
            return Comparison(ref, op, self.value())
        word = token.upper
        if word == "NOT" and self.accept("IN"):
            return Comparison(ref, "notin", self.value_list())
        if word in {"IN", "INCLUDES", "EXCLUDES"}:
            return Comparison(ref, word.lower(), self.value_list())
        if word == "LIKE":
            pattern = self.value()
            if pattern.kind != "string":
                raise self.fail(self.tokens[self.index - 1])
            return Comparison(ref, "like", pattern)
        raise self.fail(token)

    def value_list(self) -> tuple[Literal, ...]:
        self.punct("(")
        values = [self.value()]
        while self.token.text == ",":
            self.index += 1
            values.append(self.value())
        self.punct(")")
        return tuple(values)

    def value(self) -> Literal:
        token = self.advance()
        if token.kind == "string":
            return Literal("string", _unquote(token.text))
        if token.kind == "number":
            return Literal("number", float(token.text))
        if token.kind in {"date", "datetime"}:
            return Literal(token.kind, token.text)
        word = token.upper
        if word in {"TRUE", "FALSE"}:
            return Literal("boolean", word == "TRUE")
        if word == "NULL":
            return Literal("null", None)
        if word in DATE_WORDS:
            return Literal("dateword", (word, 0))
        head, _, amount = word.partition(":")
        if head in DATE_RANGE_WORDS and amount.isdigit():
            return Literal("dateword", (head, int(amount)))
        raise self.fail(token)
