"""Python classes for the PowerShell values that have no builtin equivalent.

The native module instantiates these while decoding CLIXML, so their constructors are part of
the contract with it and must stay cheap (``__slots__``, no validation beyond what is needed).

Mapping (server -> Python): strings, chars, URIs and versions -> ``str``; integers -> ``int``;
Single/Double -> ``float``; Decimal -> ``decimal.Decimal``; byte arrays -> ``bytes``; GUIDs ->
``uuid.UUID``; DateTime -> tz-aware ``datetime``; TimeSpan -> ``timedelta``; $null -> ``None``;
lists -> ``list``; hashtables -> ``dict``; enums -> :class:`PSEnum`; SecureString ->
:class:`SecureString`; PSCredential -> :class:`PSCredential`; any other object ->
:class:`PSObject`. The same types go the other way, plus dataclass instances and mappings
wrapped by :func:`PSCustomObject`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hmac
import html
import reprlib
from collections.abc import Mapping
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Union

__all__ = [
    "NetworkCredential",
    "PSCredential",
    "PSCustomObject",
    "PSEnum",
    "PSObject",
    "SecureString",
    "to_pscustomobject",
]

_PSCUSTOMOBJECT_TYPES = ["System.Management.Automation.PSCustomObject", "System.Object"]
_MISSING = object()

_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60
_short_repr.maxlist = 6
_short_repr.maxdict = 6
_short_repr.maxlevel = 2


def _short(value: Any) -> str:
    """A short, readable repr for property values in PSObject's repr."""
    if isinstance(value, datetime.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, PSObject):
        return f"<{_type_short_name(value.type_names)}>" if value.to_string is None else _short_repr.repr(value.to_string)
    return _short_repr.repr(value)


def _type_short_name(type_names: List[str]) -> str:
    if not type_names:
        return "PSObject"
    name = type_names[0]
    if name.startswith("Deserialized."):
        name = name[len("Deserialized.") :]
    return name.rsplit(".", 1)[-1].rsplit("+", 1)[-1] or name


class SecureString:
    """A string the server keeps secret (System.Security.SecureString).

    The plaintext is only available through :meth:`get_value`; ``repr``, ``str``, format
    strings and logs show ``SecureString(***)``. Values travel encrypted with the runspace
    pool's session key (the pool exchanges it before the first SecureString is sent).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"SecureString takes a str, not {type(value).__name__}")
        self._value = value

    def get_value(self) -> str:
        """Returns the plaintext."""
        return self._value

    def __repr__(self) -> str:
        return "SecureString(***)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecureString):
            return NotImplemented
        # Constant time, so a comparison does not tell how much of a secret matched.
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a SecureString cannot be pickled; call get_value() explicitly if you must")


class NetworkCredential(NamedTuple):
    """User name, domain and plaintext password, like .NET's NetworkCredential."""

    user_name: str
    domain: str
    password: str

    def __repr__(self) -> str:
        return f"NetworkCredential(user_name={self.user_name!r}, domain={self.domain!r}, password='***')"


class PSCredential:
    """A user name and a :class:`SecureString` password (System.Management.Automation.PSCredential)."""

    __slots__ = ("username", "password")

    def __init__(self, username: str, password: Union[SecureString, str, None]) -> None:
        if not isinstance(username, str):
            raise TypeError(f"PSCredential username must be a str, not {type(username).__name__}")
        if password is None:
            # The server sent a credential without a password (or one this client cannot read).
            password = SecureString("")
        elif isinstance(password, str):
            password = SecureString(password)
        elif not isinstance(password, SecureString):
            raise TypeError(f"PSCredential password must be a SecureString or str, not {type(password).__name__}")
        self.username: str = username
        self.password: SecureString = password

    def get_network_credential(self) -> NetworkCredential:
        """Splits ``DOMAIN\\user`` or ``user@domain`` and reveals the password."""
        user, domain = self.username, ""
        if "\\" in user:
            domain, user = user.split("\\", 1)
        elif "@" in user:
            user, domain = user.split("@", 1)
        return NetworkCredential(user, domain, self.password.get_value())

    def __repr__(self) -> str:
        return f"PSCredential(username={self.username!r}, password=SecureString(***))"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PSCredential):
            return NotImplemented
        return self.username == other.username and self.password == other.password

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> Any:
        raise TypeError("a PSCredential cannot be pickled")


