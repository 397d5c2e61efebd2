# Type stubs of the native module psremote._native (built from bindings-python/src by maturin).
# Checked against the compiled module by `python -m mypy.stubtest psremote._native`.
# Every blocking method releases the GIL and checks for Ctrl-C about every 100 ms; every
# *_async method returns at once and later completes the given future on its own loop.

import asyncio
from typing import Any, Callable, Optional, final

__all__ = [
    "__version__", "Client", "RunspacePool", "Pipeline", "CmdShell", "CmdProcess", "_complete", "clixml_loads", "set_log_level",
    "pool_disconnect", "pool_disconnect_async", "pool_reconnect", "pool_reconnect_async", "pool_is_alive",
    "pool_is_alive_async", "pool_attach_pipeline", "pool_attach_pipeline_async", "client_list_pools",
    "client_list_pools_async", "client_connect_pool", "client_connect_pool_async",
    "TransferCancel", "client_copy", "client_copy_async", "client_fetch", "client_fetch_async",
    "_shutdown", "Fleet",
]

__version__: str

def set_log_level(level: int) -> None:
    """The most verbose Python logging level forwarded from the core (0 turns it off)."""

def clixml_loads(data: bytes) -> object:
    """One CLIXML value (a PSRP message's data, UTF-8, BOM allowed) as the Python values pipeline
    output gives (str, int, PSObject, list, ...). Malformed CLIXML or a SecureString (it needs a
    pool's session key) raises ValueError."""

def _complete(future: asyncio.Future[Any], ok: bool, value: object) -> None: ...
def _shutdown() -> None:
    """The atexit hook (registered on import): from now on the runtime's threads never take the
    GIL; waits, with the GIL released, for those holding or awaiting it to let go."""

# Sessions that outlive the client (module functions over the pool and client objects).
def pool_disconnect(pool: RunspacePool) -> None:
    """rsp:Disconnect with the pool's idle timeout and buffer mode; returns once its Receives stopped."""
def pool_disconnect_async(pool: RunspacePool, future: asyncio.Future[None]) -> None: ...
def pool_reconnect(pool: RunspacePool) -> None:
    """rsp:Reconnect of a pool this client disconnected; NotFoundError when the server no longer has it."""
def pool_reconnect_async(pool: RunspacePool, future: asyncio.Future[None]) -> None: ...
def pool_is_alive(pool: RunspacePool) -> bool:
    """Transfer Get of the pool's shell: False when the server does not know it (the pool is then closed)."""
def pool_is_alive_async(pool: RunspacePool, future: asyncio.Future[bool]) -> None: ...
def pool_attach_pipeline(pool: RunspacePool, command_id: str) -> Pipeline:
    """A pipeline started before a disconnect, by its CommandId."""
def pool_attach_pipeline_async(pool: RunspacePool, future: asyncio.Future[Pipeline], command_id: str) -> None: ...
def client_list_pools(client: Client) -> list[dict[str, Any]]:
    """The account's PowerShell pools: dicts of the PoolInfo fields, `pipelines` a list of CommandIds."""
def client_list_pools_async(client: Client, future: asyncio.Future[list[dict[str, Any]]]) -> None: ...
def client_connect_pool(
    client: Client,
    shell_id: str,
    configuration_name: str,
    host: Optional[object] = None,
    idle_timeout: Optional[float] = None,
    buffer_mode: Optional[str] = None,
) -> RunspacePool:
    """rsp:Connect to a disconnected pool; NotFoundError when the server does not have it."""
def client_connect_pool_async(
    client: Client,
    future: asyncio.Future[RunspacePool],
    shell_id: str,
    configuration_name: str,
    host: Optional[object] = None,
    idle_timeout: Optional[float] = None,
    buffer_mode: Optional[str] = None,
) -> None: ...

# Files (module functions over the client). A transfer returns (path, bytes, sha1, warnings).
# `progress(done, total)` runs on an I/O thread with the GIL; raising or returning False cancels.
_Outcome = tuple[str, int, str, list[str]]

@final
class TransferCancel:
    """Stops the copy or fetch it was given to: it then fails with a Cancelled FileTransferError."""
    def __new__(cls) -> TransferCancel: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

def client_copy(
    client: Client, src: str, dest: str, expand_variables: bool, timeout: Optional[float],
    configuration_name: str, progress: Optional[Callable[[int, Optional[int]], object]], cancel: TransferCancel,
) -> _Outcome:
    """Copies the local file src to dest on the server (Client::copy)."""
