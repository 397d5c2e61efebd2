"""A reader of the C header cbindgen writes (``include/psremote.h``), for the C reference.

It knows the shapes cbindgen emits with ``documentation_style = "c99"`` (and ``/** */`` doc
blocks, should the style change): enums whose underlying type is fixed under C++, opaque
``typedef struct x x;`` handles, structs with members, function-pointer typedefs,
``#define`` constants and function declarations, each preceded by its doc comment. Anything
else at the top level is an error naming the line, so a new construct in the header fails the
build instead of going missing from the reference.

No Sphinx here: ``parse`` returns plain ``Item`` values (docs/tests test them directly) and
``psremote_c_header`` turns them into C-domain directives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


class HeaderError(ValueError):
    """The header holds something this reader does not know, at ``line`` (1-based)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass
class Item:
    """One documented thing of the header.

    ``kind`` is ``function``, ``enum``, ``enumerator``, ``struct`` (with members), ``opaque``
    (a handle whose layout is private), ``member``, ``callback`` (a function-pointer typedef)
    or ``macro``. ``declaration`` is the C declaration on one line (for a macro its value);
    ``doc`` the comment's lines with the comment markers removed.
    """

    kind: str
    name: str
    declaration: str
    doc: List[str]
    line: int
    members: List["Item"] = field(default_factory=list)
    params: str = ""
    """A function-like macro's parameter list, ``(n)``."""


def _squeeze(text: str) -> str:
    """One line, single spaces, no space inside parentheses."""
    text = re.sub(r"\s+", " ", text).strip()
    return text.replace("( ", "(").replace(" )", ")")


def _comment_line(stripped: str) -> Optional[str]:
    """The text of a ``//`` comment line, or None."""
    if stripped.startswith("//"):
        text = stripped[2:]
        return text[1:] if text.startswith(" ") else text
    return None


def _function_name(declaration: str, line: int, pointer: bool = False) -> str:
    """The declared name of a function or function pointer: the identifier before the first
    parenthesis (a function), or with ``pointer`` inside it after the ``*`` (a function-pointer
    member or typedef, ``int (*name)(...)``). Parameters that are function pointers themselves
    come later and do not count."""
    first = declaration.find("(")
    found = None
    if first >= 0 and pointer:
        found = re.match(rf"\(\s*\*\s*({_IDENT})\s*\)\s*\(", declaration[first:])
    elif first >= 0:
        found = re.search(rf"({_IDENT})\s*$", declaration[:first])
    if not found:
        raise HeaderError(line, f"cannot find the name in {declaration!r}")
    return found.group(1)


class _Lines:
    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.index = 0

    def done(self) -> bool:
        return self.index >= len(self.lines)

    def peek(self) -> str:
        return self.lines[self.index]

    def take(self) -> Tuple[int, str]:
        self.index += 1
        return self.index, self.lines[self.index - 1]

    def until_semicolon(self, first: str) -> str:
        """``first`` and the following lines up to the one ending the statement."""
        parts = [first]
        while not first.rstrip().endswith(";"):
            if self.done():
                raise HeaderError(self.index, "statement without its ';'")
            _, first = self.take()
            parts.append(first)
        return " ".join(part.strip() for part in parts)


def _read_block_comment(lines: _Lines, first: str) -> List[str]:
    """A ``/* ... */`` comment starting on ``first``: its lines without the markers."""
    body = [first]
    while "*/" not in body[-1]:
        if lines.done():
            raise HeaderError(lines.index, "comment without its end")
        body.append(lines.take()[1])
    text = "\n".join(body)
    text = re.sub(r"^\s*/\*\*?", "", text)
    text = re.sub(r"\*/\s*$", "", text)
    out = []
    for raw in text.splitlines():
        raw = raw.strip()
        if raw.startswith("*"):
            raw = raw[1:]
            raw = raw[1:] if raw.startswith(" ") else raw
        out.append(raw)
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    return out


def _read_enum(lines: _Lines, line_no: int, name: str, doc: List[str]) -> Item:
    item = Item("enum", name, name, doc, line_no)
    pending: List[str] = []
    while True:
        if lines.done():
            raise HeaderError(line_no, f"enum {name} without its end")
        number, raw = lines.take()
        stripped = raw.strip()
        comment = _comment_line(stripped)
        if comment is not None:
            pending.append(comment)
        elif stripped.startswith("/*"):
            pending.extend(_read_block_comment(lines, stripped))
        elif stripped.startswith("#") or stripped in ("{", "") or stripped.startswith(": "):
            continue
        elif stripped.startswith("}"):
            return item
        else:
            match = re.fullmatch(rf"({_IDENT})\s*(?:=\s*(.+?))?\s*,?", stripped)
            if not match:
                raise HeaderError(number, f"cannot read the enumerator {stripped!r}")
            value = match.group(2)
            declaration = f"{match.group(1)} = {value}" if value else match.group(1)
            item.members.append(Item("enumerator", match.group(1), declaration, pending, number))
            pending = []