class PSEnum(int):
    """A .NET enum value: an ``int`` that also knows its name and type.

    ``repr`` looks like ``<ConsoleColor.Blue: 9>``; it compares equal to its integer value.
    Flags enums carry the combined name (``"ReadOnly, Hidden"``).
    """

    # int subclasses cannot have non-empty __slots__; the two attributes live in __dict__.
    name: str
    type_names: List[str]

    def __new__(cls, value: int, name: str, type_names: List[str]) -> "PSEnum":
        self = super().__new__(cls, value)
        self.name = name
        self.type_names = type_names
        return self

    @property
    def value(self) -> int:
        return int(self)

    def __repr__(self) -> str:
        return f"<{_type_short_name(self.type_names)}.{self.name}: {int(self)}>"

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(int(self), spec) if spec else self.name

    def __reduce__(self) -> Any:
        return (PSEnum, (int(self), self.name, list(self.type_names)))

    # Equality and hashing stay those of int: PSEnum(9, "Blue", ...) == 9.
    __eq__ = int.__eq__
    __hash__ = int.__hash__


class PSObject:
    """A PowerShell object: type names, properties and a ``ToString()`` text.

    ``obj.Name`` and ``obj["Name"]`` look up the extended (note) properties first, then the
    adapted (.NET) ones; an exact name wins, otherwise the lookup is case-insensitive like
    PowerShell's. Iterating yields the property names; ``obj[0]`` indexes the container for
    objects that also carry one (``items``, a list or dict), and ``value`` holds the primitive
    an object wraps (a string with added note properties, for instance).
    """

    __slots__ = ("type_names", "to_string", "adapted_properties", "extended_properties", "value", "items")

    def __init__(
        self,
        type_names: List[str],
        to_string: Optional[str],
        adapted: Dict[str, Any],
        extended: Dict[str, Any],
        value: Any = None,
        items: Union[List[Any], Dict[Any, Any], None] = None,
    ) -> None:
        self.type_names = type_names
        self.to_string = to_string
        self.adapted_properties = adapted
        self.extended_properties = extended
        self.value = value
        self.items = items

    # --- property access -------------------------------------------------------------------

    def _lookup(self, name: str, default: Any = _MISSING) -> Any:
        extended = self.extended_properties
        if name in extended:
            return extended[name]
        adapted = self.adapted_properties
        if name in adapted:
            return adapted[name]
        folded = name.casefold()
        for props in (extended, adapted):
            for key, value in props.items():
                if key.casefold() == folded:
                    return value
        return default

    @property
    def properties(self) -> Dict[str, Any]:
        """All properties in one dict: adapted ones, then extended ones (which win on a clash)."""
        merged = dict(self.adapted_properties)
        merged.update(self.extended_properties)
        return merged

    def get(self, name: str, default: Any = None) -> Any:
        return self._lookup(name, default)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal attribute lookup fails, so slots and methods win.
        if name.startswith("__") or name in PSObject.__slots__:
            raise AttributeError(name)
        value = self._lookup(name)
        if value is _MISSING:
            raise AttributeError(f"{_type_short_name(self.type_names)} object has no property {name!r}")
        return value

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            value = self._lookup(key)
            if value is not _MISSING:
                return value
            if isinstance(self.items, dict) and key in self.items:
                return self.items[key]
            raise KeyError(key)
        if self.items is None:
            raise TypeError(f"{_type_short_name(self.type_names)} object has no items to index")
        return self.items[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._lookup(name) is not _MISSING

    def __iter__(self) -> Iterator[str]:
        return iter(self.properties)

    def __len__(self) -> int:
        return len(self.properties)

    def __dir__(self) -> List[str]:
        names = set(super().__dir__())
        names.update(k for k in self.properties if k.isidentifier())
        return sorted(names)

    # --- comparison and display -----------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PSObject):
            return NotImplemented
        return (
            self.type_names == other.type_names
            and self.adapted_properties == other.adapted_properties
            and self.extended_properties == other.extended_properties
            and self.value == other.value
            and self.items == other.items
            and self.to_string == other.to_string
        )

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        if self.to_string is not None:
            return self.to_string
        if self.value is not None:
            return str(self.value)
        return repr(self)

    def __repr__(self) -> str:
        parts = [_type_short_name(self.type_names)]
        if self.value is not None:
            parts.append(_short(self.value))
        props = self.properties
        for i, (key, value) in enumerate(props.items()):
            if i == 8:
                parts.append(f"... ({len(props) - 8} more)")
                break
            parts.append(f"{key}={_short(value)}")
        if self.items is not None:
            parts.append(f"items={_short(self.items)}")
        return f"<PSObject {' '.join(parts)}>"

    def _repr_html_(self) -> str:
        title = html.escape(self.type_names[0] if self.type_names else "PSObject")
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td style='text-align:left'>{_html_value(v)}</td></tr>"
            for k, v in self.properties.items()
        )
        if self.value is not None:
            rows = f"<tr><th style='text-align:left'>(value)</th><td>{_html_value(self.value)}</td></tr>" + rows
        return f"<table><caption style='text-align:left'>{title}</caption><tbody>{rows}</tbody></table>"

    def __reduce__(self) -> Any:
        return (
            PSObject,
            (self.type_names, self.to_string, self.adapted_properties, self.extended_properties, self.value, self.items),
        )


