"""Host callbacks: a PSHost subclass answers Read-Host, Get-Credential and friends."""

from __future__ import annotations

import threading
import time
from typing import Any, List

import pytest

import psremote
from psremote import PSCredential, PSHost, SecureString


class ScriptedHost(PSHost):
    def __init__(self) -> None:
        super().__init__()
        self.calls: List[Any] = []
        self.lines = ["typed answer"]
        self.threads = set()

    def read_line(self) -> str:
        self.threads.add(threading.current_thread().name)
        return self.lines.pop(0)

    def read_line_as_secure_string(self) -> str:
        return "secret line"

    def prompt_for_credential(self, caption, message, user_name, target_name):
        self.calls.append(("credential", caption, message, user_name))
        return PSCredential(user_name or "DOMAIN\\someone", SecureString("cred-pass"))

    def write(self, text, foreground_color=None, background_color=None):
        self.calls.append(("write", text))

    def write_line(self, text="", foreground_color=None, background_color=None):
        self.calls.append(("write_line", text, foreground_color))


@pytest.fixture
def host_pool(client):
    host = ScriptedHost()
    with client.runspace_pool(host=host) as pool:
        yield pool, host


def test_read_host(host_pool):
    pool, host = host_pool
    result = pool.run_ps("Read-Host -Prompt 'Your name'")
    assert result.output == ["typed answer"]
    assert ("write", "Your name: ") in host.calls
    assert threading.main_thread().name not in host.threads


def test_read_host_as_secure_string(host_pool):
    pool, _ = host_pool
    (value,) = pool.run_ps("Read-Host -AsSecureString").output
    assert isinstance(value, SecureString) and value.get_value() == "secret line"


def test_get_credential(host_pool):
    pool, host = host_pool
    (cred,) = pool.run_ps("Get-Credential -UserName 'DOMAIN\\admin'").output
    assert isinstance(cred, PSCredential)
    assert cred.username == "DOMAIN\\admin" and cred.password.get_value() == "cred-pass"
    kind, caption, message, user = host.calls[-1]
    assert (kind, caption, message, user) == ("credential", "Windows PowerShell credential request", "Enter your credentials.", "DOMAIN\\admin")


def test_write_host_calls_the_host_and_shows_as_event(host_pool):
    pool, host = host_pool
    events = list(pool.start("Write-Host hello -ForegroundColor Red"))
    # Every host call of a pipeline has been handled before its final state is delivered.
    (call,) = [c for c in host.calls if c[0] == "write_line"]
    assert call[1] == "hello" and call[2] == 12 and call[2].name == "Red"
    host_events = [e.value for e in events if e.kind == "host"]
    assert host_events and host_events[0].method == "WriteLine3"


def test_slow_void_host_calls_finish_before_run_ps_returns(client):
    class Slow(PSHost):
        def __init__(self) -> None:
            super().__init__()
            self.lines: List[str] = []

        def write_line(self, text="", foreground_color=None, background_color=None):
            time.sleep(0.3)
            self.lines.append(text)

    host = Slow()
    with client.runspace_pool(host=host) as pool:
        result = pool.run_ps("Write-Host one; Write-Output two; Write-Host three")
        assert result.output == ["two"]
        assert host.lines == ["one", "three"]


def _remote_ui(client, host):
    with client.runspace_pool(host=host) as pool:
        (info,) = pool.run_ps("Get-Host").output
    return info.UI


def test_ps_host_offers_a_raw_ui_with_its_console(client):
    class Console(PSHost):
        window_size = (100, 40)
        buffer_size = (100, 9000)
        foreground_color = 14
        window_title = "my terminal"

    ui = _remote_ui(client, Console())
    raw = ui.RawUI
    assert raw is not None
    assert (raw.ForegroundColor, raw.BackgroundColor) == ("Yellow", "Black")
    assert (raw.WindowSize, raw.BufferSize, raw.MaxWindowSize) == ("100,40", "100,9000", "100,40")
    assert raw.WindowTitle == "my terminal"


def test_a_host_without_raw_ui_has_a_ui_only(client):
    class Plain(PSHost):
        raw_ui = False

    ui = _remote_ui(client, Plain())
    assert ui is not None and ui.RawUI is None


def test_without_a_host_there_is_no_ui(pool):
    (info,) = pool.run_ps("Get-Host").output
    assert info.UI is None


def test_host_defaults_reports_the_raw_ui_state():
    host = PSHost()
    host.window_size = (80, 25)
    d = host.host_defaults()
    assert d is not None
    assert d["window_size"] == (80, 25) and d["max_window_size"] == (80, 25) and d["cursor_size"] == 25
    host.raw_ui = False
    assert host.host_defaults() is None


def test_host_that_raises_writes_an_error(client):
    class Failing(PSHost):
        def read_line(self):
            raise RuntimeError("no keyboard here")

    with client.runspace_pool(host=Failing()) as pool:
        result = pool.run_ps("Read-Host")
    assert result.output == []
    assert any("no keyboard here" in e.message for e in result.errors)


def test_base_host_answers_not_implemented(client):
    with client.runspace_pool(host=PSHost()) as pool:
        result = pool.run_ps("Read-Host")
    assert result.output == []
    assert result.had_errors


def test_without_a_host_read_host_fails(pool):
    result = pool.run_ps("Read-Host")
    assert result.errors and "HostFunctionNotImplemented" in (result.errors[0].fully_qualified_error_id or "")


def test_client_default_pool_uses_ps_host(credentials):
    host = ScriptedHost()
    with psremote.Client(**credentials, ps_host=host) as client:
        assert client.run_ps("Read-Host").output == ["typed answer"]


def test_dispatch_by_method_name():
    host = ScriptedHost()
    assert host.call("GetName", 1, []) == "psremote"
    assert host.call("ReadLine", 11, []) == "typed answer"
    secure = host.call("ReadLineAsSecureString", 12, [])
    assert isinstance(secure, SecureString)
    color = host.call("GetForegroundColor", 27, [])
    assert color == 7 and color.name == "Gray"
    size = host.call("GetBufferSize", 37, [])
    assert (size.Width, size.Height) == (120, 3000)
    host.call("WriteLine2", 16, ["x"])
    assert host.calls[-1] == ("write_line", "x", None)
    progress = psremote.PSObject(["System.Management.Automation.ProgressRecord"], None, {}, {"Activity": "a", "PercentComplete": 5, "ActivityId": 0})
    assert host.call("WriteProgress", 20, [1, progress]) is None
    with pytest.raises(NotImplementedError):
        host.call("NoSuchMethod", 999, [])
    with pytest.raises(NotImplementedError):
        host.call("ReadKey", 46, [])
    with pytest.raises(NotImplementedError):
        PSHost().call("PromptForChoice", 26, ["c", "m", [], 0])


def test_prompt_asks_per_field():
    host = ScriptedHost()
    host.lines = ["v1"]
    fields = [
        psremote.PSObject(["System.Management.Automation.Host.FieldDescription"], None, {"Name": "A", "ParameterTypeFullName": "System.String"}, {}),
        psremote.PSObject(["System.Management.Automation.Host.FieldDescription"], None, {"Name": "B", "ParameterTypeFullName": "System.Security.SecureString"}, {}),
    ]
    answers = host.call("Prompt", 23, ["caption", "message", fields])
    assert answers["A"] == "v1" and answers["B"].get_value() == "secret line"
