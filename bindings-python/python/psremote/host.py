"""Host callbacks: answering the server's PSHost calls (Read-Host, Get-Credential, prompts).

Subclass :class:`PSHost` and override what your application can do; pass an instance as
``host=`` when opening a runspace pool. The native module calls :meth:`PSHost.call` on a
worker thread for every host call, in order; it dispatches by PowerShell's method name
(MS-PSRP 2.2.3.17) to the snake_case methods below. A method that raises
``NotImplementedError`` (the default for everything that needs a person) answers "not
implemented"; any other exception answers with its message as an error record, which the
server writes to the error stream.

Void methods (``write_line`` and friends) are called too, and also arrive as ``"host"``
events in the pipeline's event stream; the base class ignores them.
"""

from __future__ import annotations

import getpass
import shutil
import sys
import uuid
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple, Union

from psremote._text import printable
from psremote.records import ProgressRecord
from psremote.values import PSCredential, PSEnum, PSObject, SecureString

__all__ = ["ConsoleHost", "PSHost"]

_CONSOLE_COLOR_TYPES = ["System.ConsoleColor", "System.Enum", "System.ValueType", "System.Object"]
CONSOLE_COLORS = (
    "Black", "DarkBlue", "DarkGreen", "DarkCyan", "DarkRed", "DarkMagenta", "DarkYellow", "Gray",
    "DarkGray", "Blue", "Green", "Cyan", "Red", "Magenta", "Yellow", "White",
)  # fmt: skip


def console_color(value: Union[int, str]) -> PSEnum:
    """A System.ConsoleColor value from its number or name."""
    if isinstance(value, str):
        index = [c.lower() for c in CONSOLE_COLORS].index(value.lower())
    else:
        index = int(value)
    return PSEnum(index, CONSOLE_COLORS[index], list(_CONSOLE_COLOR_TYPES))


def _size(width: int, height: int) -> PSObject:
    return PSObject(
        ["System.Management.Automation.Host.Size", "System.ValueType", "System.Object"],
        f"{width},{height}",
        {"Width": width, "Height": height},
        {},
    )


def _coordinates(x: int, y: int) -> PSObject:
    return PSObject(
        ["System.Management.Automation.Host.Coordinates", "System.ValueType", "System.Object"],
        f"{x},{y}",
        {"X": x, "Y": y},
        {},
    )