def client_copy_async(
    client: Client, future: asyncio.Future[_Outcome], src: str, dest: str, expand_variables: bool,
    timeout: Optional[float], configuration_name: str, progress: Optional[Callable[[int, Optional[int]], object]],
    cancel: TransferCancel,
) -> None: ...
def client_fetch(
    client: Client, src: str, dest: str, expand_variables: bool, timeout: Optional[float],
    configuration_name: str, progress: Optional[Callable[[int, Optional[int]], object]], cancel: TransferCancel,
) -> _Outcome:
    """Fetches the remote file src into the local file dest (Client::fetch)."""
def client_fetch_async(
    client: Client, future: asyncio.Future[_Outcome], src: str, dest: str, expand_variables: bool,
    timeout: Optional[float], configuration_name: str, progress: Optional[Callable[[int, Optional[int]], object]],
    cancel: TransferCancel,
) -> None: ...

# Fleets: one script or cmd command on many hosts (core client::Fleet). A host's result is
# (index, host, status, elapsed, attempts, kind, payload): status "Succeeded", "Failed" or
# "Unreachable"; kind "powershell" with the pipeline's (event kind, payload) tuples (as
# Pipeline.next_events gives them, the final "state" last), "cmd" with (stdout, stderr,
# exit_code), or "error" with the exception a Client would have raised.
_HostResult = tuple[int, str, str, float, int, str, Any]

@final
class Fleet:
    """A fan-out under way: starts at construction, at most `throttle` hosts at once; dropping
    it cancels what has not finished."""
    def __new__(
        cls,
        hosts: list[tuple[str, Client]],
        script: Optional[str],
        executable: Optional[str],
        arguments: list[str],
        throttle: int,
        timeout: Optional[float],
        connect_retries: int,
        retry_delay: float,
        max_output: Optional[int],
        configuration_name: Optional[str] = None,
        shell: Optional[tuple[list[tuple[str, str]], Optional[str], Optional[int], bool, Optional[float]]] = None,
        stdin: Optional[bytes] = None,
        skip_cmd_shell: bool = False,
    ) -> Fleet: ...
    @property
    def total(self) -> int: ...
    @property
    def cancelled(self) -> bool: ...
    def cancel(self) -> None:
        """Hosts not started report ClosedError without being contacted; running ones are cut off."""
    def next(self, timeout: Optional[float] = None) -> Optional[_HostResult]:
        """The next host to finish, None once all have; OperationTimeoutError past `timeout`."""
    def next_async(self, future: asyncio.Future[Optional[_HostResult]]) -> None: ...
    def wait_for_cleanup(self, grace: float) -> bool:
        """Waits (bounded) for the background releases of cut-off hosts; whether none is left."""
    def wait_for_cleanup_async(self, future: asyncio.Future[bool], grace: float) -> None: ...

