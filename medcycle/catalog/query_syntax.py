"""Syntax of the catalog filter language: tokens, the recursive-descent parser and the tree.

See :mod:`medcycle.catalog.query` for the grammar; nothing here ever evaluates code.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from datetime import date

from medcycle.catalog.fields import FIELDS, MAX_CONDITIONS, MAX_DEPTH, MAX_LENGTH, MAX_LIST, Field, FieldType
from medcycle.errors import UsageError

# -- syntax tree ------------------------------------------------------------------------------------
Value = str | int | float | bool | date


@dataclass(frozen=True, slots=True)
class Everything:
    """The empty query."""


@dataclass(frozen=True, slots=True)
class Compare:
    field: str
    op: str  # == != < <= > >=
    value: Value
    column: int = dataclasses.field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class InList:
    field: str
    values: tuple[Value, ...]
    negated: bool = False
    column: int = dataclasses.field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Contains:
    field: str
    value: str
    column: int = dataclasses.field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class IsNull:
    field: str
    negated: bool = False  # "is not null"
    column: int = dataclasses.field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


Expr = Everything | Compare | InList | Contains | IsNull | And | Or | Not


# -- tokenizer --------------------------------------------------------------------------------------
KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "is", "null", "true", "false"})
COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")
_NUMBER_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_PUNCT = {"(": "(", ")": ")", "[": "[", "]": "]", ",": ","}
_MISTAKES = {"=": "Use == to compare.", "!": "Use != or not.", "&": "Use and.", "|": "Use or."}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # ident, keyword, string, number, op, ( ) [ ] , end
    text: str
    value: Value | None
    column: int  # 1-based


def _error(message: str, column: int, hint: str | None = None) -> UsageError:
    return UsageError(f"query: {message} at column {column}", hint=hint, column=column)


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; the last one has kind ``end``."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        col = i + 1
        if ch.isspace():
            i += 1
        elif ch in "\"'":
            value, i = _read_string(text, i)
            tokens.append(Token("string", text[col - 1 : i], value, col))
        elif ch.isdigit() or (ch in "-." and i + 1 < n and (text[i + 1].isdigit() or text[i + 1] == ".")):
            m = _NUMBER_RE.match(text, i)
            if not m or (m.end() < n and (text[m.end()].isalnum() or text[m.end()] in "_.")):
                end = m.end() if m else i + 1
                raise _error(f"malformed number {text[i:end + 1]!r}", col, "Write numbers like 12, -0.5 or 1e3.")
            raw = m.group()
            number: int | float = int(raw) if re.fullmatch(r"-?\d+", raw) else float(raw)
            if isinstance(number, int) and not -(2**63) <= number < 2**63:
                number = float(number)  # beyond a database integer: compared as a (huge) real number
            tokens.append(Token("number", raw, number, col))
            i = m.end()
        elif ch.isalpha() or ch == "_":
            m = _IDENT_RE.match(text, i)
            if m is None:  # a letter outside a-z (isalpha() is true for every script)
                raise _error(f"unexpected character {ch!r}", col, "Names use letters a-z, digits and '_'.")
            word = m.group()
            kind = "keyword" if word.lower() in KEYWORDS else "ident"
            tokens.append(Token(kind, word.lower() if kind == "keyword" else word, None, col))
            i = m.end()
        elif (op := next((o for o in COMPARISONS if text.startswith(o, i)), None)) is not None:
            tokens.append(Token("op", op, None, col))
            i += len(op)
        elif ch in _PUNCT:
            tokens.append(Token(ch, ch, None, col))
            i += 1
        else:
            hint = _MISTAKES.get(ch, "See the query syntax in docs/data.md.")
            raise _error(f"unexpected character {ch!r}", col, hint)
    tokens.append(Token("end", "", None, n + 1))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            value = "".join(out)
            if "\0" in value:  # PostgreSQL text cannot hold it, SQLite's LIKE stops at it; no catalog value has it
                raise _error("a string cannot hold the NUL character", start + 1, "Remove the \\0 from the string.")
            return value, i + 1
        if ch == "\\":
            if i + 1 >= len(text):
                break
            esc = text[i + 1]
            if esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                i += 2
                continue
            if esc == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            raise _error(f"unknown escape '\\{esc}' in a string", i + 1,
                         "Escapes are \\\\, \\\", \\', \\n, \\t, \\r and \\uXXXX.")
        out.append(ch)
        i += 1
    raise _error("unterminated string", start + 1, f"Close the string with {quote}.")


# -- parser -----------------------------------------------------------------------------------------
def _fields_hint(name: str | None = None) -> str:
    hint = "Fields: " + ", ".join(FIELDS) + "."
    if name is not None:
        close = difflib.get_close_matches(name.lower(), list(FIELDS), n=1, cutoff=0.6)
        if close:
            hint += f" Did you mean {close[0]!r}?"
    return hint


def _describe(tok: Token) -> str:
    return "end of query" if tok.kind == "end" else tok.text if tok.kind == "string" else repr(tok.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0
        self.conditions = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def next(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def at_keyword(self, word: str) -> bool:
        return self.tok.kind == "keyword" and self.tok.text == word

    def expect(self, kind: str, what: str, hint: str | None = None) -> Token:
        if self.tok.kind != kind:
            raise _error(f"expected {what}, found {_describe(self.tok)}", self.tok.column, hint)
        return self.next()

    def parse(self) -> Expr:
        if self.tok.kind == "end":
            return Everything()
        expr = self.or_expr()
        if self.tok.kind != "end":
            hint = "Combine conditions with and / or." if self.tok.kind in ("ident", "(") else None
            if self.tok.kind == ")":
                hint = "Remove the ')' or add a matching '('."
            raise _error(f"unexpected {_describe(self.tok)}", self.tok.column, hint)
        return expr

    def or_expr(self) -> Expr:
        items = [self.and_expr()]
        while self.at_keyword("or"):
            self.next()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Expr:
        items = [self.not_expr()]
        while self.at_keyword("and"):
            self.next()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _error(f"nesting deeper than {MAX_DEPTH}", self.tok.column, "Simplify the query.")
        try:
            if self.at_keyword("not"):
                self.next()
                return Not(self.not_expr())
            if self.tok.kind == "(":
                open_tok = self.next()
                expr = self.or_expr()
                if self.tok.kind != ")":
                    found = _describe(self.tok)
                    raise _error(f"expected ')' to close the '(' at column {open_tok.column}, found {found}",
                                 self.tok.column)
                self.next()
                return expr
            return self.predicate()
        finally:
            self.depth -= 1

    def predicate(self) -> Expr:
        tok = self.tok
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise _error(f"more than {MAX_CONDITIONS} conditions", tok.column,
                         'Put the values of one field in a list: modality in ["CT", "MR"].')
        if tok.kind != "ident":
            hint = None
            if tok.kind in ("string", "number") or tok.text in ("true", "false", "null"):
                hint = 'Write the field first, e.g. modality == "CT".'
            elif tok.kind == "end":
                hint = "Complete the condition, or remove the trailing operator."
            raise _error(f"expected a field name, found {_describe(tok)}", tok.column, hint or _fields_hint())
        info = FIELDS.get(tok.text)
        if info is None:
            raise _error(f"unknown field {tok.text!r}", tok.column, _fields_hint(tok.text))
        self.next()
        op = self.tok
        if op.kind == "op":
            self.next()
            return self.comparison(info, op, tok.column)
        if op.kind == "keyword" and op.text in ("in", "not"):
            self.next()
            negated = op.text == "not"
            if negated:
                if not self.at_keyword("in"):
                    raise _error(f"expected 'in' after 'not', found {_describe(self.tok)}", self.tok.column,
                                 f"Write `{info.name} not in [...]`, or put `not` before the whole condition.")
                self.next()
            return self.in_list(info, negated, tok.column)
        if op.kind == "keyword" and op.text == "contains":
            self.next()
            if info.type is not FieldType.STRING:
                raise _error(f"'contains' needs a string field; {info.name!r} is a {info.type}", op.column,
                             "Use ==, <, > or in [...] on this field.")
            lit = self.expect("string", "a string after 'contains'")
            assert isinstance(lit.value, str)
            return Contains(info.name, lit.value, tok.column)
        if op.kind == "keyword" and op.text == "is":
            self.next()
            negated = self.at_keyword("not")
            if negated:
                self.next()
            if not self.at_keyword("null"):
                raise _error(f"expected 'null' after 'is', found {_describe(self.tok)}", self.tok.column,
                             "Write `is null` or `is not null`; compare values with == and !=.")
            self.next()
            return IsNull(info.name, negated, tok.column)
        if info.type is FieldType.BOOLEAN:
            return Compare(info.name, "==", True, tok.column)
        hint = "Operators: == != < <= > >= in, not in, contains, is null, is not null."
        raise _error(f"expected an operator after {info.name!r}, found {_describe(op)}", op.column, hint)

    def comparison(self, info: Field, op: Token, column: int) -> Compare:
        if op.text not in ("==", "!=") and info.type in (FieldType.STRING, FieldType.BOOLEAN):
            raise _error(f"{op.text!r} cannot order the {info.type} field {info.name!r}", op.column,
                         "Ordering works on number and date fields; use ==, != , in [...] or contains.")
        lit = self.next()
        return Compare(info.name, op.text, self.literal(info, lit), column)

    def in_list(self, info: Field, negated: bool, column: int) -> InList:
        self.expect("[", f"'[' to start the list after {'not in' if negated else 'in'}",
                    'Write a list like ["CT", "MR"].')
        values: list[Value] = []
        while self.tok.kind != "]":
            values.append(self.literal(info, self.next()))
            if self.tok.kind == ",":
                self.next()
            elif self.tok.kind != "]":
                raise _error(f"expected ',' or ']' in the list, found {_describe(self.tok)}", self.tok.column)
        self.next()
        if len(values) > MAX_LIST:
            raise _error(f"a list of more than {MAX_LIST} values", column, "Select by a rule, or in several steps.")
        return InList(info.name, tuple(values), negated, column)

    def literal(self, info: Field, tok: Token) -> Value:
        """The value of ``tok`` as a value of ``info``'s type, or a usage error at its column."""
        if tok.kind == "keyword" and tok.text == "null":
            raise _error("null is not a value to compare with", tok.column,
                         f"Write `{info.name} is null` or `{info.name} is not null`.")
        kinds = {"string": FieldType.STRING, "number": FieldType.NUMBER}
        if tok.kind == "keyword" and tok.text in ("true", "false"):
            got: FieldType | None = FieldType.BOOLEAN
        else:
            got = kinds.get(tok.kind)
        if got is None:
            hint = 'Values are strings ("CT"), numbers (1.5), dates ("2020-01-31") or true/false.'
            if tok.kind == "ident" and tok.text in FIELDS:
                hint = "A field is compared with a value; comparing two fields is not supported."
            raise _error(f"expected a value, found {_describe(tok)}", tok.column, hint)
        if info.type is FieldType.DATE and got is FieldType.STRING:
            assert isinstance(tok.value, str)
            try:
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", tok.value):
                    raise ValueError(tok.value)
                return date.fromisoformat(tok.value)
            except ValueError:
                raise _error(f"{tok.text} is not a date", tok.column,
                             f'{info.name!r} is a date field; write dates as "YYYY-MM-DD".') from None
        if got is not info.type:
            examples = {FieldType.STRING: '"text"', FieldType.NUMBER: "12.5", FieldType.DATE: '"2020-01-31"',
                        FieldType.BOOLEAN: "true"}
            hint = f"Compare {info.name} with a {info.type}, e.g. {examples[info.type]}."
            if info.type is FieldType.NUMBER and isinstance(tok.value, str) and _NUMBER_RE.fullmatch(tok.value):
                hint = f"Write {tok.value} without quotes."
            raise _error(f"{info.name!r} is a {info.type} field but {tok.text} is a {got}", tok.column, hint)
        if got is FieldType.BOOLEAN:
            return tok.text == "true"
        assert tok.value is not None
        return tok.value


