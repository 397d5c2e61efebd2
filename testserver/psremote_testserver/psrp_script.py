"""The endpoint's tiny script language (the text of ``IsScript=true`` commands).

It is not PowerShell; it covers what clients' tests send. Grammar::

    script     := statement ( (';' | NEWLINE) statement )*
    statement  := <empty> | arithmetic | pipeline
    arithmetic := INTEGER ( ('+' | '-' | '*' | '/') INTEGER )*     e.g.  1+1   or   2 * 3 - 1
    pipeline   := element ( '|' command )*
    element    := command | values                                 values are written to the pipeline
    command    := NAME argument*
    argument   := PARAMETER [':' value]  |  values                  -Name value, -Switch, -Name:value
    values     := value ( ',' value )*                             a comma list is one array argument
    value      := 'single quoted' | "double quoted" | INTEGER | DECIMAL
                | $true | $false | $null | BAREWORD

Single-quoted strings double '' to embed a quote; double-quoted strings take
backtick escapes (`n `t `r `0 `` `" `$) and "" but expand no variables. ``#``
starts a comment running to the end of the line. Whether ``-Name`` takes the
next token as its value is decided by the command's parameter (switches do
not), so the parser keeps parameters and values as separate tokens.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple, Union


class ScriptError(ValueError):
    """The text does not follow the grammar (reported as a ParseException)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass
class Parameter:
    """``-Name`` (with ``value`` set for the ``-Name:value`` form)."""

    name: str
    value: Any = None
    has_value: bool = False


@dataclass
class Values:
    """One positional argument: a single value or a comma list (``is_list``)."""

    items: List[Any]
    is_list: bool = False

    @property
    def value(self) -> Any:
        return list(self.items) if self.is_list else self.items[0]


Argument = Union[Parameter, Values]


@dataclass
class CommandCall:
    name: str
    arguments: List[Argument] = field(default_factory=list)
    offset: int = 0


@dataclass
class Statement:
    text: str
    offset: int
    arithmetic: Optional[int] = None  # set for an arithmetic statement
    source: Optional[Values] = None  # leading values written into the pipeline
    commands: List[CommandCall] = field(default_factory=list)


# -- tokens -------------------------------------------------------------------------------------------
@dataclass
class _Token:
    kind: str  # word, string, number, param, pipe, comma, end, op, colon
    value: Any
    offset: int
    text: str = ""


