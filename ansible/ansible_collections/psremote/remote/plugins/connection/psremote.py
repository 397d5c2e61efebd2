# Copyright (c) psremote contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible connection plugin psremote.remote.psremote: PowerShell Remoting through psremote.

A thin layer: every protocol decision (authentication, message encryption, the security rules,
file transfer) belongs to the psremote Python package; this file maps Ansible's options onto
psremote.Client, runs what Ansible asks for in one runspace pool per connection, and turns the
results into the (rc, stdout, stderr) Ansible expects, the way ansible.builtin.psrp does.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: psremote
author: psremote contributors
short_description: Run tasks over PowerShell Remoting with psremote
description:
  - Runs commands, PowerShell modules and file transfers on Windows hosts over PowerShell Remoting
    (PSRP on WS-Management), with the C(psremote) Python package (a Rust core) doing the protocol.
  - A drop-in for P(ansible.builtin.psrp#connection). Every option reads the C(ansible_psrp_*)
    variable of the same meaning and its C(ansible_psremote_*) twin (the C(psremote) one wins when
    both are set), so an inventory written for C(psrp) works once C(ansible_connection) names this
    plugin, with one exception on purpose, below.
  - "Security: psremote refuses NTLM unless the server's identity is proven: over HTTPS by a
    certificate that verifies, over HTTP only towards a host named in O(trusted_hosts) (what
    WinRM's TrustedHosts list means to PowerShell). C(psrp) sends NTLM over HTTP to any server.
    An inventory that uses NTLM over HTTP (O(auth=ntlm), or O(auth=negotiate) where Kerberos is
    not available) must therefore also set C(ansible_psremote_trusted_hosts); otherwise the task
    fails with psremote's refusal, naming the ways out. Kerberos and verified HTTPS need nothing
    more."
  - O(cert_validation=ignore) skips the HTTPS certificate check as with C(psrp); psremote then
    warns on every connection, and NTLM needs O(trusted_hosts) again since nothing proves the
    server any more.
  - "Runs commands as C(psrp) does: a command the PowerShell shell plugin encoded
    (C(-EncodedCommand)) runs as a script in the runspace pool with the pipelined input (C(in_data))
    given line by line as pipeline input, which is what Ansible's PowerShell module wrapper reads;
    C(-File) commands run the file with its arguments; anything else (the M(ansible.builtin.raw)
    module) runs as a script followed by C(exit $LASTEXITCODE). The return code is the one a
    script passed to C(exit) (the SetShouldExit host call), else 1 when the pipeline failed (a
    terminating error) or was stopped, else 0; errors a script wrote and went on from (C(Write-Error))
    are in stderr and leave the return code alone, as with C(psrp)."
  - File transfers use psremote's C(Client.copy) and C(Client.fetch) (streamed, SHA-1 checked on
    both ends, no partial file left behind).
  - "Not supported: C(read_timeout), C(reconnection_retries), C(reconnection_backoff), C(negotiate_send_cbt) (psremote
    always sends channel bindings over HTTPS), C(credssp_auth_mechanism),
    C(credssp_disable_tlsv1_2) and C(credssp_minimum_version): their variables are not read."
version_added: "0.1.0"
requirements:
  - psremote (Python package, on the controller)
extends_documentation_fragment:
  - connection_pipelining
