"""The migration guide's tables against the libraries they describe.

* Every public name of pypsrp's ``Client``, ``WSMan``, ``RunspacePool`` and ``PowerShell`` and
  pywinrm's ``Session`` and ``Protocol`` (methods, properties and class attributes, read from
  the installed classes and their public bases; the attributes a freshly built object holds;
  the keywords their constructors take, pypsrp's per-mechanism ``AUTH_KWARGS`` included) must
  appear in the first column of a table in ``docs/migration.md``, written ``Class.name`` (or
  ``Class(keyword=)`` for a constructor keyword).
* Every psremote name the tables mention must exist: ``Class.name`` and ``module.name`` resolve
  by import and getattr (dataclass fields, named-tuple fields and attributes the class's
  ``__init__`` assigns count), ``Callable(keyword=)`` names a parameter of that callable, and
  ``psremote SUBCOMMAND ... --switch`` names a subcommand and its switches in the CLI's parser.
* The pypsrp and pywinrm names of the first column must exist as well (a table that names a
  method the library does not have misleads as much as one that misses a method).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
import shlex
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest

import pypsrp.client
import pypsrp.powershell
import pypsrp.wsman
import winrm
import winrm.protocol

import psremote
import psremote.cli

GUIDE = Path(__file__).resolve().parents[1] / "migration.md"

#: The classes the issue names, by the name the guide's first column uses.
CLASSES: Dict[str, type] = {
    "Client": pypsrp.client.Client,
    "WSMan": pypsrp.wsman.WSMan,
    "RunspacePool": pypsrp.powershell.RunspacePool,
    "PowerShell": pypsrp.powershell.PowerShell,
    "Session": winrm.Session,
    "Protocol": winrm.protocol.Protocol,
}

#: pypsrp's keywords that ``WSMan`` takes through ``**kwargs``, per authentication mechanism.
EXTRA_KEYWORDS: Dict[str, List[str]] = {
    "WSMan": [k for names in pypsrp.wsman.AUTH_KWARGS.values() for k in names],
}

#: Capitalised words the psremote column may use that are not psremote's: Python types, the
#: old libraries' own names and PowerShell's.
NOT_PSREMOTE = {
    "Decimal", "UUID", "WSMan", "Command", "Response", "RunspacePoolState", "PSVersionTable", "PSVersion",
    "SerializationVersion",
}

#: psremote's modules: ``aio.AsyncClient`` and ``cmd.INVALID_SELECTORS`` are checked like
#: ``psremote.aio.AsyncClient``; other lower-case roots are variables in snippets.
SUBMODULES = {m.name for m in pkgutil.iter_modules(psremote.__path__)}

_CODE = re.compile(r"`([^`]+)`")
_MEMBER = re.compile(r"^([A-Za-z_][\w.]*)\.([A-Za-z_]\w*)$")
_KEYWORD = re.compile(r"^([A-Za-z_][\w.]*)\(([A-Za-z_]\w*)=\)$")


# --- reading the guide ------------------------------------------------------------------------


def table_rows(text: str) -> Iterator[Tuple[int, List[str]]]:
    """(line number, cells) of every body row of every Markdown table."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            continue
        if re.match(r"^\|[\s:|-]+\|$", line):
            continue  # the separator row
        if i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|$", lines[i + 1]):
            continue  # the header row
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        yield i + 1, cells


def guide_rows() -> List[Tuple[int, List[str]]]:
    rows = list(table_rows(GUIDE.read_text(encoding="utf-8")))
    assert rows, f"no tables in {GUIDE}"
    return rows


def covered_names() -> Dict[str, Set[str]]:
    """What the first column covers: {class name: {member or keyword}}."""
    covered: Dict[str, Set[str]] = {name: set() for name in CLASSES}
    for _, cells in guide_rows():
        for token in _CODE.findall(cells[0]):
            for pattern in (_KEYWORD, _MEMBER):
                m = pattern.match(token)
                if m and m.group(1) in CLASSES:
                    covered[m.group(1)].add(m.group(2))
    return covered