_WORD_END = set(" \t\r\n;|,#'\"")
_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?$")
_ARITHMETIC = re.compile(r"^\s*-?\d+(\s*[-+*/]\s*-?\d+)*\s*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_CONSTANTS = {"$true": True, "$false": False, "$null": None}


def _read_single(text: str, pos: int) -> Tuple[str, int]:
    out = []
    pos += 1
    while True:
        if pos >= len(text):
            raise ScriptError("The string is missing the terminator: '.", pos)
        char = text[pos]
        if char == "'":
            if pos + 1 < len(text) and text[pos + 1] == "'":
                out.append("'")
                pos += 2
                continue
            return "".join(out), pos + 1
        out.append(char)
        pos += 1


def _read_double(text: str, pos: int) -> Tuple[str, int]:
    out = []
    pos += 1
    while True:
        if pos >= len(text):
            raise ScriptError('The string is missing the terminator: ".', pos)
        char = text[pos]
        if char == "`" and pos + 1 < len(text):
            following = text[pos + 1]
            out.append(_ESCAPES.get(following, following))
            pos += 2
            continue
        if char == '"':
            if pos + 1 < len(text) and text[pos + 1] == '"':
                out.append('"')
                pos += 2
                continue
            return "".join(out), pos + 1
        out.append(char)
        pos += 1


def _word_value(word: str) -> Tuple[str, Any]:
    lowered = word.lower()
    if lowered in _CONSTANTS:
        return "constant", _CONSTANTS[lowered]
    if _INTEGER.match(word):
        number = int(word)
        return "number", number
    if _DECIMAL.match(word):
        return "number", float(word)
    return "word", word


def tokenize(text: str) -> List[_Token]:
    tokens: List[_Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char in " \t\r":
            pos += 1
        elif char == "#":
            while pos < len(text) and text[pos] != "\n":
                pos += 1
        elif char in "\n;":
            tokens.append(_Token("end", None, pos))
            pos += 1
        elif char == "|":
            tokens.append(_Token("pipe", None, pos))
            pos += 1
        elif char == ",":
            tokens.append(_Token("comma", None, pos))
            pos += 1
        elif char == "'":
            value, end = _read_single(text, pos)
            tokens.append(_Token("string", value, pos, text[pos:end]))
            pos = end
        elif char == '"':
            value, end = _read_double(text, pos)
            tokens.append(_Token("string", value, pos, text[pos:end]))
            pos = end
        else:
            start = pos
            while pos < len(text) and text[pos] not in _WORD_END:
                if text[pos] == "`" and pos + 1 < len(text):
                    pos += 2
                    continue
                pos += 1
            word = text[start:pos]
            if len(word) > 1 and word[0] == "-" and (word[1].isalpha() or word[1] == "_"):
                name, colon, rest = word[1:].partition(":")
                if colon:
                    # -Name:value; the value may also be the next token (-Name: value).
                    tokens.append(_Token("param", name, start, word))
                    if rest:
                        kind, value = ("string", rest) if rest[0] in "'\"" else _word_value(rest)
                        tokens.append(_Token("colon", (kind, value), start + len(name) + 2, rest))
                    else:
                        tokens.append(_Token("colon", None, start + len(name) + 1, ""))
                else:
                    tokens.append(_Token("param", name, start, word))
            else:
                kind, value = _word_value(word.replace("`", "") if "`" in word else word)
                tokens.append(_Token(kind, value, start, word))
    tokens.append(_Token("end", None, len(text)))
    return tokens


def _evaluate(expression: str) -> int:
    """Integer arithmetic, left to right with * and / before + and -; / truncates like [int] division would round."""
    terms = re.findall(r"-?\d+|[-+*/]", expression.replace(" ", "").replace("\t", ""))
    # Re-join unary minus produced by findall after an operator ("2*-3" -> ["2", "*", "-3"]).
    values: List[Any] = []
    operators: List[str] = []
    expect_value = True
    for term in terms:
        if expect_value:
            values.append(int(term))
            expect_value = False
        elif term in "+-*/" and len(term) == 1:
            operators.append(term)
            expect_value = True
        else:  # "1-1" tokenised as ["1", "-1"]
            operators.append("-" if term.startswith("-") else "+")
            values.append(abs(int(term)))
    # * and / first
    reduced = [values[0]]
    pending_ops: List[str] = []
    for op, value in zip(operators, values[1:]):
        if op == "*":
            reduced[-1] = reduced[-1] * value
        elif op == "/":
            if value == 0:
                raise ZeroDivisionError("Attempted to divide by zero.")
            quotient = reduced[-1] / value
            reduced[-1] = int(quotient) if quotient == int(quotient) else quotient
        else:
            pending_ops.append(op)
            reduced.append(value)
    result = reduced[0]
    for op, value in zip(pending_ops, reduced[1:]):
        result = result + value if op == "+" else result - value
    return result


def _split_statements(text: str, tokens: List[_Token]) -> List[List[_Token]]:
    statements: List[List[_Token]] = [[]]
    for token in tokens:
        if token.kind == "end":
            statements.append([])
        else:
            statements[-1].append(token)
    return [statement for statement in statements if statement]


def _read_values(tokens: List[_Token], index: int) -> Tuple[Values, int]:
    """A value or comma list starting at ``index``."""
    items = []
    is_list = False
    while True:
        token = tokens[index]
        if token.kind not in ("word", "string", "number", "constant"):
            raise ScriptError("Missing expression after ','.", token.offset)
        items.append(token.value)
        index += 1
        if index < len(tokens) and tokens[index].kind == "comma":
            is_list = True
            index += 1
            if index >= len(tokens):
                raise ScriptError("Missing expression after ','.", tokens[index - 1].offset)
            continue
        return Values(items, is_list), index


def _parse_command(tokens: List[_Token], index: int) -> Tuple[CommandCall, int]:
    head = tokens[index]
    if head.kind not in ("word", "string"):
        raise ScriptError(f"Unexpected token '{head.text or head.kind}' in expression or statement.", head.offset)
    call = CommandCall(str(head.value), offset=head.offset)
    index += 1
    while index < len(tokens) and tokens[index].kind != "pipe":
        token = tokens[index]
        if token.kind == "param":
            parameter = Parameter(token.value)
            index += 1
            if index < len(tokens) and tokens[index].kind == "colon":
                colon = tokens[index]
                index += 1
                if colon.value is not None:
                    parameter.value, parameter.has_value = colon.value[1], True
                else:
                    values, index = _read_values(tokens, index)
                    parameter.value, parameter.has_value = values.value, True
            call.arguments.append(parameter)
        elif token.kind in ("word", "string", "number", "constant"):
            values, index = _read_values(tokens, index)
            call.arguments.append(values)
        else:
            raise ScriptError(
                f"Unexpected token '{token.text or token.kind}' in expression or statement.", token.offset
            )
    return call, index


def _parse_statement(text: str, tokens: List[_Token]) -> Statement:
    start = tokens[0].offset
    last = tokens[-1]
    end = last.offset + max(len(last.text), 1)
    source_text = text[start:end].strip()
    statement = Statement(source_text, start)
    if (
        all(t.kind in ("number", "word") for t in tokens)
        and _ARITHMETIC.match(source_text)
        and not (len(tokens) == 1 and tokens[0].kind == "number")
    ):
        if any(op in source_text.lstrip("-") for op in "+-*/"):
            statement.arithmetic = _evaluate(source_text)
            return statement
    index = 0
    if tokens[0].kind in ("string", "number", "constant") or (
        tokens[0].kind == "word" and len(tokens) > 1 and tokens[1].kind == "comma"
    ):
        statement.source, index = _read_values(tokens, 0)
        if index < len(tokens) and tokens[index].kind != "pipe":
            token = tokens[index]
            raise ScriptError(
                f"Unexpected token '{token.text or token.kind}' in expression or statement.", token.offset
            )
    else:
        call, index = _parse_command(tokens, 0)
        statement.commands.append(call)
    while index < len(tokens):
        if tokens[index].kind != "pipe":
            raise ScriptError("Unexpected token in expression or statement.", tokens[index].offset)
        index += 1
        if index >= len(tokens):
            raise ScriptError("An empty pipe element is not allowed.", tokens[index - 1].offset)
        call, index = _parse_command(tokens, index)
        statement.commands.append(call)
    return statement


@functools.lru_cache(maxsize=256)
def parse(text: str) -> List[Statement]:
    """Parse a whole script; raises ScriptError on the first syntax error.

    Results are cached by text (clients run the same short scripts again and again), so the
    statements returned are shared: callers read them and never modify them.
    """
    tokens = tokenize(text)
    return [_parse_statement(text, statement) for statement in _split_statements(text, tokens)]