def _prop(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, PSObject):
        return obj.get(name, default)
    if isinstance(obj, dict):
        return obj.get(name, default)
    return default


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class PSHost:
    """Base class of host implementations. Every method can be overridden.

    Attributes used by the getters: ``name``, ``version``, ``instance_id``,
    ``foreground_color``, ``background_color``, ``cursor_position``, ``window_position``,
    ``cursor_size``, ``buffer_size``, ``window_size``, ``max_window_size``,
    ``max_physical_window_size``, ``window_title``.

    With ``raw_ui = True`` (the default) the pool declares a raw UI, so ``$host.UI.RawUI`` is
    not ``$null`` on the server, and sends :meth:`host_defaults` when it opens (PowerShell's
    own client does the same); set ``raw_ui = False`` for a host with a UI only.
    """

    name: str = "psremote"
    version: str = "1.0"
    raw_ui: bool = True
    foreground_color: int = 7  # Gray
    background_color: int = 0  # Black
    cursor_position: Tuple[int, int] = (0, 0)
    window_position: Tuple[int, int] = (0, 0)
    cursor_size: int = 25
    buffer_size: Tuple[int, int] = (120, 3000)
    window_size: Tuple[int, int] = (120, 50)
    max_window_size: Optional[Tuple[int, int]] = None  # the window size when None
    max_physical_window_size: Optional[Tuple[int, int]] = None  # the window size when None
    window_title: str = "psremote"

    def __init__(self) -> None:
        self.instance_id = uuid.uuid4()

    # --- the entry points the native module calls --------------------------------------------

    def host_defaults(self) -> Optional[Dict[str, Any]]:
        """The raw UI's state when the pool opens (MS-PSRP HostDefaultData), or ``None`` for a
        host without a raw UI. Keys: ``foreground_color``, ``background_color`` (ConsoleColor
        numbers), ``cursor_position``, ``window_position`` ((x, y)), ``cursor_size``,
        ``buffer_size``, ``window_size``, ``max_window_size``, ``max_physical_window_size``
        ((width, height)), ``window_title``."""
        if not self.raw_ui:
            return None
        window = tuple(self.window_size)
        return {
            "foreground_color": int(self.foreground_color),
            "background_color": int(self.background_color),
            "cursor_position": tuple(self.cursor_position),
            "window_position": tuple(self.window_position),
            "cursor_size": int(self.cursor_size),
            "buffer_size": tuple(self.buffer_size),
            "window_size": window,
            "max_window_size": tuple(self.max_window_size or window),
            "max_physical_window_size": tuple(self.max_physical_window_size or window),
            "window_title": str(self.window_title),
        }

    def call(self, method_name: str, method_id: int, parameters: List[Any]) -> Any:
        """Answers one host call. Returns the value for the server (``None`` for void
        methods); raises ``NotImplementedError`` for methods this host does not offer."""
        handler = _DISPATCH.get(method_name)
        if handler is None:
            raise NotImplementedError(f"host method {method_name} is not implemented")
        return handler(self, list(parameters))

    # --- PSHost ---------------------------------------------------------------------------

    def get_name(self) -> str:
        return self.name

    def get_version(self) -> str:
        return self.version

    def get_instance_id(self) -> uuid.UUID:
        return self.instance_id

    def get_current_culture(self) -> str:
        raise NotImplementedError("GetCurrentCulture")

    def get_current_ui_culture(self) -> str:
        raise NotImplementedError("GetCurrentUICulture")

    def set_should_exit(self, exit_code: int) -> None:
        raise NotImplementedError("SetShouldExit")

    def enter_nested_prompt(self) -> None:
        raise NotImplementedError("EnterNestedPrompt")

    def exit_nested_prompt(self) -> None:
        raise NotImplementedError("ExitNestedPrompt")

    def notify_begin_application(self) -> None:
        return None

    def notify_end_application(self) -> None:
        return None

    # --- PSHostUserInterface ------------------------------------------------------------

    def read_line(self) -> str:
        """Read-Host: one line of text."""
        raise NotImplementedError("ReadLine")

    def read_line_as_secure_string(self) -> Union[SecureString, str]:
        """Read-Host -AsSecureString: a secret line (a str is wrapped in a SecureString)."""
        raise NotImplementedError("ReadLineAsSecureString")

    def write(self, text: str, foreground_color: Optional[int] = None, background_color: Optional[int] = None) -> None:
        """Write-Host -NoNewline."""

    def write_line(self, text: str = "", foreground_color: Optional[int] = None, background_color: Optional[int] = None) -> None:
        """Write-Host."""

    def write_error_line(self, text: str) -> None:
        pass

    def write_warning_line(self, text: str) -> None:
        pass

    def write_verbose_line(self, text: str) -> None:
        pass

    def write_debug_line(self, text: str) -> None:
        pass

    def write_progress(self, source_id: int, record: ProgressRecord) -> None:
        pass

    def prompt(self, caption: str, message: str, descriptions: List[Any]) -> Dict[str, Any]:
        """Answers a prompt for several fields; ``descriptions`` are FieldDescription objects
        (``Name``, ``Label``, ``ParameterTypeName``, ...). Returns field name -> value.

        The default asks :meth:`read_line` (or :meth:`read_line_as_secure_string` for
        SecureString fields) once per field."""
        answers: Dict[str, Any] = {}
        for description in descriptions:
            name = _text(_prop(description, "Name"))
            type_name = _text(_prop(description, "ParameterTypeFullName") or _prop(description, "ParameterTypeName"))
            label = _text(_prop(description, "Label")) or name
            self.write(f"{label}: ")
            if "SecureString" in type_name:
                value: Any = self.read_line_as_secure_string()
                if isinstance(value, str):
                    value = SecureString(value)
            elif "PSCredential" in type_name:
                value = self.prompt_for_credential(caption, message, "", "")
            else:
                value = self.read_line()
            answers[name] = value
        return answers

    def prompt_for_credential(self, caption: str, message: str, user_name: str, target_name: str) -> PSCredential:
        """Get-Credential."""
        raise NotImplementedError("PromptForCredential")

    def prompt_for_choice(self, caption: str, message: str, choices: List[Any], default_choice: int) -> int:
        """A choice among ``choices`` (ChoiceDescription objects with ``Label`` and
        ``HelpMessage``); returns the chosen index."""
        raise NotImplementedError("PromptForChoice")

    def prompt_for_choice_multiple_selection(
        self, caption: str, message: str, choices: List[Any], default_choices: List[int]
    ) -> List[int]:
        raise NotImplementedError("PromptForChoiceMultipleSelection")

    # --- PSHostRawUserInterface -----------------------------------------------------------

    def get_foreground_color(self) -> PSEnum:
        return console_color(self.foreground_color)

    def set_foreground_color(self, color: int) -> None:
        self.foreground_color = int(color)

    def get_background_color(self) -> PSEnum:
        return console_color(self.background_color)

    def set_background_color(self, color: int) -> None:
        self.background_color = int(color)

    def get_cursor_position(self) -> PSObject:
        return _coordinates(*self.cursor_position)

    def get_window_position(self) -> PSObject:
        return _coordinates(*self.window_position)

    def get_cursor_size(self) -> int:
        return int(self.cursor_size)

    def get_buffer_size(self) -> PSObject:
        return _size(*self.buffer_size)

    def get_window_size(self) -> PSObject:
        return _size(*self.window_size)

    def get_max_window_size(self) -> PSObject:
        return _size(*(self.max_window_size or self.window_size))

    def get_max_physical_window_size(self) -> PSObject:
        return _size(*(self.max_physical_window_size or self.window_size))

    def get_window_title(self) -> str:
        return self.window_title

    def set_window_title(self, title: str) -> None:
        self.window_title = str(title)

    def get_key_available(self) -> bool:
        return False