def psremote_tokens() -> List[Tuple[int, str]]:
    """The code spans of every column after the first: (line, token)."""
    tokens = []
    for line, cells in guide_rows():
        for cell in cells[1:]:
            tokens.extend((line, t) for t in _CODE.findall(cell))
    return tokens


# --- the libraries' public names ---------------------------------------------------------------


def public_bases(cls: type) -> List[type]:
    return [c for c in cls.__mro__ if c is not object and not c.__name__.startswith("_")]


def class_names(cls: type) -> Set[str]:
    """Methods, properties and class attributes of the class and its public bases."""
    names = set()
    for base in public_bases(cls):
        names.update(n for n in vars(base) if not n.startswith("_"))
    return names


def instances() -> Dict[str, Any]:
    """One object of each class, built without touching the network (constructors do none)."""
    client = pypsrp.client.Client("win01.example.com", username="alice", password="x", ssl=False, auth="ntlm")
    pool = pypsrp.powershell.RunspacePool(client.wsman)
    session = winrm.Session("win01.example.com", auth=("alice", "x"), transport="ntlm")
    return {
        "Client": client,
        "WSMan": client.wsman,
        "RunspacePool": pool,
        "PowerShell": pypsrp.powershell.PowerShell(pool),
        "Session": session,
        "Protocol": session.protocol,
    }


