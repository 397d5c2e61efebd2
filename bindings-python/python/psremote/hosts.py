"""Host lists for fleets (:func:`psremote.run_many`, ``psremote run -H/-f``): names, range
patterns and host files expanded into one list, and each host's client options (the shared ones
with the host's own overrides), checked as :class:`psremote.Client` checks them.

A range pattern is a host name with one or more ``[FIRST-LAST]`` parts of decimal digits:
``web[01-40].corp.example`` is ``web01`` ... ``web40`` (a first bound written with a leading
zero pads every number to its width), ``node[1-3]`` is ``node1``, ``node2``, ``node3``; several
ranges give every combination. A host file holds one host or pattern per line (commas or spaces
may put several on one line); ``#`` starts a comment.

A host entry may name its port (``server:5986``, ``[::1]:5985``) or be a whole URL
(``https://server:5986/wsman``). The entry as written is the host's name in the results
(``PSComputerName``).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Dict, List, Tuple, Union

from psremote._options import (
    DEFAULT_CONFIGURATION,
    SSH_ONLY,
    _split_url,
    build_options,
    check_transport,
    normalize_configuration_name,
)
from psremote.exceptions import ConfigurationError

__all__ = ["HostEntry", "HostsArg", "expand_hosts", "expand_pattern"]

#: One host of a fleet: a name, pattern or URL; a path-like naming a host file; a mapping with
#: ``host`` (or ``url``), an optional ``name`` and the host's own client options; or a
#: ``(host, options)`` pair.
HostEntry = Union[str, "os.PathLike[str]", Mapping[str, Any], Tuple[str, Mapping[str, Any]]]
#: The hosts of a fleet: one entry, or an iterable of entries.
HostsArg = Union[HostEntry, Iterable[HostEntry]]

#: The most hosts one pattern, file or list may expand to.
MAX_HOSTS = 1_000_000

_RANGE = re.compile(r"\[(\d+)-(\d+)\]")
_HOST_PORT = re.compile(r"^(\[[^\]]+\]|[^:\[\]]+):(\d{1,5})$")
_SEPARATORS = re.compile(r"[,\s]+")


def expand_pattern(pattern: str) -> List[str]:
    """The host names a range pattern stands for (the name itself when it has no range)."""
    parts = _RANGE.split(pattern)
    if len(parts) == 1:
        _check_brackets(pattern, pattern)
        return [pattern]
    choices: List[List[str]] = []
    count = 1
    for i in range(1, len(parts), 3):
        first, last = parts[i], parts[i + 1]
        low, high = int(first), int(last)
        if low > high:
            raise ConfigurationError(f"the range [{first}-{last}] in {pattern!r} counts down: write the lower bound first")
        width = len(first) if len(first) > 1 and first.startswith("0") else 0
        count *= high - low + 1
        if count > MAX_HOSTS:
            raise ConfigurationError(f"{pattern!r} stands for more than {MAX_HOSTS} hosts")
        choices.append([str(n).zfill(width) for n in range(low, high + 1)])
    texts = parts[0::3]
    for text in texts:
        _check_brackets(text, pattern)
    names = []
    for combination in itertools.product(*choices):
        pieces = [texts[0]]
        for number, text in zip(combination, texts[1:]):
            pieces.append(number)
            pieces.append(text)
        names.append("".join(pieces))
    return names


def _check_brackets(text: str, pattern: str) -> None:
    """Brackets outside a range are only allowed around an IPv6 address."""
    if "[" not in text and "]" not in text:
        return
    if re.fullmatch(r"(\w+://)?\[[0-9A-Fa-f:.%\w]*:[0-9A-Fa-f:.%\w]*\](:\d+)?(/.*)?", text):
        return
    raise ConfigurationError(
        f"cannot read the host pattern {pattern!r}: a range is [FIRST-LAST] with decimal numbers, "
        f"such as web[01-40].corp.example"
    )


def _split(text: str) -> List[str]:
    return [item for item in _SEPARATORS.split(text.strip()) if item]


def _read_file(path: "os.PathLike[str]") -> List[str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ConfigurationError(f"cannot read the host file {os.fspath(path)!r}: {e.strerror or e}") from None
    items: List[str] = []
    for line in lines:
        items.extend(_split(line.split("#", 1)[0]))
    return items


def expand_hosts(*sources: Union[str, "os.PathLike[str]", Iterable[Any]]) -> List[str]:
    """One list of host names from names, comma-separated lists and range patterns (``str``),
    host files (a path-like, such as a :class:`pathlib.Path`) and iterables of those, in the
    order given and each name once::

        expand_hosts("web[01-40].corp.example", "db1,db2", pathlib.Path("more-hosts.txt"))
    """
    out: Dict[str, None] = {}
    for source in sources:
        for name in _expand_one(source, depth=0):
            out.setdefault(name, None)
            if len(out) > MAX_HOSTS:
                raise ConfigurationError(f"more than {MAX_HOSTS} hosts")
    return list(out)


def _expand_one(source: Any, depth: int) -> List[str]:
    if isinstance(source, str):
        return [name for item in _split(source) for name in expand_pattern(item)]
    if isinstance(source, os.PathLike):
        return [name for item in _read_file(source) for name in expand_pattern(item)]
    if depth == 0 and isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        return [name for item in source for name in _expand_one(item, depth + 1)]
    raise ConfigurationError(
        f"a host must be a str (a name, 'a,b' or a pattern such as web[01-40]) or a path-like naming a host file, "
        f"not {type(source).__name__}"
    )


# --- the options of each host ----------------------------------------------------------------------


#: Client options that choose or configure a transport other than WS-Man: a fleet runs over
#: WS-Man only, so they are not fleet options (``transport='wsman'`` is accepted as the default).
NON_WSMAN_OPTIONS = ("transport", *SSH_ONLY, "executable", "arguments")


@functools.lru_cache(maxsize=1)
def _client_defaults_cached() -> Tuple[Tuple[str, Any], ...]:
    from psremote.client import _ClientBase

    parameters = inspect.signature(_ClientBase.__init__).parameters
    return tuple(
        (name, p.default)
        for name, p in parameters.items()
        if name not in ("self", "host", "ps_host", *NON_WSMAN_OPTIONS) and p.kind is inspect.Parameter.KEYWORD_ONLY
    )


def _only_wsman(options: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """``options`` without ``transport='wsman'``; any other transport, or an option of one, is
    refused: a fleet runs over WS-Man only."""
    out = dict(options)
    if "transport" in out:
        if check_transport(out.pop("transport")) != "wsman":
            raise ConfigurationError(f"{where}fleets (run_many, psremote run -H/-f) run over transport='wsman' only")
    named = [name for name in NON_WSMAN_OPTIONS if name in out]
    if named:
        raise ConfigurationError(
            f"{where}{', '.join(named)} apply to transport='ssh' or 'process'; fleets run over transport='wsman' only"
        )
    return out


def _client_defaults() -> Dict[str, Any]:
    """The defaults of ``psremote.Client(...)``'s options, read from its signature so a fleet
    host is configured exactly as a client with the same options would be."""
    return dict(_client_defaults_cached())


def _entry(entry: Any) -> List[Tuple[str, Dict[str, Any]]]:
    """``(name, own options)`` for each host an entry stands for."""
    if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], Mapping):
        host, options = entry
        return _entry({**options, "host": host})
    if isinstance(entry, Mapping):
        own = dict(entry)
        name = own.pop("name", None)
        if "host" in own and "url" in own:
            raise ConfigurationError(f"a host entry gives either 'host' or 'url', not both: {_shown(entry)}")
        target = own.get("url", own.get("host"))
        if not isinstance(target, str) or not target.strip():
            raise ConfigurationError(f"a host entry needs 'host' (or 'url'): {_shown(entry)}")
        if "host" in own:
            parsed = _target(own.pop("host"))
            own = {**parsed, **own}
        if name is None:
            name = target.strip()
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a host entry's 'name' must be a non-empty str: {_shown(entry)}")
        return [(name, own)]
    return [(name, _target(name)) for name in _expand_one(entry, depth=1)]


def _shown(entry: Mapping[str, Any]) -> str:
    """A host entry for an error message, without its secrets."""
    return repr({k: ("***" if "password" in str(k) else v) for k, v in entry.items()})


def _target(text: str) -> Dict[str, Any]:
    """``host``, ``host:port`` or a URL as client options."""
    text = text.strip()
    if "://" in text:
        return {"url": text}
    m = _HOST_PORT.match(text)
    if m:
        return {"host": m.group(1), "port": int(m.group(2))}
    return {"host": text}


def host_entries(hosts: Any) -> List[Tuple[str, Dict[str, Any]]]:
    """Every host of ``hosts`` (see :data:`HostsArg`) with its own options; names from strings,
    patterns and files appear once each."""
    if isinstance(hosts, (str, os.PathLike, Mapping)) or (isinstance(hosts, tuple) and len(hosts) == 2 and isinstance(hosts[1], Mapping)):
        hosts = [hosts]
    if not isinstance(hosts, Iterable):
        raise ConfigurationError(f"hosts must be a host, a host file or a list of hosts, not {type(hosts).__name__}")
    out: List[Tuple[str, Dict[str, Any]]] = []
    seen: Dict[str, None] = {}
    for entry in hosts:
        for name, own in _entry(entry):
            if not isinstance(entry, (Mapping, tuple)):
                if name in seen:
                    continue
                seen[name] = None
            out.append((name, own))
            if len(out) > MAX_HOSTS:
                raise ConfigurationError(f"more than {MAX_HOSTS} hosts")
    if not out:
        raise ConfigurationError("no hosts: give at least one host name, pattern or host file")
    return out


def shared_options(client_options: Mapping[str, Any]) -> Dict[str, Any]:
    """The options every host starts from: Client's defaults, then ``client_options``. A shared
    ``url`` gives the scheme, port and path; each host's name replaces its host part."""
    defaults = _client_defaults()
    client_options = _only_wsman(client_options, "")
    unknown = sorted(set(client_options) - set(defaults))
    if "host" in client_options:
        raise ConfigurationError("the hosts come from the hosts argument: give no host= option")
    if "ps_host" in client_options:
        raise ConfigurationError("run_many has no interactive host: ps_host is not supported")
    if unknown:
        raise TypeError(f"unexpected client option(s): {', '.join(unknown)}")
    given = dict(client_options)
    if "configuration_name" in given:
        given["configuration_name"] = normalize_configuration_name(given["configuration_name"])
    url = given.pop("url", None)
    shared = {**defaults, **given}
    shared["url"] = None
    if url is not None:
        if not isinstance(url, str):
            raise ConfigurationError(f"url must be a str, not {type(url).__name__}")
        _, port, path, https = _split_url(url)
        if given.get("port") is None and port is not None:
            shared["port"] = port
        if given.get("path") is None and path is not None:
            shared["path"] = path
        shared["https"] = bool(given.get("https")) or https
    return shared


def host_options(shared: Mapping[str, Any], name: str, own: Mapping[str, Any]) -> Any:
    """The validated :class:`~psremote._options.ClientOptions` of one host: ``shared`` updated by
    the host's own options. A host given as a URL takes its scheme, port and path from it."""
    own = _only_wsman(own, f"host {name!r}: ")
    unknown = sorted(set(own) - set(shared) - {"host"})
    if unknown:
        raise TypeError(f"host {name!r}: unexpected client option(s): {', '.join(unknown)}")
    options = dict(shared)
    if own.get("url") is not None:
        for key in ("port", "path", "https"):
            if key not in own:
                options[key] = _client_defaults()[key]
    if "configuration_name" in own and normalize_configuration_name(own["configuration_name"]) != normalize_configuration_name(
        shared.get("configuration_name", DEFAULT_CONFIGURATION)
    ):
        raise ConfigurationError(
            f"host {name!r}: every host of a run uses the run's configuration_name; give it to run_many, not per host"
        )
    options.update(own)
    host = options.pop("host", None)
    if options.get("url") is not None:
        host = None
    try:
        return build_options(host, **options)
    except ConfigurationError as e:
        raise ConfigurationError(f"host {name!r}: {e}") from None