def _read_struct(lines: _Lines, line_no: int, name: str, doc: List[str]) -> Item:
    item = Item("struct", name, name, doc, line_no)
    pending: List[str] = []
    while True:
        if lines.done():
            raise HeaderError(line_no, f"struct {name} without its end")
        number, raw = lines.take()
        stripped = raw.strip()
        comment = _comment_line(stripped)
        if comment is not None:
            pending.append(comment)
        elif stripped.startswith("/*"):
            pending.extend(_read_block_comment(lines, stripped))
        elif not stripped:
            continue
        elif stripped.startswith("}"):
            if not re.fullmatch(rf"}}\s*{re.escape(name)}?\s*;", stripped):
                raise HeaderError(number, f"unexpected end of struct {name}: {stripped!r}")
            return item
        else:
            declaration = _squeeze(lines.until_semicolon(stripped)).rstrip(";").strip()
            if "(" in declaration:
                member_name = _function_name(declaration, number, pointer=True)
            else:
                found = re.search(rf"({_IDENT})\s*(\[[^\]]*\])?$", declaration)
                if not found:
                    raise HeaderError(number, f"cannot read the member {declaration!r}")
                member_name = found.group(1)
            item.members.append(Item("member", member_name, declaration, pending, number))
            pending = []


def parse(text: str) -> List[Item]:
    """Every documented item of the header, in header order."""
    lines = _Lines(text)
    items: List[Item] = []
    enum_names = set()
    guard: Optional[str] = None
    doc: List[str] = []
    while not lines.done():
        number, raw = lines.take()
        stripped = raw.strip()
        comment = _comment_line(stripped)
        if comment is not None:
            doc.append(comment)
            continue
        if stripped.startswith("/*"):
            block = _read_block_comment(lines, stripped)
            # The file's banner (`/* ... */`, not a `/**` doc comment) documents nothing.
            doc = block if stripped.startswith("/**") else []
            continue
        if not stripped:
            doc = []
            continue
        if stripped.startswith("#"):
            directive = re.match(rf"#\s*(\w+)\s*({_IDENT})?(\([^)]*\))?\s*(.*)$", stripped)
            keyword = directive.group(1) if directive else ""
            if keyword in ("ifndef",) and guard is None and not items:
                guard = directive.group(2) if directive else None
            elif keyword == "define" and directive and directive.group(2) != guard:
                name, params, value = directive.group(2), directive.group(3) or "", directive.group(4).strip()
                # Helpers named with a trailing underscore and no comment (PSR_VERSION_STR_) are
                # the implementation of a documented macro, not API.
                if doc or not name.endswith("_"):
                    items.append(Item("macro", name, value, doc, number, params=params))
            doc = [] if keyword != "if" else doc
            continue
        if stripped in ('extern "C" {', "}", "{") or re.fullmatch(r"}\s*//.*", stripped):
            doc = []
            continue
        enum = re.fullmatch(rf"enum\s+({_IDENT})\s*\{{?", stripped)
        if enum:
            items.append(_read_enum(lines, number, enum.group(1), doc))
            enum_names.add(enum.group(1))
            doc = []
            continue
        opaque = re.fullmatch(rf"typedef\s+struct\s+({_IDENT})\s+({_IDENT})\s*;", stripped)
        if opaque:
            items.append(Item("opaque", opaque.group(1), opaque.group(1), doc, number))
            doc = []
            continue
        struct = re.fullmatch(rf"typedef\s+struct\s+({_IDENT})\s*\{{", stripped) or re.fullmatch(
            rf"struct\s+({_IDENT})\s*\{{", stripped
        )
        if struct:
            items.append(_read_struct(lines, number, struct.group(1), doc))
            doc = []
            continue
        if stripped.startswith("typedef"):
            declaration = _squeeze(lines.until_semicolon(stripped)).rstrip(";").strip()
            alias = re.fullmatch(rf"typedef\s+[\w\s\*]+?\s({_IDENT})", declaration)
            if alias and alias.group(1) in enum_names:
                # The C spelling of an enum with a fixed underlying type (cbindgen's
                # `typedef uint32_t psr_result;` under #ifndef __cplusplus): the enum says it.
                doc = []
                continue
            if "(" in declaration:
                body = declaration[len("typedef") :].strip()
                items.append(Item("callback", _function_name(body, number, pointer=True), body, doc, number))
            elif alias:
                items.append(Item("callback", alias.group(1), declaration[len("typedef") :].strip(), doc, number))
            else:
                raise HeaderError(number, f"cannot read the typedef {declaration!r}")
            doc = []
            continue
        if "(" in stripped:
            declaration = _squeeze(lines.until_semicolon(stripped)).rstrip(";").strip()
            items.append(Item("function", _function_name(declaration, number), declaration, doc, number))
            doc = []
            continue
        raise HeaderError(number, f"unknown construct {stripped!r}")
    return items