def _colors(params: List[Any]) -> Tuple[Optional[PSEnum], Optional[PSEnum]]:
    """Foreground and background of Write2/WriteLine3 as ConsoleColor enums."""

    def color(index: int) -> Optional[PSEnum]:
        if len(params) <= index or params[index] is None:
            return None
        try:
            return console_color(int(params[index]))
        except (ValueError, IndexError, TypeError):
            return None

    return color(0), color(1)


def _ignore(host: PSHost, params: List[Any]) -> None:
    return None


def _credential(host: PSHost, params: List[Any]) -> PSCredential:
    caption, message, user_name, target_name = (params + [None] * 4)[:4]
    answer = host.prompt_for_credential(_text(caption), _text(message), _text(user_name), _text(target_name))
    if not isinstance(answer, PSCredential):
        raise TypeError(f"prompt_for_credential must return a PSCredential, not {type(answer).__name__}")
    return answer


def _secure_line(host: PSHost, params: List[Any]) -> SecureString:
    answer = host.read_line_as_secure_string()
    return SecureString(answer) if isinstance(answer, str) else answer


def _progress(host: PSHost, params: List[Any]) -> None:
    source_id = int(params[0]) if params else 0
    record = params[1] if len(params) > 1 else None
    host.write_progress(source_id, ProgressRecord.from_psobject(record))


def _choice(host: PSHost, params: List[Any]) -> int:
    caption, message, choices, default = (params + [None] * 4)[:4]
    return int(host.prompt_for_choice(_text(caption), _text(message), list(choices or []), -1 if default is None else int(default)))


def _choices(host: PSHost, params: List[Any]) -> List[int]:
    caption, message, choices, defaults = (params + [None] * 4)[:4]
    return [
        int(i)
        for i in host.prompt_for_choice_multiple_selection(
            _text(caption), _text(message), list(choices or []), [int(d) for d in (defaults or [])]
        )
    ]