def parse(expr: str) -> Expr:
    """Parse and type-check a query; the empty (or blank) query gives :class:`Everything`."""
    if len(expr) > MAX_LENGTH:
        raise UsageError(f"query: longer than {MAX_LENGTH} characters", hint="Split it, or select by a shorter rule.")
    return _Parser(expr).parse()


def _format_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return f'"{value.isoformat()}"'
    if isinstance(value, str):
        escaped = "".join(next((f"\\{k}" for k, v in _ESCAPES.items() if v == c and k != "'"), c) for c in value)
        return f'"{escaped}"'
    return repr(value)


def unparse(expr: Expr) -> str:
    """The canonical text of ``expr``: ``parse(unparse(e)) == e``."""
    if isinstance(expr, Everything):
        return ""
    if isinstance(expr, Compare):
        return f"{expr.field} {expr.op} {_format_value(expr.value)}"
    if isinstance(expr, InList):
        return f"{expr.field} {'not in' if expr.negated else 'in'} [{', '.join(map(_format_value, expr.values))}]"
    if isinstance(expr, Contains):
        return f"{expr.field} contains {_format_value(expr.value)}"
    if isinstance(expr, IsNull):
        return f"{expr.field} is {'not null' if expr.negated else 'null'}"
    if isinstance(expr, Not):
        return f"not {_wrap(expr.operand)}"
    joiner = " and " if isinstance(expr, And) else " or "
    return joiner.join(_wrap(item) for item in expr.items)


def _wrap(expr: Expr) -> str:
    return f"({unparse(expr)})" if isinstance(expr, And | Or) else unparse(expr)


def fields_used(expr: Expr) -> set[str]:
    """Names of the fields ``expr`` refers to."""
    if isinstance(expr, Everything):
        return set()
    if isinstance(expr, And | Or):
        return set().union(*(fields_used(item) for item in expr.items))
    if isinstance(expr, Not):
        return fields_used(expr.operand)
    return {expr.field}