@final
class Client:
    def __new__(
        cls,
        *,
        host: str,
        port: int,
        path: str,
        https: bool,
        auth: str,
        username: str,
        password: str,
        operation_timeout: float,
        connect_timeout: float,
        max_envelope_size: Optional[int],
        locale: str,
        data_locale: str,
        allow_unencrypted: bool,
        encryption: str,
        trusted_hosts: list[str],
        ca_file: Optional[str],
        ca_dir: Optional[str],
        server_name: Optional[str],
        pinned_public_keys: list[str],
        insecure_skip_verify: bool,
        min_tls_version: Optional[str],
        max_tls_version: Optional[str],
        client_certificate: Optional[str],
        client_key: Optional[str],
        client_key_password: Optional[str],
        kerberos_kdc: Optional[str],
        spn_service: str,
        spn_hostname: Optional[str],
        delegate: bool,
        audit_arguments: bool,
        max_reply_size: Optional[int] = None,
        max_events_ahead: int = 256,
        proxy: Optional[str] = None,
        proxy_username: Optional[str] = None,
        proxy_password: Optional[str] = None,
        ignore_proxy: bool = False,
    ) -> Client: ...
    @staticmethod
    def ssh(
        *,
        host: str,
        port: int,
        username: str,
        key_file: Optional[str] = None,
        key_passphrase: Optional[str] = None,
        password: Optional[str] = None,
        agent: bool = False,
        agent_socket: Optional[str] = None,
        known_hosts: Optional[str] = None,
        accept_unknown_host_key: bool = False,
        subsystem: Optional[str] = None,
        connect_timeout: float = 30.0,
        audit_arguments: bool = False,
        max_events_ahead: int = 256,
        proxy: Optional[str] = None,
        proxy_username: Optional[str] = None,
        proxy_password: Optional[str] = None,
        operation_timeout: float = 20.0,
    ) -> Client:
        """A client for the powershell subsystem of an SSH server; each runspace pool makes its
        own SSH connection."""
    @staticmethod
    def process(
        *,
        executable: Optional[str] = None,
        arguments: Optional[list[str]] = None,
        audit_arguments: bool = False,
        max_events_ahead: int = 256,
        operation_timeout: float = 20.0,
    ) -> Client:
        """A client for a local process speaking the out-of-process transport on its
        stdin/stdout (pwsh -NoLogo -s by default)."""
    @property
    def transport(self) -> str:
        """wsman, ssh (PowerShell over SSH) or process (a local out-of-process program)."""
    @property
    def url(self) -> str: ...
    @property
    def connection_info(self) -> Optional[dict[str, Any]]:
        """endpoint, mechanism, negotiated, encryption, channel_binding, tls_version,
        cipher_suite, certificate_sha256, proxy of the most recent connection; None before one."""
    def connect(self) -> None: ...
    def connect_async(self, future: asyncio.Future[None]) -> None: ...
    def run_cmd(
        self,
        executable: str,
        arguments: list[str],
        stdin: Optional[bytes],
        environment: list[tuple[str, str]],
        working_directory: Optional[str],
        codepage: Optional[int],
        no_profile: bool,
        skip_cmd_shell: bool,
        timeout: Optional[float],
        max_output: Optional[int],
    ) -> tuple[bytes, bytes, int]:
        """The core's run_cmd_with: ``timeout`` seconds for the whole call (None: none),
        ``max_output`` bytes of stdout and stderr kept (None: no limit)."""
    def run_cmd_async(
        self,
        future: asyncio.Future[tuple[bytes, bytes, int]],
        executable: str,
        arguments: list[str],
        stdin: Optional[bytes],
        environment: list[tuple[str, str]],
        working_directory: Optional[str],
        codepage: Optional[int],
        no_profile: bool,
        skip_cmd_shell: bool,
        timeout: Optional[float],
        max_output: Optional[int],
    ) -> None: ...
    def open_cmd_shell(
        self,
        environment: list[tuple[str, str]],
        working_directory: Optional[str],
        codepage: Optional[int],
        no_profile: bool,
        idle_timeout: Optional[float],
    ) -> CmdShell:
        """codepage None sends no WINRS_CODEPAGE; idle_timeout in seconds, None for the server's."""
    def open_cmd_shell_async(
        self,
        future: asyncio.Future[CmdShell],
        environment: list[tuple[str, str]],
        working_directory: Optional[str],
        codepage: Optional[int],
        no_profile: bool,
        idle_timeout: Optional[float],
    ) -> None: ...
    def server_config(self) -> dict[str, Any]: ...
    def server_config_async(self, future: asyncio.Future[dict[str, Any]]) -> None: ...
    def fit_envelope_to_server(self) -> int: ...
    def fit_envelope_to_server_async(self, future: asyncio.Future[int]) -> None: ...
    @property
    def envelope_size(self) -> Optional[int]: ...
    def open_pool(
        self,
        configuration_name: str,
        min_runspaces: int,
        max_runspaces: int,
        host: Optional[object] = None,
        no_profile: bool = False,
        application_arguments: Optional[object] = None,
        idle_timeout: Optional[float] = None,
        buffer_mode: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> RunspacePool: ...
    def open_pool_async(
        self,
        future: asyncio.Future[RunspacePool],
        configuration_name: str,
        min_runspaces: int,
        max_runspaces: int,
        host: Optional[object] = None,
        no_profile: bool = False,
        application_arguments: Optional[object] = None,
        idle_timeout: Optional[float] = None,
        buffer_mode: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> None: ...
    def end_operations(self, grace: float) -> bool:
        """Ends the operations in flight (ClosedError) and refuses new ones; waits up to
        ``grace`` seconds for them to end; whether all did."""
    def end_operations_async(self, future: asyncio.Future[bool], grace: float) -> None: ...
    def wait_for_cleanup(self, grace: float) -> bool:
        """Waits up to ``grace`` seconds for the background Signal and Delete requests that
        release dropped work; whether none is left."""
    def wait_for_cleanup_async(self, future: asyncio.Future[bool], grace: float) -> None: ...
    @property
    def operations_in_flight(self) -> int: ...

@final
class RunspacePool:
    @property
    def id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def protocol_version(self) -> Optional[str]: ...
    @property
    def application_private_data(self) -> object: ...
    def start(
        self,
        statements: list[list[dict[str, Any]]],
        has_input: bool,
        add_to_history: bool,
        invocation_info: bool = True,
        is_nested: bool = False,
    ) -> Pipeline: ...
    def start_async(
        self,
        future: asyncio.Future[Pipeline],
        statements: list[list[dict[str, Any]]],
        has_input: bool,
        add_to_history: bool,
        invocation_info: bool = True,
        is_nested: bool = False,
    ) -> None: ...
    def exchange_key(self, timeout: Optional[float] = None) -> None: ...
    def exchange_key_async(self, future: asyncio.Future[None], timeout: Optional[float] = None) -> None: ...
    def command_metadata(self, names: list[str], command_types: int, namespaces: list[str]) -> list[Any]: ...
    def command_metadata_async(
        self, future: asyncio.Future[list[Any]], names: list[str], command_types: int, namespaces: list[str]
    ) -> None: ...
    def set_max_runspaces(self, n: int) -> bool: ...
    def set_min_runspaces(self, n: int) -> bool: ...
    def available_runspaces(self) -> int: ...
    def reset_runspace_state(self) -> bool: ...
    def _use_session_key_primes(self, p: bytes, q: bytes, e: int) -> None:
        """Testing only (replaying recorded conversations): the session key exchange, not
        started yet, uses the RSA key of primes p and q (big-endian) and exponent e instead of a
        generated one; ConfigurationError once it has started. Never for real sessions."""
    def close(self) -> None: ...
    def close_async(self, future: asyncio.Future[None]) -> None: ...

@final
class Pipeline:
    @property
    def id(self) -> str: ...
    def next_event(self, timeout: Optional[float] = None) -> Optional[tuple[str, object]]: ...
    def next_event_async(self, future: asyncio.Future[Optional[tuple[str, object]]]) -> None: ...
    def next_events(self, max_events: int, timeout: Optional[float] = None) -> list[tuple[str, object]]: ...
    def next_events_async(self, future: asyncio.Future[list[tuple[str, object]]], max_events: int) -> None: ...
    def send_input(self, values: list[Any]) -> None: ...
    def send_input_async(self, future: asyncio.Future[None], values: list[Any]) -> None: ...
    def end_input(self) -> None: ...
    def end_input_async(self, future: asyncio.Future[None]) -> None: ...
    def stop(self) -> None: ...
    def stop_async(self, future: asyncio.Future[None]) -> None: ...

@final
class CmdShell:
    @property
    def id(self) -> str: ...
    def start(self, executable: str, arguments: list[str], skip_cmd_shell: bool) -> CmdProcess: ...
    def start_async(
        self, future: asyncio.Future[CmdProcess], executable: str, arguments: list[str], skip_cmd_shell: bool
    ) -> None: ...
    def attach(self, command_id: Optional[str] = None) -> CmdProcess: ...
    def close(self) -> None:
        """Deletes the shell; closing a closed shell does nothing. start() afterwards raises ClosedError."""
    def close_async(self, future: asyncio.Future[None]) -> None: ...

@final
class CmdProcess:
    @property
    def id(self) -> str: ...
    @property
    def exit_code(self) -> Optional[int]:
        """Set when next_chunk returned None (unless terminated before the server reported one)."""
    def next_chunk(self, timeout: Optional[float] = None) -> Optional[tuple[str, bytes]]:
        """("stdout" | "stderr", data), or None at the end; OperationTimeoutError after timeout
        seconds (nothing is lost). One reader at a time; the other methods may run meanwhile."""
    def next_chunk_async(self, future: asyncio.Future[Optional[tuple[str, bytes]]]) -> None: ...
    def send_stdin(self, data: bytes, end: bool) -> None: ...
    def send_stdin_async(self, future: asyncio.Future[None], data: bytes, end: bool) -> None: ...
    def ctrl_c(self) -> None: ...
    def ctrl_c_async(self, future: asyncio.Future[None]) -> None: ...
    def terminate(self) -> None: ...
    def terminate_async(self, future: asyncio.Future[None]) -> None: ...