options:
  remote_addr:
    description:
      - The host name or IP address of the Windows host.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_psrp_host
      - name: ansible_psremote_host
  remote_user:
    description:
      - The account to log on as, C(user), C(DOMAIN\user) or C(user@DOMAIN).
      - Not needed with O(auth=certificate) (the certificate names the account).
    type: str
    vars:
      - name: ansible_user
      - name: ansible_psrp_user
      - name: ansible_psremote_user
    keyword:
      - name: remote_user
  remote_password:
    description:
      - The password of O(remote_user). When unset, psremote reads the environment variable
        C(PSREMOTE_PASSWORD).
    type: str
    vars:
      - name: ansible_password
      - name: ansible_winrm_pass
      - name: ansible_winrm_password
      - name: ansible_psremote_password
    aliases:
      - password
  port:
    description:
      - The WinRM port.
      - Unset, it is V(5985) when O(protocol=http) and V(5986) otherwise (as with C(psrp)).
    type: int
    vars:
      - name: ansible_port
      - name: ansible_psrp_port
      - name: ansible_psremote_port
    keyword:
      - name: port
  protocol:
    description:
      - V(http) or V(https). Unset, it is V(http) when O(port=5985) and V(https) otherwise (as with
        C(psrp)).
    type: str
    choices: [http, https]
    vars:
      - name: ansible_psrp_protocol
      - name: ansible_psremote_protocol
  path:
    description:
      - The URL path of the WinRM listener (a leading C(/) is added when missing).
    type: str
    default: wsman
    vars:
      - name: ansible_psrp_path
      - name: ansible_psremote_path
  auth:
    description:
      - How to authenticate. V(negotiate) tries Kerberos and falls back to NTLM only where NTLM is
        allowed (HTTPS with a verified certificate, or O(trusted_hosts)); V(credssp) delegates the
        password to the server.
      - V(basic) needs HTTPS (or O(message_encryption=never) over HTTP, which sends the password and
        every message in plain text). V(certificate) needs HTTPS and O(certificate_pem).
    type: str
    default: negotiate
    choices: [basic, certificate, negotiate, kerberos, ntlm, credssp]
    vars:
      - name: ansible_psrp_auth
      - name: ansible_psremote_auth
  trusted_hosts:
    description:
      - Hosts whose identity you accept without proof, so that NTLM may be used towards them over
        HTTP (or over HTTPS without certificate validation). Names, addresses, C(*) wildcards such
        as C(*.corp.example) or C(10.0.0.*), or C(<local>), as a list or a comma-separated string,
        with the meaning of WinRM's TrustedHosts.
      - psremote-only (C(psrp) has no such check). Naming a host here accepts that an impostor
        answering at its address could capture an NTLM logon; prefer Kerberos or HTTPS.
    type: list
    elements: str
    vars:
      - name: ansible_psremote_trusted_hosts
  cert_validation:
    description:
      - V(validate) checks the HTTPS certificate against the system's CAs or O(ca_cert); V(ignore)
        does not check it (psremote warns on every connection). Not used over HTTP.
    type: str
    default: validate
    choices: [validate, ignore]
    vars:
      - name: ansible_psrp_cert_validation
      - name: ansible_psremote_cert_validation
  ca_cert:
    description:
      - A PEM file of the CA certificates to validate the HTTPS certificate with, instead of the
        system's. Not used over HTTP or with O(cert_validation=ignore).
    type: path
    aliases: [cert_trust_path]
    vars:
      - name: ansible_psrp_cert_trust_path
      - name: ansible_psrp_ca_cert
      - name: ansible_psremote_ca_cert
  server_name:
    description:
      - The name the HTTPS certificate must carry when it is not O(remote_addr) (psremote-only).
    type: str
    vars:
      - name: ansible_psremote_server_name
  pinned_public_keys:
    description:
      - Also require the HTTPS certificate's key to be one of these (hex SHA-256 of the
        SubjectPublicKeyInfo; psremote-only).
    type: list
    elements: str
    vars:
      - name: ansible_psremote_pinned_public_keys
  certificate_pem:
    description:
      - The client certificate (PEM) for O(auth=certificate).
    type: path
    vars:
      - name: ansible_psrp_certificate_pem
      - name: ansible_psremote_certificate_pem
  certificate_key_pem:
    description:
      - The private key (PEM) of O(certificate_pem), when that file does not hold it.
    type: path
    vars:
      - name: ansible_psrp_certificate_key_pem
      - name: ansible_psremote_certificate_key_pem
  connection_timeout:
    description:
      - Seconds to wait for a TCP (and TLS) connection to the host.
    type: int
    default: 30
    vars:
      - name: ansible_psrp_connection_timeout
      - name: ansible_psremote_connection_timeout
  operation_timeout:
    description:
      - The WS-Management OperationTimeout in seconds (how long the server holds a Receive that
        has nothing to return before answering; psremote then asks again).
    type: int
    default: 20
    vars:
      - name: ansible_psrp_operation_timeout
      - name: ansible_psremote_operation_timeout
  message_encryption:
    description:
      - V(auto) encrypts every message with the logon's keys over HTTP and relies on TLS over HTTPS;
        V(always) also encrypts inside TLS.
      - V(never) over HTTP is allowed only with O(auth=basic) and sends everything, the password
        included, in plain text (psremote warns); the other mechanisms always encrypt over HTTP, and
        psremote refuses V(never) with them. Over HTTPS V(never) means TLS alone.
    type: str
    default: auto
    choices: [auto, always, never]
    vars:
      - name: ansible_psrp_message_encryption
      - name: ansible_psremote_message_encryption
  max_envelope_size:
    description:
      - The largest WS-Management message in bytes. Unset, psremote starts at 153600 and uses
        512000 once the server shows it speaks PSRP 2.2 or later (Windows' defaults).
    type: int
    vars:
      - name: ansible_psrp_max_envelope_size
      - name: ansible_psremote_max_envelope_size
  configuration_name:
    description:
      - The PowerShell session configuration (endpoint) to open the runspace pool on.
    type: str
    default: Microsoft.PowerShell
    vars:
      - name: ansible_psrp_configuration_name
      - name: ansible_psremote_configuration_name
  negotiate_delegate:
    description:
      - Delegate a forwardable Kerberos ticket to the host (Kerberos only).
    type: bool
    default: false
    vars:
      - name: ansible_psrp_negotiate_delegate
      - name: ansible_psremote_negotiate_delegate
  negotiate_hostname_override:
    description:
      - The host name of the Kerberos service principal when it differs from O(remote_addr)
        (connecting by address, say).
    type: str
    vars:
      - name: ansible_psrp_negotiate_hostname_override
      - name: ansible_psremote_negotiate_hostname_override
  negotiate_service:
    description:
      - The service of the Kerberos service principal. Unset, psremote's default V(HTTP) (which
        Windows maps to the host's account, as V(WSMAN), C(psrp)'s default, is registered by WinRM).
    type: str
    vars:
      - name: ansible_psrp_negotiate_service
      - name: ansible_psremote_negotiate_service
  kerberos_kdc:
    description:
      - The KDC to ask for Kerberos tickets (host or host:port; psremote-only). Unset, psremote
        finds it from C(PSREMOTE_KDC) or krb5.conf.
    type: str
    vars:
      - name: ansible_psremote_kerberos_kdc
  proxy:
    description:
      - The proxy every connection tunnels through, as psremote's C(proxy=) takes it
        (C(http://[user:password@]host:port) asked for a CONNECT tunnel, C(socks5://...) or
        C(socks5h://...)). Unset, the controller's C(https_proxy)/C(http_proxy)/C(all_proxy)
        and C(no_proxy) apply, unless O(ignore_proxy).
    type: str
    vars:
      - name: ansible_psrp_proxy
      - name: ansible_psremote_proxy
  ignore_proxy:
    description:
      - Ignore the controller's proxy environment variables (ignored when O(proxy) is set).
    type: bool
    default: false
    vars:
      - name: ansible_psrp_ignore_proxy
      - name: ansible_psremote_ignore_proxy
"""

import base64
import logging
import os
import shlex
import typing as t

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

try:
    # The command line the PowerShell shell plugin starts every encoded script with. Imported
    # rather than copied so both stay in step; the fallback is its value in ansible-core 2.19.
    from ansible.plugins.shell.powershell import _common_args as _POWERSHELL_ARGS
except ImportError:  # pragma: no cover - older or newer ansible-core
    _POWERSHELL_ARGS = ["PowerShell", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Unrestricted"]

PSREMOTE_IMPORT_ERROR: t.Optional[BaseException] = None
try:
    import psremote
    from psremote.exceptions import (
        AuthenticationError,
        ConfigurationError,
        FileTransferError,
        OperationTimeoutError,
        PSRemoteError,
        SecurityPolicyError,
        TransferFileNotFoundError,
        TransferIsADirectoryError,
        TransportError,
        WSManFault,
    )
except ImportError as e:  # reported when a connection is made, not when Ansible lists plugins
    PSREMOTE_IMPORT_ERROR = e

display = Display()

_ENCODED = " ".join(_POWERSHELL_ARGS) + " -EncodedCommand "
_FILE = " ".join(_POWERSHELL_ARGS) + " -File "
# What a -File command runs: the file named by the first argument, given the other arguments.
_RUN_FILE = "param([string]$File, [Parameter(ValueFromRemainingArguments = $true)][string[]]$Rest)\n& $File @Rest"
# Error records that carry a native program's stderr, passed through as text.
_NATIVE_STDERR = ("NativeCommandError", "NativeCommandErrorMessage")
_TRUSTED_HOSTS_HINT = (
    "NTLM is allowed only towards a server whose identity is proven: use Kerberos, HTTPS with a "
    "certificate that verifies, or name the host in ansible_psremote_trusted_hosts"
)


class _ForwardWarnings(logging.Handler):
    """psremote's warnings (plaintext allowed, certificate checks skipped) shown by Ansible."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            display.warning(f"psremote: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - a log record must never fail a task
            pass


def _install_warning_handler() -> None:
    logger = logging.getLogger("psremote")
    if not any(isinstance(h, _ForwardWarnings) for h in logger.handlers):
        logger.addHandler(_ForwardWarnings(logging.WARNING))


if PSREMOTE_IMPORT_ERROR is None:

    class _AnsibleHost(psremote.PSHost):
        """A host with a UI and no raw UI, as psrp's: what the script writes through the host and
        the exit code arrive as host calls in each result (read by _host_output); nothing here
        needs a person, so prompts stay unimplemented (the server gets an error, not a hang)."""

        name = "Ansible psremote host"
        raw_ui = False

        def set_should_exit(self, exit_code: int) -> None:
            return None


def _object_text(value: t.Any) -> str:
    """An output object as text: its ToString() when it has one, else its properties."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, psremote.PSObject):
        if value.to_string is not None:
            return str(value.to_string)
        lines = [f"{name}: {item}" for name, item in value.adapted_properties.items()]
        lines += [f"{name}: {item}" for name, item in value.extended_properties.items()]
        return "\n".join(lines)
    return str(value)


def _host_output(result: t.Any) -> t.Tuple[t.Optional[int], t.List[str], t.List[str]]:
    """From a result's host calls: the exit code (SetShouldExit), the lines written (Write-Host
    and friends) and the error lines (WriteErrorLine)."""
    exit_code: t.Optional[int] = None
    lines: t.List[str] = []
    errors: t.List[str] = []
    partial = ""
    for call in result.host_calls:
        method, params = call.method, list(call.parameters or [])
        if method == "SetShouldExit":
            exit_code = int(params[0]) if params and params[0] is not None else 0
        elif method in ("Write1", "Write2"):
            partial += to_text(params[-1] if params else "")
        elif method in ("WriteLine1", "WriteLine2", "WriteLine3"):
            text = to_text(params[-1]) if method != "WriteLine1" and params else ""
            lines.append(partial + text)
            partial = ""
        elif method == "WriteErrorLine":
            errors.append(to_text(params[0] if params else ""))
    if partial:
        lines.append(partial)
    return exit_code, lines, errors


def _error_text(record: t.Any, with_stack: bool) -> str:
    """An error record as PowerShell's console shows it (CRLF line ends, as on Windows)."""
    if record.fully_qualified_error_id in _NATIVE_STDERR:
        return f"{record}\r\n"
    text = record.format().replace("\n", "\r\n")
    if with_stack and record.script_stack_trace:
        text += "\r\nStackTrace:\r\n" + record.script_stack_trace
    return text + "\r\n"


class Connection(ConnectionBase):
    """PowerShell Remoting through psremote: one client and one runspace pool per connection."""

    transport = "psremote.remote.psremote"
    module_implementation_preferences = (".ps1", ".exe", "")
    allow_executable = False
    has_pipelining = True

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        self.always_pipeline_modules = True
        self.has_native_async = True
        self._client: t.Any = None
        self._pool: t.Any = None
        self._host_name: t.Optional[str] = None
        self._shell_type = "powershell"
        super().__init__(*args, **kwargs)

    # --- options ------------------------------------------------------------------------------

    def _client_options(self) -> t.Dict[str, t.Any]:
        """psremote.Client keywords from this connection's options."""
        protocol, port = self.get_option("protocol"), self.get_option("port")
        if protocol is None:
            protocol = "http" if port is not None and int(port) == 5985 else "https"
        if port is None:
            port = 5985 if protocol == "http" else 5986
        https = protocol == "https"
        path = self.get_option("path") or "wsman"
        encryption = self.get_option("message_encryption")
        options: t.Dict[str, t.Any] = dict(
            port=int(port),
            https=https,
            path=path if path.startswith("/") else "/" + path,
            auth=self.get_option("auth"),
            username=self.get_option("remote_user"),
            encryption=encryption,
            # Plain text over HTTP only when asked for by name (psremote warns about it).
            allow_unencrypted=encryption == "never" and not https,
            connect_timeout=float(self.get_option("connection_timeout")),
            operation_timeout=float(self.get_option("operation_timeout")),
            configuration_name=self.get_option("configuration_name"),
            trusted_hosts=self.get_option("trusted_hosts") or None,
            delegate=bool(self.get_option("negotiate_delegate")),
            ignore_proxy=bool(self.get_option("ignore_proxy")),
        )
        password = self.get_option("remote_password")
        if password is not None:
            options["password"] = password
        optional = {
            "max_envelope_size": self.get_option("max_envelope_size"),
            "spn_hostname": self.get_option("negotiate_hostname_override"),
            "spn_service": self.get_option("negotiate_service"),
            "kerberos_kdc": self.get_option("kerberos_kdc"),
            "proxy": self.get_option("proxy") or None,
            "client_certificate": self.get_option("certificate_pem"),
            "client_key": self.get_option("certificate_key_pem"),
            "server_name": self.get_option("server_name"),
            "pinned_public_keys": self.get_option("pinned_public_keys") or None,
        }
        options.update({k: v for k, v in optional.items() if v is not None})
        if https:
            # As with psrp, the certificate options mean nothing over HTTP and are not passed.
            if self.get_option("cert_validation") == "ignore":
                options["insecure_skip_verify"] = True
            elif self.get_option("ca_cert"):
                options["ca_file"] = self.get_option("ca_cert")
        return options

    # --- the connection -------------------------------------------------------------------------

    def _connect(self) -> "Connection":
        if PSREMOTE_IMPORT_ERROR is not None:
            raise AnsibleError(f"the psremote connection plugin needs the psremote Python package: {PSREMOTE_IMPORT_ERROR}")
        super()._connect()
        if self._connected:
            return self
        _install_warning_handler()
        self._host_name = self.get_option("remote_addr")
        options = self._client_options()
        display.vvv(
            f"ESTABLISH PSREMOTE CONNECTION FOR USER: {options.get('username')} ON PORT {options['port']} TO {self._host_name}",
            host=self._host_name,
        )
        try:
            # The security rules are checked here, before anything is sent.
            client = psremote.Client(self._host_name, **options)
        except ConfigurationError as e:
            raise AnsibleError(f"psremote connection options for {self._host_name}: {e}") from e
        except PSRemoteError as e:
            raise self._failure("cannot connect", e) from e
        try:
            client.connect()
            self._pool = client.runspace_pool(host=_AnsibleHost())
        except PSRemoteError as e:
            self._close_client(client)
            raise self._failure("cannot open a PowerShell runspace pool", e) from e
        except BaseException:
            self._close_client(client)
            raise
        self._client = client
        self._connected = True
        info = client.connection_info
        if info is not None:
            display.vvvv(f"PSREMOTE: {info.mechanism} ({info.negotiated}), encryption {info.encryption}", host=self._host_name)
        return self

    def _failure(self, what: str, error: BaseException) -> AnsibleError:
        """The Ansible exception for a psremote one: a host that cannot be reached, logged on to
        or that refuses the session is unreachable; a security refusal or anything else fails
        the task."""
        if isinstance(error, SecurityPolicyError):
            return AnsibleError(f"{what} on {self._host_name}: {error} ({_TRUSTED_HOSTS_HINT})")
        if isinstance(error, (AuthenticationError, TransportError, OperationTimeoutError, WSManFault)):
            return AnsibleConnectionFailure(f"{what} on {self._host_name}: {error}")
        return AnsibleError(f"{what} on {self._host_name}: {error}")

    @staticmethod
    def _close_client(client: t.Any) -> None:
        try:
            client.close()
        except Exception as e:  # noqa: BLE001 - closing is best effort once something failed
            display.debug(f"psremote: closing the client failed: {e}")

    def reset(self) -> None:
        if not self._connected:
            return
        self.close()
        display.vvvvv("PSREMOTE: reset connection", host=self._host_name)
        self._connect()

    def close(self) -> None:
        client, self._client, self._pool = self._client, None, None
        self._connected = False
        if client is not None:
            display.vvvvv("PSREMOTE: closing the runspace pool and the client", host=self._host_name)
            # Closes the pool (Delete on the server) and waits, bounded, for any cleanup.
            self._close_client(client)

    # --- commands -------------------------------------------------------------------------------

    def exec_command(self, cmd: str, in_data: t.Optional[bytes] = None, sudoable: bool = True) -> t.Tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        arguments: t.List[str] = []
        if cmd.startswith(_ENCODED):
            script = base64.b64decode(cmd[len(_ENCODED):].strip().split(" ")[-1]).decode("utf-16-le")
            if in_data and in_data.startswith(b"#!"):
                interpreter = to_text(in_data.splitlines()[0][2:])
                raise AnsibleError(f"the psremote connection cannot run the interpreter '{interpreter}' (a POSIX module?)")
            display.vvv("PSREMOTE: EXEC (encoded PowerShell)" if in_data else f"PSREMOTE: EXEC {script}", host=self._host_name)
        elif cmd.startswith(_FILE):
            script = _RUN_FILE
            arguments = shlex.split(cmd[len(_FILE):])
            display.vvv(f"PSREMOTE: EXEC -File {cmd[len(_FILE):]}", host=self._host_name)
        else:
            # Any other command (raw): a script whose exit code is that of the last native program.
            script = f"{cmd}\nexit $LASTEXITCODE"
            display.vvv(f"PSREMOTE: EXEC {script}", host=self._host_name)
        lines = to_text(in_data, errors="surrogate_or_strict").splitlines() if in_data else None
        return self._run(script, lines, arguments)

    def _run(self, script: str, input_lines: t.Optional[t.List[str]], arguments: t.List[str]) -> t.Tuple[int, bytes, bytes]:
        ps = self._pool.powershell().add_script(script, use_local_scope=True)
        for argument in arguments:
            ps.add_argument(argument)
        try:
            result = ps.invoke(input=input_lines)
        except PSRemoteError as e:
            raise self._failure("running PowerShell", e) from e

        exit_code, host_lines, host_errors = _host_output(result)
        # As with psrp: the code the script passed to exit, else 1 for a pipeline that failed (or
        # was stopped). Errors a script wrote and went on from show in stderr only.
        rc = exit_code or (0 if result.state == "Completed" else 1)
        stdout = "\r\n".join([_object_text(o) for o in result.output] + host_lines)
        records = list(result.errors)
        if result.terminating_error is not None:
            records.append(result.terminating_error)
        with_stack = display.verbosity >= 3
        stderr = "".join(_error_text(r, with_stack) for r in records) + "".join(host_errors)
        if self._play_context.no_log:
            display.vvvvv(f"PSREMOTE: RC {rc} (output censored: no_log)", host=self._host_name)
        else:
            display.vvvvv(f"PSREMOTE: RC {rc}\nSTDOUT: {stdout}\nSTDERR: {stderr}", host=self._host_name)
        return rc, to_bytes(stdout, encoding="utf-8"), to_bytes(stderr, encoding="utf-8")

    # --- files ----------------------------------------------------------------------------------

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        out_path = self._shell._unquote(out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self._host_name)
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound(f'file or module does not exist: "{in_path}"')
        try:
            # The path is used as given (Ansible expands it before): no %VAR% or $env: expansion.
            self._client.copy(in_path, out_path, expand_variables=False)
        except FileTransferError as e:
            raise AnsibleError(f"failed to copy {in_path} to {out_path} on {self._host_name}: {e}") from e
        except PSRemoteError as e:
            raise self._failure(f"copying {in_path} to {out_path}", e) from e

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        in_path = self._shell._unquote(in_path)
        out_path = out_path.replace("\\", "/")
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self._host_name)
        try:
            self._client.fetch(in_path, out_path, expand_variables=False)
        except TransferIsADirectoryError as e:
            if e.side == "remote":
                # As psrp does: a remote directory is not transferred (the caller creates it).
                return
            raise AnsibleError(f"failed to fetch {in_path} to {out_path}: {e}") from e
        except TransferFileNotFoundError as e:
            if e.side == "remote":
                raise AnsibleFileNotFound(f"{in_path} does not exist on {self._host_name}: {e}") from e
            raise AnsibleError(f"failed to fetch {in_path} to {out_path}: {e}") from e
        except FileTransferError as e:
            raise AnsibleError(f"failed to fetch {in_path} from {self._host_name} to {out_path}: {e}") from e
        except PSRemoteError as e:
            raise self._failure(f"fetching {in_path}", e) from e