def _unimplemented(name: str) -> Callable[[PSHost, List[Any]], Any]:
    def handler(host: PSHost, params: List[Any]) -> Any:
        raise NotImplementedError(f"host method {name} is not implemented")

    return handler


_DISPATCH: Dict[str, Callable[[PSHost, List[Any]], Any]] = {
    "GetName": lambda h, p: h.get_name(),
    "GetVersion": lambda h, p: h.get_version(),
    "GetInstanceId": lambda h, p: h.get_instance_id(),
    "GetCurrentCulture": lambda h, p: h.get_current_culture(),
    "GetCurrentUICulture": lambda h, p: h.get_current_ui_culture(),
    "SetShouldExit": lambda h, p: h.set_should_exit(int(p[0]) if p else 0),
    "EnterNestedPrompt": lambda h, p: h.enter_nested_prompt(),
    "ExitNestedPrompt": lambda h, p: h.exit_nested_prompt(),
    "NotifyBeginApplication": lambda h, p: h.notify_begin_application(),
    "NotifyEndApplication": lambda h, p: h.notify_end_application(),
    "ReadLine": lambda h, p: h.read_line(),
    "ReadLineAsSecureString": _secure_line,
    "Write1": lambda h, p: h.write(_text(p[0] if p else "")),
    "Write2": lambda h, p: h.write(_text(p[2] if len(p) > 2 else ""), *_colors(p)),
    "WriteLine1": lambda h, p: h.write_line(""),
    "WriteLine2": lambda h, p: h.write_line(_text(p[0] if p else "")),
    "WriteLine3": lambda h, p: h.write_line(_text(p[2] if len(p) > 2 else ""), *_colors(p)),
    "WriteErrorLine": lambda h, p: h.write_error_line(_text(p[0] if p else "")),
    "WriteDebugLine": lambda h, p: h.write_debug_line(_text(p[0] if p else "")),
    "WriteVerboseLine": lambda h, p: h.write_verbose_line(_text(p[0] if p else "")),
    "WriteWarningLine": lambda h, p: h.write_warning_line(_text(p[0] if p else "")),
    "WriteProgress": _progress,
    "Prompt": lambda h, p: h.prompt(_text(p[0] if p else ""), _text(p[1] if len(p) > 1 else ""), list(p[2] or []) if len(p) > 2 else []),
    "PromptForCredential1": _credential,
    "PromptForCredential2": _credential,
    "PromptForChoice": _choice,
    "PromptForChoiceMultipleSelection": _choices,
    "GetForegroundColor": lambda h, p: h.get_foreground_color(),
    "SetForegroundColor": lambda h, p: h.set_foreground_color(int(p[0])),
    "GetBackgroundColor": lambda h, p: h.get_background_color(),
    "SetBackgroundColor": lambda h, p: h.set_background_color(int(p[0])),
    "GetCursorPosition": lambda h, p: h.get_cursor_position(),
    "SetCursorPosition": _ignore,
    "GetWindowPosition": lambda h, p: h.get_window_position(),
    "SetWindowPosition": _ignore,
    "GetCursorSize": lambda h, p: h.get_cursor_size(),
    "SetCursorSize": _ignore,
    "GetBufferSize": lambda h, p: h.get_buffer_size(),
    "SetBufferSize": _ignore,
    "GetWindowSize": lambda h, p: h.get_window_size(),
    "SetWindowSize": _ignore,
    "GetWindowTitle": lambda h, p: h.get_window_title(),
    "SetWindowTitle": lambda h, p: h.set_window_title(_text(p[0] if p else "")),
    "GetMaxWindowSize": lambda h, p: h.get_max_window_size(),
    "GetMaxPhysicalWindowSize": lambda h, p: h.get_max_physical_window_size(),
    "GetKeyAvailable": lambda h, p: h.get_key_available(),
    "ReadKey": _unimplemented("ReadKey"),
    "FlushInputBuffer": _ignore,
    "SetBufferContents1": _unimplemented("SetBufferContents1"),
    "SetBufferContents2": _unimplemented("SetBufferContents2"),
    "GetBufferContents": _unimplemented("GetBufferContents"),
    "ScrollBufferContents": _unimplemented("ScrollBufferContents"),
    "PushRunspace": _unimplemented("PushRunspace"),
    "PopRunspace": _unimplemented("PopRunspace"),
    "GetIsRunspacePushed": lambda h, p: False,
    "GetRunspace": _unimplemented("GetRunspace"),
}