def constructor_keywords(name: str, cls: type) -> Set[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    names = {p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names | set(EXTRA_KEYWORDS.get(name, []))


def expected_names() -> Dict[str, Tuple[Set[str], Set[str]]]:
    """{class name: (public members, constructor keywords)}."""
    objects = instances()
    out = {}
    for name, cls in CLASSES.items():
        members = class_names(cls) | {n for n in vars(objects[name]) if not n.startswith("_")}
        out[name] = (members, constructor_keywords(name, cls))
    return out


# --- resolving psremote names -------------------------------------------------------------------


def _assigned_attributes(cls: type) -> Set[str]:
    """Names a class's methods assign as ``self.name`` (instance attributes)."""
    names: Set[str] = set()
    for base in cls.__mro__:
        if base is object or base.__module__.split(".")[0] != "psremote":
            continue
        try:
            source = textwrap.dedent(inspect.getsource(base))
        except (OSError, TypeError):
            continue
        for node in ast.walk(ast.parse(source)):
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    names.add(t.attr)
    return names


def has_member(obj: Any, name: str) -> bool:
    if hasattr(obj, name):
        return True
    if inspect.isclass(obj):
        if dataclasses.is_dataclass(obj) and name in {f.name for f in dataclasses.fields(obj)}:
            return True
        if name in getattr(obj, "_fields", ()):  # NamedTuple
            return True
        return name in _assigned_attributes(obj)
    return False


def resolve(dotted: str) -> Any:
    """``psremote.X.Y``, ``X.Y`` (X exported by psremote) or ``module.X`` (a psremote module)."""
    parts = dotted.split(".")
    if parts[0] == "psremote":
        parts = parts[1:]
    obj: Any = psremote
    for i, part in enumerate(parts):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        if inspect.ismodule(obj):
            try:
                obj = importlib.import_module(f"{obj.__name__}.{part}")
                continue
            except ImportError:
                pass
        raise LookupError(f"{'.'.join(parts[: i + 1])} does not exist in psremote")
    return obj


def keyword_exists(func: Any, keyword: str) -> bool:
    """Whether ``func(keyword=...)`` names a parameter (for a class, of any ``__init__`` in its MRO:
    ``Client.__init__`` passes ``**kwargs`` on to its base)."""
    candidates = [base.__init__ for base in func.__mro__ if "__init__" in vars(base)] if inspect.isclass(func) else [func]
    for candidate in candidates:
        try:
            params = inspect.signature(candidate).parameters
        except (TypeError, ValueError):
            continue
        if keyword in params and params[keyword].kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            return True
    return False


def cli_subcommands() -> Dict[str, Set[str]]:
    parser = psremote.cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: {opt for action in p._actions for opt in action.option_strings} for name, p in sub.choices.items()}


def check_psremote_token(token: str, cli: Dict[str, Set[str]]) -> str:
    """'' when the token names something that exists, else what is wrong; tokens that are no
    reference (values, strings, snippets) are ''."""
    token = token.strip()
    if token.startswith("psremote "):
        words = shlex.split(token)
        if len(words) < 2 or words[1] not in cli:
            return f"no CLI subcommand in {token!r}"
        missing = [w for w in words[2:] if w.startswith("-") and w.split("=")[0] not in cli[words[1]]]
        return f"CLI {words[1]} has no {', '.join(missing)}" if missing else ""
    m = _KEYWORD.match(token)
    if m:
        try:
            func = resolve(m.group(1))
        except LookupError as e:
            return str(e)
        return "" if keyword_exists(func, m.group(2)) else f"{m.group(1)} takes no keyword {m.group(2)!r}"
    m = _MEMBER.match(token)
    root = m.group(1).split(".")[0] if m else ""
    if m and (root == "psremote" or root in SUBMODULES or root[:1].isupper()):
        try:
            owner = resolve(m.group(1))
        except LookupError as e:
            return str(e)
        return "" if has_member(owner, m.group(2)) else f"{m.group(1)} has no {m.group(2)!r}"
    if re.match(r"^[A-Z][A-Za-z]+$", token) and token not in ("True", "False", "None") and token not in NOT_PSREMOTE:
        # A bare class name (PSResult, CmdResult...) must be one psremote exports.
        try:
            resolve(token)
        except LookupError as e:
            return str(e)
    return ""


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_public_name_is_in_the_table(name: str) -> None:
    members, keywords = expected_names()[name]
    covered = covered_names()[name]
    missing = sorted((members | keywords) - covered)
    assert not missing, f"docs/migration.md has no row for {', '.join(f'{name}.{m}' for m in missing)}"


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_the_table_names_only_what_the_library_has(name: str) -> None:
    members, keywords = expected_names()[name]
    unknown = sorted(covered_names()[name] - members - keywords)
    assert not unknown, f"docs/migration.md names {', '.join(f'{name}.{m}' for m in unknown)}, which do not exist"


def test_every_psremote_name_in_the_tables_exists() -> None:
    cli = cli_subcommands()
    problems = [f"line {line}: `{token}`: {why}" for line, token in psremote_tokens() if (why := check_psremote_token(token, cli))]
    assert not problems, "\n".join(problems)


def test_other_library_names_in_the_first_column_exist() -> None:
    """Exceptions and modules named in the first column (``pypsrp.exceptions.X``)."""
    problems = []
    for line, cells in guide_rows():
        for token in _CODE.findall(cells[0]):
            root = token.split(".")[0]
            if root not in ("pypsrp", "winrm", "requests") or "(" in token:
                continue
            module, _, attr = token.rpartition(".")
            try:
                if not hasattr(importlib.import_module(module), attr):
                    problems.append(f"line {line}: {token}")
            except ImportError:
                problems.append(f"line {line}: {token} (no module {module})")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_wrong_names() -> None:
    """The resolution above is what makes the tables trustworthy: it must refuse made-up names."""
    cli = cli_subcommands()
    assert check_psremote_token("Client.run_ps", cli) == ""
    assert check_psremote_token("Client(trusted_hosts=)", cli) == ""
    assert check_psremote_token("PSResult.errors", cli) == ""  # a dataclass field
    assert check_psremote_token("RunspacePool.id", cli) == ""  # assigned in __init__
    assert check_psremote_token("psremote run HOST --trusted-hosts X", cli) == ""
    assert check_psremote_token("Client.execute_ps", cli)
    assert check_psremote_token("Client(cert_validation=)", cli)
    assert check_psremote_token("aio.AsyncSession", cli)
    assert check_psremote_token("psremote run --ca-trust-path X", cli)
    assert check_psremote_token("psremote exec HOST", cli)
    assert check_psremote_token("PSResults", cli)


def test_counts() -> None:
    """Prints how much of each class the guide covers (run with -s to see it)."""
    expected = expected_names()
    covered = covered_names()
    for name, (members, keywords) in sorted(expected.items()):
        total = members | keywords
        print(f"{name}: {len(total & covered[name])}/{len(total)} names ({len(members)} members, {len(keywords)} keywords)")
        assert total <= covered[name]
