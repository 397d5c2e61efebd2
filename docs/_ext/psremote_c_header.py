"""Sphinx extension: the C reference, read from ``include/psremote.h`` at build time.

``` {c-header}
```

in a MyST page emits one section per group of the API (by name prefix, ``GROUPS`` below) with
a C-domain directive (``c:function``, ``c:enum`` and ``c:enumerator``, ``c:struct`` and
``c:member``, ``c:type``, ``c:macro``) per item of the header, its doc comment as the text.
Names in backticks that the header declares become cross-references. A function the C
library adds appears without an edit here: it lands in the group of its prefix, or in
"Other functions" when no prefix matches. The header path is the ``psremote_c_header``
setting of conf.py; the build is re-run when the header changes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Tuple

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_id

from cheader import HeaderError, Item, parse

#: (title, intro, name prefixes) in the order the page shows them. An item goes to the group
#: with the longest prefix its lower-case name starts with.
GROUPS: List[Tuple[str, str, Tuple[str, ...]]] = [
    (
        "Version, errors and strings",
        "Every fallible call returns a {c:enum}`psr_result`; most take a `struct psr_error **` "
        "out-parameter that receives the details on failure (free it with {c:func}`psr_error_free`).",
        ("psr_version", "psr_result", "psr_error", "psr_string", "psr_set_log"),
    ),
    ("Configuration", "Settings of a client, checked before any I/O.", ("psr_config",)),
    ("Client", "A connection to one endpoint.", ("psr_client",)),
    (
        "Runspace pools",
        "Runspace pools, their options, host callbacks, disconnecting and reconnecting.",
        ("psr_pool", "psr_buffer_mode", "psr_host", "psr_client_pool", "psr_client_list_pools"),
    ),
    (
        "Pipelines and results",
        "Running PowerShell: pipelines, streaming callbacks and what a finished pipeline produced.",
        ("psr_pipeline", "psr_callbacks", "psr_stream", "psr_state", "psr_invocation", "psr_pool_start"),
    ),
    (
        "Cmd shells (WinRS)",
        "Windows Remote Shell: commands and their stdin, stdout and stderr.",
        ("psr_cmd", "psr_run_cmd", "psr_client_run_cmd", "psr_client_cmd_shell"),
    ),
    ("Files", "Copying files to and fetching them from the server.", ("psr_transfer", "psr_progress", "psr_client_copy", "psr_client_fetch")),
    ("Fleets", "One script or command on many hosts at once.", ("psr_fleet", "psr_host_status")),
]
OTHER = ("Other functions", "Items whose names belong to no group above.")

_ROLE = {
    "function": "c:func",
    "enum": "c:enum",
    "enumerator": "c:enumerator",
    "struct": "c:struct",
    "opaque": "c:struct",
    "callback": "c:type",
    "macro": "c:macro",
}


def group_of(name: str) -> str:
    """The title of the group ``name`` belongs to."""
    best, length = OTHER[0], 0
    lowered = name.lower()
    for title, _, prefixes in GROUPS:
        for prefix in prefixes:
            if lowered.startswith(prefix) and len(prefix) > length:
                best, length = title, len(prefix)
    return best


def _targets(items: List[Item]) -> Dict[str, str]:
    """Name -> the MyST role text that links to it."""
    roles: Dict[str, str] = {}
    members: Dict[str, List[str]] = {}
    for item in items:
        roles[item.name] = f"{{{_ROLE[item.kind]}}}`{item.name}`"
        for member in item.members:
            if member.kind == "enumerator":
                roles[member.name] = f"{{c:enumerator}}`{member.name}`"
            else:
                members.setdefault(member.name, []).append(item.name)
    for name, owners in members.items():
        # A member name is linked only when one struct has it (`userdata` is in several).
        if len(owners) == 1 and name not in roles:
            roles[name] = f"{{c:member}}`{name} <{owners[0]}.{name}>`"
    return roles


_CODE = re.compile(r"(`+)(.+?)\1")


def markdown(lines: List[str], roles: Dict[str, str]) -> List[str]:
    """The comment as MyST Markdown: code spans naming a declared item become links; text
    outside code cannot start HTML or emphasis by accident."""
    out: List[str] = []
    for line in lines:
        pieces: List[str] = []
        position = 0
        for match in _CODE.finditer(line):
            pieces.append(_plain(line[position : match.start()]))
            code = match.group(2).strip()
            bare = code[:-2] if code.endswith("()") else code
            pieces.append(roles.get(bare, match.group(0)))
            position = match.end()
        pieces.append(_plain(line[position:]))
        out.append("".join(pieces))
    return out


def _plain(text: str) -> str:
    return text.replace("\\", "\\\\").replace("<", "&lt;").replace("*", "\\*").replace("_", "\\_")


def _fence(directive: str, argument: str, body: List[str], ticks: int = 3, options: Tuple[str, ...] = ()) -> List[str]:
    fence = "`" * ticks
    return [f"{fence}{{{directive}}} {argument}", *options, *body, fence, ""]


def render(item: Item, roles: Dict[str, str]) -> List[str]:
    """The MyST lines documenting one item."""
    doc = markdown(item.doc, roles) + [""]
    if item.kind == "function":
        return _fence("c:function", item.declaration, doc)
    if item.kind == "callback":
        return _fence("c:type", item.declaration, doc)
    if item.kind == "macro":
        value = [f"Value: `{item.declaration}`", ""] if item.declaration else []
        return _fence("c:macro", item.name + item.params, doc + value)
    if item.kind == "opaque":
        note = ["An opaque handle: only pointers to it are used; its layout is private.", ""]
        return _fence("c:struct", item.name, doc + note)
    inner: List[str] = []
    for member in item.members:
        member_doc = markdown(member.doc, roles) + [""]
        kind = "c:enumerator" if member.kind == "enumerator" else "c:member"
        inner.extend(_fence(kind, member.declaration, member_doc))
    return _fence("c:enum" if item.kind == "enum" else "c:struct", item.name, doc + inner, ticks=4)


class CHeaderDirective(SphinxDirective):
    """``{c-header}``: the whole C API, one section per group."""

    has_content = False

    def run(self) -> List[nodes.Node]:
        path = Path(self.config.psremote_c_header)
        self.env.note_dependency(str(path))
        try:
            items = parse(path.read_text(encoding="utf-8"))
        except (OSError, HeaderError) as error:
            raise self.error(f"{path}: {error}") from None
        roles = _targets(items)
        grouped: Dict[str, List[Item]] = {}
        for item in items:
            grouped.setdefault(group_of(item.name), []).append(item)
        result: List[nodes.Node] = []
        for title, intro, _ in GROUPS + [(OTHER[0], OTHER[1], ())]:
            members = grouped.get(title)
            if not members:
                continue
            section = nodes.section()
            section["ids"].append(make_id(self.env, self.state.document, "c-api", title))
            section += nodes.title(text=title)
            lines = [intro, ""]
            # Handles and types first, then functions, each in header order.
            for item in sorted(members, key=lambda i: (i.kind == "function", i.line)):
                lines.extend(render(item, roles))
            self.state.nested_parse(StringList(lines, source=str(path)), 0, section)
            section["names"].append(nodes.fully_normalize_name(title))
            self.state.document.note_implicit_target(section, section)
            result.append(section)
        return result


def setup(app: Sphinx) -> dict:
    app.add_config_value("psremote_c_header", "", "env")
    app.add_directive("c-header", CHeaderDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