# ANSI foreground codes by ConsoleColor value.
_ANSI = (30, 34, 32, 36, 31, 35, 33, 37, 90, 94, 92, 96, 91, 95, 93, 97)


class ConsoleHost(PSHost):
    """A host for terminals: writes go to ``stdout`` (coloured when it is a tty; characters
    that would act on the terminal are shown as ``\\u{…}`` escapes, since the text is the
    server's), Read-Host reads a line from ``stdin``, secrets and credentials use
    :func:`getpass.getpass`. Used by ``psremote shell``."""

    def __init__(self, stdout: Optional[TextIO] = None, *, color: Optional[bool] = None) -> None:
        super().__init__()
        self.stdout = stdout or sys.stdout
        self.color = self.stdout.isatty() if color is None else color
        # The raw UI reports the terminal's size, so the server formats output to fit it.
        size = shutil.get_terminal_size(fallback=(120, 50))
        self.window_size = (size.columns, size.lines)
        self.buffer_size = (size.columns, 3000)

    def _out(self, text: str, fg: Any = None) -> None:
        text = printable(text)  # server text: escape sequences are shown, never acted on
        if self.color and fg is not None and 0 <= int(fg) < len(_ANSI):
            text = f"\x1b[{_ANSI[int(fg)]}m{text}\x1b[0m"
        self.stdout.write(text)
        self.stdout.flush()

    def write(self, text: str, foreground_color: Optional[int] = None, background_color: Optional[int] = None) -> None:
        self._out(text, foreground_color)

    def write_line(self, text: str = "", foreground_color: Optional[int] = None, background_color: Optional[int] = None) -> None:
        self._out(text, foreground_color)
        self._out("\n")

    def write_error_line(self, text: str) -> None:
        self._out(text + "\n", 12)

    def write_warning_line(self, text: str) -> None:
        self._out(f"WARNING: {text}\n", 14)

    def write_verbose_line(self, text: str) -> None:
        self._out(f"VERBOSE: {text}\n", 11)

    def write_debug_line(self, text: str) -> None:
        self._out(f"DEBUG: {text}\n", 14)

    def read_line(self) -> str:
        # A plain read in the terminal's cooked mode: host calls run on a worker thread, where
        # readline's raw mode would fight with the prompt of the main thread.
        return sys.stdin.readline().rstrip("\r\n")

    def read_secret(self, prompt: str) -> str:
        """A line typed without echo (:func:`getpass.getpass`), after ``prompt``."""
        return getpass.getpass(prompt)

    def read_line_as_secure_string(self) -> SecureString:
        return SecureString(self.read_secret(""))

    def prompt_for_credential(self, caption: str, message: str, user_name: str, target_name: str) -> PSCredential:
        if caption:
            self.write_line(caption)
        if message:
            self.write_line(message)
        if not user_name:
            self.write("User: ")
            user_name = self.read_line()
        password = self.read_secret(f"Password for user {printable(user_name)}: ")
        return PSCredential(user_name, SecureString(password))

    def prompt_for_choice(self, caption: str, message: str, choices: List[Any], default_choice: int) -> int:
        if caption:
            self.write_line(caption)
        if message:
            self.write_line(message)
        labels = [_text(_prop(c, "Label", c)) for c in choices]
        for i, label in enumerate(labels):
            marker = " (default)" if i == default_choice else ""
            self.write_line(f"[{i}] {label.replace('&', '')}{marker}")
        while True:
            self.write("Choice: ")
            answer = self.read_line().strip()
            if not answer and default_choice >= 0:
                return default_choice
            for i, label in enumerate(labels):
                hot = label.find("&")
                if answer.isdigit() and int(answer) == i:
                    return i
                if hot >= 0 and hot + 1 < len(label) and answer.lower() == label[hot + 1].lower():
                    return i