def _html_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, PSObject):
        text = str(value)
    elif isinstance(value, (list, tuple)):
        text = "{" + ", ".join(str(v) for v in value[:10]) + (", ..." if len(value) > 10 else "") + "}"
    else:
        text = str(value)
    if len(text) > 200:
        text = text[:197] + "..."
    return html.escape(text)


def PSCustomObject(mapping: Optional[Mapping[str, Any]] = None, /, **properties: Any) -> PSObject:
    """A ``[PSCustomObject]`` with the given properties in order, for sending to the server.

    ``PSCustomObject({"Name": "x"}, Size=3)``; nested dataclasses become PSCustomObjects too.
    """
    props: Dict[str, Any] = {}
    if mapping is not None:
        if dataclasses.is_dataclass(mapping) and not isinstance(mapping, type):
            return to_pscustomobject(mapping)
        props.update(mapping)
    props.update(properties)
    for key in props:
        if not isinstance(key, str):
            raise TypeError(f"PSCustomObject property names must be str, not {type(key).__name__}")
    return PSObject(list(_PSCUSTOMOBJECT_TYPES), None, {}, {k: _convert_field(v) for k, v in props.items()})


def to_pscustomobject(obj: Any) -> PSObject:
    """Turns a dataclass instance or a mapping into a ``[PSCustomObject]`` (fields in order)."""
    if isinstance(obj, PSObject):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        props = {f.name: _convert_field(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return PSObject(list(_PSCUSTOMOBJECT_TYPES), None, {}, props)
    if isinstance(obj, Mapping):
        return PSCustomObject(obj)
    raise TypeError(f"cannot make a PSCustomObject from {type(obj).__name__}; pass a dataclass instance or a mapping")


def _convert_field(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_pscustomobject(value)
    if isinstance(value, list):
        return [_convert_field(v) for v in value]
    return value


# Types that never hold a secret.
_PLAIN = frozenset({str, int, float, bool, bytes, type(None)})


def contains_secret(value: Any, _depth: int = 0) -> bool:
    """Whether a value holds a SecureString or PSCredential (which need the session key)."""
    t = type(value)
    if t in _PLAIN:
        return False
    if t is SecureString or t is PSCredential or isinstance(value, (SecureString, PSCredential)):
        return True
    if _depth > 8:
        return False
    if isinstance(value, (list, tuple)):
        return any(contains_secret(v, _depth + 1) for v in value)
    if isinstance(value, dict):
        return any(contains_secret(v, _depth + 1) for v in value.values())
    if isinstance(value, PSObject):
        return any(
            contains_secret(v, _depth + 1)
            for v in (*value.adapted_properties.values(), *value.extended_properties.values())
        )
    return False
