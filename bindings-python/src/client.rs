//! `Client`, `RunspacePool` and `Pipeline` of `psremote._native`: the core's async API, blocking
//! (GIL released, Ctrl-C aware) or completing asyncio futures.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use psremote::client::{
    self as core, ClientCertificate, ClientConfig, KerberosOptions, Mechanism, MessageEncryption, PoolConfig,
    ProcessOptions, TlsOptions, TlsVersion, parse_pin,
};
use psremote::proxy::{Proxy, ProxyCredentials};
use psremote::psrp::{Command, Event, Merge, PipelineSpec, PipelineState};
use psremote::transport::ssh::{HostKeyPolicy, SshAuth, SshOptions};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use tokio::sync::{Mutex as AsyncMutex, OnceCell};
use zeroize::Zeroizing;

use crate::cmd::{self, CmdShell};
use crate::convert::{self, ConvertError, GcPause, ToPy};
use crate::host::PyHost;
use crate::runtime::{Ops, spawn, spawn_in, wait, wait_in};

fn none(py: Python<'_>, _: ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

/// A connection to one endpoint; connects on first use.
#[derive(Debug)]
#[pyclass(frozen, module = "psremote._native")]
pub struct Client {
    config: ClientConfig,
    url: String,
    inner: Arc<OnceCell<core::Client>>,
    /// Its operations in flight, which `end_operations` cancels.
    ops: Arc<Ops>,
}

impl Client {
    pub(crate) fn handle(&self) -> (Arc<OnceCell<core::Client>>, ClientConfig) {
        (self.inner.clone(), self.config.clone())
    }

    /// The client's operations in flight.
    pub(crate) fn ops(&self) -> &Arc<Ops> {
        &self.ops
    }
}

/// `grace` seconds for a closing client's waits.
/// A positive, finite number of seconds as a Duration.
fn positive_secs(name: &str, seconds: f64) -> PyResult<Duration> {
    if seconds.is_finite() && seconds > 0.0 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(PyValueError::new_err(format!("{name} must be a positive number of seconds, not {seconds}")))
    }
}

pub(crate) fn grace(seconds: f64) -> PyResult<Duration> {
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if seconds > 0.0 => Ok(d),
        _ => Err(PyValueError::new_err(format!("grace must be a positive number of seconds, not {seconds}"))),
    }
}

/// An optional deadline in seconds (None: none).
pub(crate) fn deadline(name: &str, seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds
        .map(|s| match Duration::try_from_secs_f64(s) {
            Ok(d) if s > 0.0 => Ok(d),
            _ => Err(PyValueError::new_err(format!("{name} must be a positive number of seconds, not {s}"))),
        })
        .transpose()
}

pub(crate) async fn get(cell: Arc<OnceCell<core::Client>>, config: ClientConfig) -> psremote::Result<core::Client> {
    cell.get_or_try_init(|| core::Client::connect(config)).await.cloned()
}

fn pool_config(
    configuration_name: String,
    min: i32,
    max: i32,
    host: Option<Py<PyAny>>,
    no_profile: bool,
) -> PoolConfig {
    PoolConfig {
        configuration_name,
        min_runspaces: min,
        max_runspaces: max,
        host: host.map(|h| Arc::new(PyHost(h)) as Arc<dyn core::Host>),
        no_profile,
        ..PoolConfig::default()
    }
}

/// `$PSSenderInfo.ApplicationArguments` from a Python mapping (None: none).
fn application_arguments(value: Option<Bound<'_, PyAny>>) -> PyResult<Option<psremote::clixml::Value>> {
    match value {
        Some(v) if !v.is_none() => Ok(Some(convert::from_py(&v, &convert::NoKeys).map_err(ConvertError::into_py)?)),
        _ => Ok(None),
    }
}

async fn open_pool(
    cell: Arc<OnceCell<core::Client>>,
    config: ClientConfig,
    pool: PoolConfig,
) -> psremote::Result<RunspacePool> {
    let client = get(cell, config).await?;
    Ok(RunspacePool { inner: core::RunspacePool::open(&client, pool).await? })
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (
        *, host, port, path, https, auth, username, password, operation_timeout, connect_timeout, max_envelope_size,
        locale, data_locale, allow_unencrypted, encryption, trusted_hosts, ca_file, ca_dir, server_name,
        pinned_public_keys, insecure_skip_verify, min_tls_version, max_tls_version, client_certificate, client_key,
        client_key_password, kerberos_kdc, spn_service, spn_hostname, delegate, audit_arguments, max_reply_size=None,
        max_events_ahead=256, proxy=None, proxy_username=None, proxy_password=None, ignore_proxy=false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        host: String,
        port: u16,
        path: String,
        https: bool,
        auth: &str,
        username: String,
        password: String,
        operation_timeout: f64,
        connect_timeout: f64,
        max_envelope_size: Option<u32>,
        locale: String,
        data_locale: String,
        allow_unencrypted: bool,
        encryption: &str,
        trusted_hosts: Vec<String>,
        ca_file: Option<PathBuf>,
        ca_dir: Option<PathBuf>,
        server_name: Option<String>,
        pinned_public_keys: Vec<String>,
        insecure_skip_verify: bool,
        min_tls_version: Option<&str>,
        max_tls_version: Option<&str>,
        client_certificate: Option<PathBuf>,
        client_key: Option<PathBuf>,
        client_key_password: Option<String>,
        kerberos_kdc: Option<String>,
        spn_service: String,
        spn_hostname: Option<String>,
        delegate: bool,
        audit_arguments: bool,
        max_reply_size: Option<u64>,
        max_events_ahead: usize,
        proxy: Option<String>,
        proxy_username: Option<String>,
        proxy_password: Option<String>,
        ignore_proxy: bool,
        py: Python<'_>,
    ) -> PyResult<Self> {
        let core_err = |e: psremote::Error| crate::errors::to_py_err(py, e);
        // Taken first, so the passwords are zeroized on every path out of here.
        let key_password = client_key_password.map(Zeroizing::new);
        let proxy = proxy.map(Zeroizing::new);
        let proxy_password = proxy_password.map(Zeroizing::new);
        let mechanism: Mechanism = auth.parse().map_err(core_err)?;
        let secs = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(PyValueError::new_err(format!("{name} must be a positive number of seconds, not {v}")))
            }
        };
        let version = |v: Option<&str>| v.map(str::parse::<TlsVersion>).transpose().map_err(core_err);
        let mut config = ClientConfig::new(host, username, password).with_mechanism(mechanism);
        config.port = port;
        config.path = path;
        config.https = https;
        config.operation_timeout = secs("operation_timeout", operation_timeout)?;
        config.connect_timeout = secs("connect_timeout", connect_timeout)?;
        config.max_envelope_size = max_envelope_size;
        config.max_reply_size = max_reply_size;
        config.max_events_ahead = max_events_ahead;
        config.locale = locale;
        config.data_locale = data_locale;
        config.allow_unencrypted = allow_unencrypted;
        // "never" is plaintext Basic (allow_unencrypted) over http, or TLS alone over https: both
        // are what Auto does; the Python layer checked that the combination makes sense.
        let encryption = if encryption == "never" { "auto" } else { encryption };
        config.message_encryption = encryption.parse::<MessageEncryption>().map_err(core_err)?;
        config.trusted_hosts = trusted_hosts;
        config.tls = TlsOptions {
            ca_file,
            ca_dir,
            server_name,
            pinned_spki_sha256: pinned_public_keys
                .iter()
                .map(|p| parse_pin(p))
                .collect::<Result<_, _>>()
                .map_err(core_err)?,
            insecure_skip_verify,
            min_version: version(min_tls_version)?,
            max_version: version(max_tls_version)?,
            client_certificate: client_certificate.map(|certificate| ClientCertificate {
                key: client_key.unwrap_or_else(|| certificate.clone()),
                certificate,
                key_password,
            }),
        };
        config.kerberos = KerberosOptions { kdc: kerberos_kdc, service: spn_service, hostname: spn_hostname, delegate };
        config.audit_arguments = audit_arguments;
        config.proxy = proxy.as_deref().map(|url| Proxy::parse(url)).transpose().map_err(core_err)?;
        config.proxy_credentials = proxy_username
            .map(|user| ProxyCredentials::new(user, proxy_password.as_deref().map(String::as_str).unwrap_or("")));
        config.ignore_proxy = ignore_proxy;
        // Validate now, so a bad option or a refused combination fails at construction; the
        // environment's proxy variables are read here, once.
        let url = config.validate().map_err(core_err)?;
        config.pin_proxy().map_err(core_err)?;
        Ok(Self { config, url, inner: Arc::new(OnceCell::new()), ops: Arc::default() })
    }

    /// A client for a local process that speaks PowerShell's out-of-process transport on its
    /// stdin and stdout (`pwsh -NoLogo -s` by default); each runspace pool starts its own.
    /// `operation_timeout` bounds the waits for the process's acknowledgements (three of it).
    #[staticmethod]
    #[pyo3(signature = (*, executable=None, arguments=None, audit_arguments=false, max_events_ahead=256, operation_timeout=20.0))]
    fn process(
        executable: Option<String>,
        arguments: Option<Vec<String>>,
        audit_arguments: bool,
        max_events_ahead: usize,
        operation_timeout: f64,
        py: Python<'_>,
    ) -> PyResult<Self> {
        let operation_timeout = positive_secs("operation_timeout", operation_timeout)?;
        let mut options = ProcessOptions::default();
        if let Some(executable) = executable {
            options.executable = executable;
        }
        if let Some(arguments) = arguments {
            options.arguments = arguments;
        }
        let mut config = ClientConfig::process(options);
        config.operation_timeout = operation_timeout;
        config.audit_arguments = audit_arguments;
        config.max_events_ahead = max_events_ahead;
        let url = config.validate().map_err(|e| crate::errors::to_py_err(py, e))?;
        Ok(Self { config, url, inner: Arc::new(OnceCell::new()), ops: Arc::default() })
    }

    /// The transport: `wsman`, `ssh` (PowerShell over SSH), or `process` for a local process.
    #[getter]
    fn transport(&self) -> &'static str {
        self.config.carrier.name()
    }

    /// What the most recent connection established, or None before the first one.
    #[getter]
    fn connection_info<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(info) = self.inner.get().and_then(core::Client::connection_info) else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("endpoint", &info.endpoint)?;
        d.set_item("mechanism", info.mechanism.name())?;
        d.set_item("negotiated", info.negotiated)?;
        d.set_item("encryption", info.encryption.name())?;
        d.set_item("channel_binding", info.channel_binding)?;
        d.set_item("tls_version", info.tls.as_ref().map(|t| t.version.name()))?;
        d.set_item("cipher_suite", info.tls.as_ref().map(|t| t.cipher_suite.as_str()))?;
        d.set_item("certificate_sha256", info.tls.as_ref().map(|t| t.certificate_sha256.as_str()))?;
        d.set_item("proxy", info.proxy.as_deref())?;
        Ok(Some(d))
    }

    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// A client for the `powershell` subsystem of an SSH server (PowerShell over SSH): each
    /// runspace pool makes its own SSH connection. One of `key_file`, `password` or `agent`
    /// (the agent at `agent_socket`, else `$SSH_AUTH_SOCK`); the host key is checked against
    /// `known_hosts` (default `~/.ssh/known_hosts`), an unknown one accepted (warned, recorded)
    /// only with `accept_unknown_host_key`. `operation_timeout` bounds the waits for the
    /// server's acknowledgements (three of it), as over the process transport.
    #[staticmethod]
    #[pyo3(signature = (
        *, host, port, username, key_file=None, key_passphrase=None, password=None, agent=false, agent_socket=None,
        known_hosts=None, accept_unknown_host_key=false, subsystem=None, connect_timeout=30.0, audit_arguments=false,
        max_events_ahead=256, proxy=None, proxy_username=None, proxy_password=None, operation_timeout=20.0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn ssh(
        host: String,
        port: u16,
        username: String,
        key_file: Option<PathBuf>,
        key_passphrase: Option<String>,
        password: Option<String>,
        agent: bool,
        agent_socket: Option<PathBuf>,
        known_hosts: Option<PathBuf>,
        accept_unknown_host_key: bool,
        subsystem: Option<String>,
        connect_timeout: f64,
        audit_arguments: bool,
        max_events_ahead: usize,
        proxy: Option<String>,
        proxy_username: Option<String>,
        proxy_password: Option<String>,
        operation_timeout: f64,
        py: Python<'_>,
    ) -> PyResult<Self> {
        // Taken first, so the secrets are zeroized on every path out of here.
        let key_passphrase = key_passphrase.map(Zeroizing::new);
        let password = password.map(Zeroizing::new);
        let proxy_password = proxy_password.map(Zeroizing::new);
        let core_err = |e: psremote::Error| crate::errors::to_py_err(py, e);
        let proxy = match proxy {
            None => None,
            Some(url) => {
                let credentials = proxy_username.map(|u| {
                    psremote::proxy::ProxyCredentials::new(
                        u,
                        proxy_password.as_deref().map(String::as_str).unwrap_or(""),
                    )
                });
                let parsed = psremote::proxy::Proxy::parse(&url).map_err(core_err)?;
                Some(if credentials.is_some() {
                    parsed.with_credentials(credentials).map_err(core_err)?
                } else {
                    parsed
                })
            }
        };
        let auth = match (key_file, password, agent) {
            (Some(path), None, false) => SshAuth::key_file(path, key_passphrase.as_deref().map(String::as_str)),
            (None, Some(password), false) => SshAuth::password(password.as_str()),
            (None, None, true) => SshAuth::Agent { socket: agent_socket },
            _ => return Err(PyValueError::new_err("give exactly one of key_file, password and agent")),
        };
        if !(connect_timeout.is_finite() && connect_timeout > 0.0) {
            return Err(PyValueError::new_err(format!(
                "connect_timeout must be a positive number of seconds, not {connect_timeout}"
            )));
        }
        let mut options = SshOptions::new(host, username, auth);
        options.port = port;
        options.known_hosts = known_hosts;
        if accept_unknown_host_key {
            options.host_key_policy = HostKeyPolicy::AcceptUnknown;
        }
        if let Some(subsystem) = subsystem {
            options.subsystem = subsystem;
        }
        options.connect_timeout = Duration::from_secs_f64(connect_timeout);
        options.proxy = proxy;
        let mut config = ClientConfig::ssh(options);
        config.operation_timeout = positive_secs("operation_timeout", operation_timeout)?;
        config.audit_arguments = audit_arguments;
        config.max_events_ahead = max_events_ahead;
        let url = config.validate().map_err(core_err)?;
        Ok(Self { config, url, inner: Arc::new(OnceCell::new()), ops: Arc::default() })
    }

    /// winrm/config as a dict: the limits by name, and `entries`, every setting by path.
    fn server_config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (cell, config) = self.handle();
        let found = wait_in(py, &self.ops, async move { get(cell, config).await?.server_config().await })?;
        server_config_dict(py, &found)
    }

    fn server_config_async(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        let (cell, config) = self.handle();
        spawn_in(py, &self.ops, future, async move { get(cell, config).await?.server_config().await }, |py, found| {
            Ok(server_config_dict(py, &found)?.into_any().unbind())
        })
    }

    fn fit_envelope_to_server(&self, py: Python<'_>) -> PyResult<u32> {
        let (cell, config) = self.handle();
        wait_in(py, &self.ops, async move { get(cell, config).await?.fit_envelope_to_server().await })
    }

    fn fit_envelope_to_server_async(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        let (cell, config) = self.handle();
        spawn_in(
            py,
            &self.ops,
            future,
            async move { get(cell, config).await?.fit_envelope_to_server().await },
            |py, size| Ok(size.into_pyobject(py)?.into_any().unbind()),
        )
    }

    /// The MaxEnvelopeSize new requests start with (None before the client connected).
    #[getter]
    fn envelope_size(&self) -> Option<u32> {
        self.inner.get().map(core::Client::envelope_size)
    }

    fn connect(&self, py: Python<'_>) -> PyResult<()> {
        let (cell, config) = self.handle();
        wait_in(py, &self.ops, async move { get(cell, config).await.map(|_| ()) })
    }

    fn connect_async(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        let (cell, config) = self.handle();
        spawn_in(py, &self.ops, future, async move { get(cell, config).await.map(|_| ()) }, none)
    }

    #[pyo3(signature = (
        executable, arguments, stdin, environment, working_directory, codepage, no_profile, skip_cmd_shell,
        timeout, max_output
    ))]
    #[allow(clippy::too_many_arguments)]
    fn run_cmd(
        &self,
        py: Python<'_>,
        executable: String,
        arguments: Vec<String>,
        stdin: Option<Vec<u8>>,
        environment: Vec<(String, String)>,
        working_directory: Option<String>,
        codepage: Option<u32>,
        no_profile: bool,
        skip_cmd_shell: bool,
        timeout: Option<f64>,
        max_output: Option<u64>,
    ) -> PyResult<Py<PyAny>> {
        let (cell, config) = self.handle();
        let shell = cmd::shell_options(environment, working_directory, codepage, no_profile, None)?;
        let options = cmd::run_options(shell, stdin, skip_cmd_shell, deadline("timeout", timeout)?, max_output);
        let r = wait_in(py, &self.ops, async move {
            let client = get(cell, config).await?;
            cmd::run_cmd(client, executable, arguments, options).await
        })?;
        cmd::cmd_tuple(py, r)
    }

    #[pyo3(signature = (
        future, executable, arguments, stdin, environment, working_directory, codepage, no_profile, skip_cmd_shell,
        timeout, max_output
    ))]
    #[allow(clippy::too_many_arguments)]
    fn run_cmd_async(
        &self,
        py: Python<'_>,
        future: Bound<'_, PyAny>,
        executable: String,
        arguments: Vec<String>,
        stdin: Option<Vec<u8>>,
        environment: Vec<(String, String)>,
        working_directory: Option<String>,
        codepage: Option<u32>,
        no_profile: bool,
        skip_cmd_shell: bool,
        timeout: Option<f64>,
        max_output: Option<u64>,
    ) -> PyResult<()> {
        let (cell, config) = self.handle();
        let shell = cmd::shell_options(environment, working_directory, codepage, no_profile, None)?;
        let options = cmd::run_options(shell, stdin, skip_cmd_shell, deadline("timeout", timeout)?, max_output);
        let fut = async move {
            let client = get(cell, config).await?;
            cmd::run_cmd(client, executable, arguments, options).await
        };
        spawn_in(py, &self.ops, future, fut, cmd::cmd_tuple)
    }

    fn open_cmd_shell(
        &self,
        py: Python<'_>,
        environment: Vec<(String, String)>,
        working_directory: Option<String>,
        codepage: Option<u32>,
        no_profile: bool,
        idle_timeout: Option<f64>,
    ) -> PyResult<CmdShell> {
        let (cell, config) = self.handle();
        let options = cmd::shell_options(environment, working_directory, codepage, no_profile, idle_timeout)?;
        wait_in(py, &self.ops, async move { cmd::open_shell(get(cell, config).await?, options).await })
    }

    #[allow(clippy::too_many_arguments)]
    fn open_cmd_shell_async(
        &self,
        py: Python<'_>,
        future: Bound<'_, PyAny>,
        environment: Vec<(String, String)>,
        working_directory: Option<String>,
        codepage: Option<u32>,
        no_profile: bool,
        idle_timeout: Option<f64>,
    ) -> PyResult<()> {
        let (cell, config) = self.handle();
        let options = cmd::shell_options(environment, working_directory, codepage, no_profile, idle_timeout)?;
        let fut = async move { cmd::open_shell(get(cell, config).await?, options).await };
        spawn_in(py, &self.ops, future, fut, |py, s| Ok(Py::new(py, s)?.into_any()))
    }

    #[pyo3(signature = (configuration_name, min_runspaces, max_runspaces, host=None, no_profile=false, application_arguments=None, idle_timeout=None, buffer_mode=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn open_pool(
        &self,
        py: Python<'_>,
        configuration_name: String,
        min_runspaces: i32,
        max_runspaces: i32,
        host: Option<Py<PyAny>>,
        no_profile: bool,
        application_arguments: Option<Bound<'_, PyAny>>,
        idle_timeout: Option<f64>,
        buffer_mode: Option<&str>,
        timeout: Option<f64>,
    ) -> PyResult<RunspacePool> {
        let (cell, config) = self.handle();
        let mut pool = pool_config(configuration_name, min_runspaces, max_runspaces, host, no_profile);
        pool.application_arguments = self::application_arguments(application_arguments)?;
        pool.idle_timeout = crate::sessions::idle_timeout(idle_timeout)?;
        pool.buffer_mode = crate::sessions::buffer_mode(buffer_mode)?;
        pool.open_timeout = deadline("timeout", timeout)?;
        wait_in(py, &self.ops, open_pool(cell, config, pool))
    }

    #[pyo3(signature = (future, configuration_name, min_runspaces, max_runspaces, host=None, no_profile=false, application_arguments=None, idle_timeout=None, buffer_mode=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn open_pool_async(
        &self,
        py: Python<'_>,
        future: Bound<'_, PyAny>,
        configuration_name: String,
        min_runspaces: i32,
        max_runspaces: i32,
        host: Option<Py<PyAny>>,
        no_profile: bool,
        application_arguments: Option<Bound<'_, PyAny>>,
        idle_timeout: Option<f64>,
        buffer_mode: Option<&str>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let (cell, config) = self.handle();
        let mut pool = pool_config(configuration_name, min_runspaces, max_runspaces, host, no_profile);
        pool.application_arguments = self::application_arguments(application_arguments)?;
        pool.idle_timeout = crate::sessions::idle_timeout(idle_timeout)?;
        pool.buffer_mode = crate::sessions::buffer_mode(buffer_mode)?;
        pool.open_timeout = deadline("timeout", timeout)?;
        spawn_in(py, &self.ops, future, open_pool(cell, config, pool), |py, p| Ok(Py::new(py, p)?.into_any()))
    }

    /// Ends the operations in flight (they fail with ClosedError; what they had opened on the
    /// server is released in the background) and refuses new ones; waits up to `grace` seconds
    /// for them to end. Returns whether all ended.
    fn end_operations(&self, py: Python<'_>, grace: f64) -> PyResult<bool> {
        let (ops, limit) = (self.ops.clone(), self::grace(grace)?);
        ops.cancel_all();
        wait(py, async move { Ok(ops.settled(limit).await) })
    }

    fn end_operations_async(&self, py: Python<'_>, future: Bound<'_, PyAny>, grace: f64) -> PyResult<()> {
        let (ops, limit) = (self.ops.clone(), self::grace(grace)?);
        ops.cancel_all();
        spawn(py, future, async move { Ok(ops.settled(limit).await) }, |py, done| {
            Ok(pyo3::types::PyBool::new(py, done).to_owned().into_any().unbind())
        })
    }

    /// Waits up to `grace` seconds until the background cleanups (the Signal and Delete
    /// requests releasing dropped commands, shells, pipelines and pools) have finished; returns
    /// whether none is left.
    fn wait_for_cleanup(&self, py: Python<'_>, grace: f64) -> PyResult<bool> {
        let limit = self::grace(grace)?;
        wait(py, async move { Ok(core::cleanup_finished(limit).await) })
    }

    fn wait_for_cleanup_async(&self, py: Python<'_>, future: Bound<'_, PyAny>, grace: f64) -> PyResult<()> {
        let limit = self::grace(grace)?;
        spawn(py, future, async move { Ok(core::cleanup_finished(limit).await) }, |py, done| {
            Ok(pyo3::types::PyBool::new(py, done).to_owned().into_any().unbind())
        })
    }

    /// How many of the client's operations are in flight.
    #[getter]
    fn operations_in_flight(&self) -> usize {
        self.ops.in_flight()
    }
}

/// An open runspace pool.
#[derive(Debug)]
#[pyclass(frozen, module = "psremote._native")]
pub struct RunspacePool {
    pub(crate) inner: core::RunspacePool,
}

fn opt_bool(d: &Bound<'_, PyDict>, key: &str) -> PyResult<bool> {
    Ok(match d.get_item(key)? {
        Some(v) => v.is_truthy()?,
        None => false,
    })
}

/// Reads the statements the Python builder produced. Values needing the session key report
/// `NeedKey`.
/// The pipeline-wide switches of a start.
#[derive(Debug, Clone, Copy)]
struct SpecFlags {
    has_input: bool,
    add_to_history: bool,
    invocation_info: bool,
    is_nested: bool,
}

fn read_spec(
    statements: &Bound<'_, PyList>,
    flags: SpecFlags,
    pool: &core::RunspacePool,
) -> Result<PipelineSpec, ConvertError> {
    let SpecFlags { has_input, add_to_history, invocation_info, is_nested } = flags;
    let mut spec = PipelineSpec { has_input, add_to_history, invocation_info, is_nested, ..PipelineSpec::default() };
    for stmt in statements.iter() {
        let mut commands = Vec::new();
        for cmd in stmt.try_iter()? {
            let cmd = cmd?;
            let d = cmd.cast::<PyDict>().map_err(|_| PyValueError::new_err("each command must be a dict"))?;
            let text: String =
                d.get_item("text")?.ok_or_else(|| PyValueError::new_err("a command needs 'text'"))?.extract()?;
            let mut c = if opt_bool(d, "is_script")? { Command::script(text) } else { Command::new(text) };
            c.use_local_scope = match d.get_item("use_local_scope")? {
                Some(v) if !v.is_none() => Some(v.is_truthy()?),
                _ => None,
            };
            if let Some(params) = d.get_item("parameters")? {
                for p in params.try_iter()? {
                    let p = p?;
                    let t = p
                        .cast::<PyTuple>()
                        .map_err(|_| PyValueError::new_err("a parameter must be a (name, value) tuple"))?;
                    let name: Option<String> = t.get_item(0)?.extract()?;
                    let value = convert::from_py(&t.get_item(1)?, pool)?;
                    c.parameters.push((name, value));
                }
            }
            c.merge = Merge {
                error: opt_bool(d, "merge_error")?,
                warning: opt_bool(d, "merge_warning")?,
                verbose: opt_bool(d, "merge_verbose")?,
                debug: opt_bool(d, "merge_debug")?,
                information: opt_bool(d, "merge_information")?,
            };
            commands.push(c);
        }
        spec.statements.push(commands);
    }
    Ok(spec)
}

/// Converts with the session key, exchanging it first when a SecureString needs it.
fn with_key<T>(
    py: Python<'_>,
    pool: &core::RunspacePool,
    mut f: impl FnMut() -> Result<T, ConvertError>,
) -> PyResult<T> {
    match f() {
        Err(ConvertError::NeedKey) => {
            let p = pool.clone();
            wait(py, async move { p.exchange_key().await })?;
            f().map_err(ConvertError::into_py)
        }
        other => other.map_err(ConvertError::into_py),
    }
}

#[pymethods]
impl RunspacePool {
    #[getter]
    fn id(&self) -> &str {
        self.inner.id()
    }

    #[getter]
    fn state(&self) -> String {
        format!("{:?}", self.inner.state())
    }

    #[getter]
    fn protocol_version(&self) -> Option<&'static str> {
        self.inner.protocol_version().map(|v| match v {
            psremote::psrp::ProtocolVersion::V2_1 => "2.1",
            psremote::psrp::ProtocolVersion::V2_2 => "2.2",
            psremote::psrp::ProtocolVersion::V2_3 => "2.3",
        })
    }

    #[getter]
    fn application_private_data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.inner.application_private_data() {
            Some(v) => convert::to_py(py, &v, &self.inner).map_err(ConvertError::into_py),
            None => Ok(py.None().into_bound(py)),
        }
    }

    #[pyo3(signature = (statements, has_input, add_to_history, invocation_info=true, is_nested=false))]
    fn start(
        &self,
        py: Python<'_>,
        statements: Bound<'_, PyList>,
        has_input: bool,
        add_to_history: bool,
        invocation_info: bool,
        is_nested: bool,
    ) -> PyResult<Pipeline> {
        let flags = SpecFlags { has_input, add_to_history, invocation_info, is_nested };
        let spec = with_key(py, &self.inner, || read_spec(&statements, flags, &self.inner))?;
        let pool = self.inner.clone();
        let p = wait(py, async move { pool.start(&spec).await })?;
        Ok(Pipeline::new(p, self.inner.clone()))
    }

    #[pyo3(signature = (future, statements, has_input, add_to_history, invocation_info=true, is_nested=false))]
    #[allow(clippy::too_many_arguments)]
    fn start_async(
        &self,
        py: Python<'_>,
        future: Bound<'_, PyAny>,
        statements: Bound<'_, PyList>,
        has_input: bool,
        add_to_history: bool,
        invocation_info: bool,
        is_nested: bool,
    ) -> PyResult<()> {
        let flags = SpecFlags { has_input, add_to_history, invocation_info, is_nested };
        let spec = with_key(py, &self.inner, || read_spec(&statements, flags, &self.inner))?;
        let pool = self.inner.clone();
        let keep = self.inner.clone();
        spawn(py, future, async move { pool.start(&spec).await }, move |py, p| {
            Ok(Py::new(py, Pipeline::new(p, keep))?.into_any())
        })
    }

    #[pyo3(signature = (timeout=None))]
    fn exchange_key(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let p = self.inner.clone();
        let timeout = key_timeout(timeout)?;
        wait(py, async move { p.exchange_key_within(timeout).await })
    }

    #[pyo3(signature = (future, timeout=None))]
    fn exchange_key_async(&self, py: Python<'_>, future: Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let p = self.inner.clone();
        let timeout = key_timeout(timeout)?;
        spawn(py, future, async move { p.exchange_key_within(timeout).await }, none)
    }

    fn command_metadata<'py>(
        &self,
        py: Python<'py>,
        names: Vec<String>,
        command_types: i32,
        namespaces: Vec<String>,
    ) -> PyResult<Bound<'py, PyList>> {
        let p = self.inner.clone();
        let query = psremote::psrp::CommandMetadataQuery { names, command_types, namespaces };
        let found = wait(py, async move { p.command_metadata(&query).await })?;
        metadata_list(py, &found, &self.inner)
    }

    fn command_metadata_async(
        &self,
        py: Python<'_>,
        future: Bound<'_, PyAny>,
        names: Vec<String>,
        command_types: i32,
        namespaces: Vec<String>,
    ) -> PyResult<()> {
        let p = self.inner.clone();
        let keys = self.inner.clone();
        let query = psremote::psrp::CommandMetadataQuery { names, command_types, namespaces };
        spawn(py, future, async move { p.command_metadata(&query).await }, move |py, found| {
            Ok(metadata_list(py, &found, &keys)?.into_any().unbind())
        })
    }

    fn set_max_runspaces(&self, py: Python<'_>, n: i32) -> PyResult<bool> {
        let p = self.inner.clone();
        wait(py, async move { p.set_max_runspaces(n).await })
    }

    fn set_min_runspaces(&self, py: Python<'_>, n: i32) -> PyResult<bool> {
        let p = self.inner.clone();
        wait(py, async move { p.set_min_runspaces(n).await })
    }

    fn available_runspaces(&self, py: Python<'_>) -> PyResult<i64> {
        let p = self.inner.clone();
        wait(py, async move { p.available_runspaces().await })
    }

    fn reset_runspace_state(&self, py: Python<'_>) -> PyResult<bool> {
        let p = self.inner.clone();
        wait(py, async move { p.reset_runspace_state().await })
    }

    /// Testing only (replaying recorded conversations): the session key exchange, not started
    /// yet, uses the RSA key of primes `p` and `q` (big-endian) and exponent `e` instead of a
    /// generated one. Never for real sessions: whoever knows the key reads their SecureStrings.
    fn _use_session_key_primes(&self, py: Python<'_>, p: &[u8], q: &[u8], e: u32) -> PyResult<()> {
        let to_py = |err| crate::errors::to_py_err(py, err);
        let pair = psremote::psrp::session_key::ClientKeyPair::from_primes(p, q, e).map_err(to_py)?;
        self.inner.use_key_pair(pair).map_err(to_py)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let p = self.inner.clone();
        wait(py, async move { p.close().await })
    }

    fn close_async(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        let p = self.inner.clone();
        spawn(py, future, async move { p.close().await }, none)
    }
}

/// How long a key exchange may take: `timeout` seconds, 60 by default.
fn key_timeout(timeout: Option<f64>) -> PyResult<std::time::Duration> {
    let secs = timeout.unwrap_or(60.0);
    if !(secs.is_finite() && secs > 0.0) {
        return Err(PyValueError::new_err(format!("timeout must be a positive number of seconds, not {secs}")));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn metadata_list<'py>(
    py: Python<'py>,
    found: &[psremote::clixml::Value],
    pool: &core::RunspacePool,
) -> PyResult<Bound<'py, PyList>> {
    let items = found
        .iter()
        .map(|v| convert::to_py(py, v, pool).map_err(ConvertError::into_py))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

fn server_config_dict<'py>(py: Python<'py>, c: &psremote::wsman::config::ServerConfig) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("max_envelope_size_kb", c.max_envelope_size_kb)?;
    d.set_item("max_timeout_ms", c.max_timeout_ms)?;
    d.set_item("max_batch_items", c.max_batch_items)?;
    d.set_item("shell_idle_timeout_ms", c.shell_idle_timeout_ms)?;
    d.set_item("max_shells_per_user", c.max_shells_per_user)?;
    d.set_item("max_memory_per_shell_mb", c.max_memory_per_shell_mb)?;
    d.set_item("max_concurrent_operations_per_user", c.max_concurrent_operations_per_user)?;
    d.set_item("entries", c.entries.clone())?;
    Ok(d)
}

/// A running pipeline.
#[derive(Debug)]
#[pyclass(frozen, module = "psremote._native")]
pub struct Pipeline {
    id: String,
    events: Arc<AsyncMutex<EventSource>>,
    control: core::PipelineControl,
    pool: core::RunspacePool,
}

impl Pipeline {
    pub(crate) fn new(p: core::Pipeline, pool: core::RunspacePool) -> Self {
        let (id, control) = (p.id().to_string(), p.control());
        Self { id, control, events: Arc::new(AsyncMutex::new(EventSource { pipeline: p, deferred: None })), pool }
    }
}

/// The core pipeline's events, and an error that came after events already taken for a batch:
/// the batch is handed over first, the error on the next call.
#[derive(Debug)]
struct EventSource {
    pipeline: core::Pipeline,
    deferred: Option<psremote::Error>,
}

fn has_secure_string(v: &psremote::clixml::Value) -> bool {
    use psremote::clixml::{Container, Value};
    match v {
        Value::SecureString(_) => true,
        Value::Object(o) => {
            o.value.as_ref().is_some_and(has_secure_string)
                || o.adapted.iter().chain(o.extended.iter()).any(|(_, v)| has_secure_string(v))
                || match &o.container {
                    Some(Container::Dictionary(e)) => {
                        e.iter().any(|(k, v)| has_secure_string(k) || has_secure_string(v))
                    }
                    Some(c) => c.items().is_some_and(|items| items.iter().any(has_secure_string)),
                    None => false,
                }
        }
        _ => false,
    }
}

fn event_has_secure_string(ev: &Event) -> bool {
    match ev {
        Event::Output { value, .. } => has_secure_string(value),
        Event::Information { record, .. } => has_secure_string(&record.message_data),
        Event::HostCall { call, .. } => call.parameters.iter().any(has_secure_string),
        _ => false,
    }
}

/// Like [`next_events`], then makes sure the session key is there when an event carries a
/// SecureString, so converting on a runtime thread never has to wait.
async fn next_events_keyed(
    events: Arc<AsyncMutex<EventSource>>,
    pool: core::RunspacePool,
    max: usize,
) -> psremote::Result<Vec<Event>> {
    let evs = next_events(events, max, None).await?;
    if !pool.has_session_key() && evs.iter().any(event_has_secure_string) {
        pool.exchange_key().await?;
    }
    Ok(evs)
}

/// Converts events on a runtime thread: the key was ensured beforehand, so no waiting here.
fn events_to_py_now(py: Python<'_>, events: &[Event], pool: &core::RunspacePool) -> PyResult<Py<PyAny>> {
    let _gc = GcPause::new(py, events.len() >= GC_PAUSE_EVENTS)?;
    let mut conv = ToPy::new(py, pool)?;
    let list = PyList::empty(py);
    for ev in events {
        if let Some(t) = event_to_py(py, ev, &mut conv).map_err(ConvertError::into_py)? {
            list.append(t)?;
        }
    }
    Ok(list.into_any().unbind())
}

/// A batch of at least this many events is converted with Python's garbage collector paused.
const GC_PAUSE_EVENTS: usize = 64;

/// How long a batch of events waits for the next one while more are likely on their way.
///
/// A Receive's reply turns into events one by one; handing each few to Python separately costs a
/// thread wake-up and a GIL round trip per batch (100,000 objects took 30,000 of them). Once a
/// batch holds [`LINGER_AFTER`] events, output is streaming, and the batch waits this long for
/// each next event; a short result (an object and the final state) never waits.
const BATCH_LINGER: Duration = Duration::from_millis(2);
const LINGER_AFTER: usize = 16;

/// Waits for at least one event (unless finished) and takes up to `max`: those that have arrived,
/// and in a stream of events (see [`BATCH_LINGER`]) those arriving soon after, until the final state.
async fn next_events(
    events: Arc<AsyncMutex<EventSource>>,
    max: usize,
    timeout: Option<Duration>,
) -> psremote::Result<Vec<Event>> {
    let mut source = events.lock().await;
    if let Some(e) = source.deferred.take() {
        return Err(e);
    }
    let p = &mut source.pipeline;
    let first = match timeout {
        Some(t) => tokio::time::timeout(t, p.next_event())
            .await
            .map_err(|_| psremote::Error::Timeout(format!("no pipeline event within {t:?}")))??,
        None => p.next_event().await?,
    };
    let Some(first) = first else { return Ok(Vec::new()) };
    let mut out = vec![first];
    let mut failed = None;
    while out.len() < max && failed.is_none() {
        let next = match p.try_next_event() {
            Some(ev) => Some(ev),
            None if out.len() < LINGER_AFTER || is_final(out.last()) => None,
            // Cancel-safe: the core pipeline's events come from a channel.
            None => match tokio::time::timeout(BATCH_LINGER, p.next_event()).await {
                Ok(ev) => ev.transpose(),
                Err(_) => None,
            },
        };
        match next {
            Some(Ok(ev)) => out.push(ev),
            Some(Err(e)) => failed = Some(e),
            None => break,
        }
    }
    source.deferred = failed;
    Ok(out)
}

fn is_final(ev: Option<&Event>) -> bool {
    matches!(ev, Some(Event::PipelineState { state, .. }) if state.is_finished())
}

pub(crate) fn record_dict<'py>(py: Python<'py>, r: &psremote::psrp::ErrorRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("message", &r.message)?;
    d.set_item("fully_qualified_error_id", &r.fully_qualified_error_id)?;
    d.set_item("category", r.category)?;
    d.set_item("activity", &r.activity)?;
    d.set_item("reason", &r.reason)?;
    d.set_item("target_name", &r.target_name)?;
    d.set_item("target_type", &r.target_type)?;
    d.set_item("category_message", &r.category_message)?;
    d.set_item("details_message", &r.details_message)?;
    d.set_item("script_stack_trace", &r.script_stack_trace)?;
    d.set_item("position_message", &r.position_message)?;
    Ok(d)
}

/// An information record as the dict `InformationRecord.from_native` takes.
pub(crate) fn information_dict<'py, 'v>(
    py: Python<'py>,
    record: &'v psremote::psrp::messages::InformationRecord,
    conv: &mut ToPy<'py, 'v, '_>,
) -> Result<Bound<'py, PyDict>, ConvertError> {
    let d = PyDict::new(py);
    d.set_item("message_data", conv.convert(&record.message_data)?)?;
    d.set_item("source", &record.source)?;
    let t = match &record.time_generated {
        Some(t) => convert::to_py(py, &psremote::clixml::Value::DateTime(t.clone()), &convert::NoKeys)?,
        None => py.None().into_bound(py),
    };
    d.set_item("time_generated", t)?;
    d.set_item("tags", record.tags.clone())?;
    Ok(d)
}

/// A progress record as the dict `ProgressRecord.from_native` takes.
pub(crate) fn progress_dict<'py>(
    py: Python<'py>,
    record: &psremote::psrp::messages::ProgressRecord,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("activity", &record.activity)?;
    d.set_item("activity_id", record.activity_id)?;
    d.set_item("status_description", &record.status_description)?;
    d.set_item("current_operation", &record.current_operation)?;
    d.set_item("parent_activity_id", record.parent_activity_id)?;
    d.set_item("percent_complete", record.percent_complete)?;
    d.set_item("seconds_remaining", record.seconds_remaining)?;
    d.set_item("completed", record.completed)?;
    Ok(d)
}

/// A final pipeline state (and its terminating error) as the "state" payload; None for the
/// intermediate states, which Python never sees.
pub(crate) fn state_dict<'py>(
    py: Python<'py>,
    state: PipelineState,
    error: Option<&psremote::psrp::ErrorRecord>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let name = match state {
        PipelineState::Completed => "Completed",
        PipelineState::Stopped => "Stopped",
        PipelineState::Failed => "Failed",
        _ => return Ok(None),
    };
    let d = PyDict::new(py);
    d.set_item("state", name)?;
    match error {
        Some(e) => d.set_item("error", record_dict(py, e)?)?,
        None => d.set_item("error", py.None())?,
    }
    Ok(Some(d))
}

fn event_to_py<'py, 'v>(
    py: Python<'py>,
    ev: &'v Event,
    conv: &mut ToPy<'py, 'v, '_>,
) -> Result<Option<Bound<'py, PyAny>>, ConvertError> {
    let (kind, payload): (&str, Bound<'py, PyAny>) = match ev {
        Event::Output { value, .. } => ("output", conv.convert(value)?),
        Event::Error { record, .. } => ("error", record_dict(py, record)?.into_any()),
        Event::Warning { record, .. } => ("warning", record.message.clone().into_pyobject(py)?.into_any()),
        Event::Verbose { record, .. } => ("verbose", record.message.clone().into_pyobject(py)?.into_any()),
        Event::Debug { record, .. } => ("debug", record.message.clone().into_pyobject(py)?.into_any()),
        Event::Information { record, .. } => ("information", information_dict(py, record, conv)?.into_any()),
        Event::Progress { record, .. } => ("progress", progress_dict(py, record)?.into_any()),
        Event::HostCall { call, .. } => {
            let d = PyDict::new(py);
            d.set_item("method", call.method.name())?;
            let params = PyList::empty(py);
            for p in &call.parameters {
                params.append(conv.convert(p)?)?;
            }
            d.set_item("parameters", params)?;
            ("host", d.into_any())
        }
        Event::PipelineState { state, error, .. } => match state_dict(py, *state, error.as_ref())? {
            Some(d) => ("state", d.into_any()),
            // Intermediate states (Running, Stopping) are not reported to Python.
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok(Some(PyTuple::new(py, [kind.into_pyobject(py)?.into_any(), payload])?.into_any()))
}

fn events_to_py(py: Python<'_>, events: &[Event], pool: &core::RunspacePool) -> PyResult<Py<PyAny>> {
    let _gc = GcPause::new(py, events.len() >= GC_PAUSE_EVENTS)?;
    let mut conv = ToPy::new(py, pool)?;
    let list = PyList::empty(py);
    for ev in events {
        if let Some(t) = with_key(py, pool, || event_to_py(py, ev, &mut conv))? {
            list.append(t)?;
        }
    }
    Ok(list.into_any().unbind())
}

#[pymethods]
impl Pipeline {
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    #[pyo3(signature = (timeout=None))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let events = self.events.clone();
        let t = timeout.map(Duration::from_secs_f64);
        loop {
            let evs = wait(py, next_events(events.clone(), 1, t))?;
            let Some(ev) = evs.first() else { return Ok(py.None()) };
            if let Some(t) = with_key(py, &self.pool, || event_to_py(py, ev, &mut ToPy::new(py, &self.pool)?))? {
                return Ok(t.unbind());
            }
        }
    }

    fn next_event_async(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        let events = self.events.clone();
        let pool = self.pool.clone();
        spawn(py, future, next_events_keyed(events, pool.clone(), 1), move |py, evs| {
            let list = events_to_py_now(py, &evs, &pool)?;
            let list = list.bind(py).cast::<PyList>().map_err(|e| PyValueError::new_err(e.to_string()))?.clone();
            Ok(if list.is_empty() { py.None() } else { list.get_item(0)?.unbind() })
        })
    }

    #[pyo3(signature = (max_events, timeout=None))]
    fn next_events(&self, py: Python<'_>, max_events: usize, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let t = deadline("timeout", timeout)?;
        let evs = wait(py, next_events(self.events.clone(), max_events.max(1), t))?;
        events_to_py(py, &evs, &self.pool)
    }

    fn next_events_async(&self, py: Python<'_>, future: Bound<'_, PyAny>, max_events: usize) -> PyResult<()> {
        let pool = self.pool.clone();
        spawn(py, future, next_events_keyed(self.events.clone(), pool.clone(), max_events.max(1)), move |py, evs| {
            events_to_py_now(py, &evs, &pool)
        })
    }

    fn send_input(&self, py: Python<'_>, values: Bound<'_, PyList>) -> PyResult<()> {
        let vals = with_key(py, &self.pool, || values.iter().map(|v| convert::from_py(&v, &self.pool)).collect())?;
        let c = self.control.clone();
        wait(py, async move { c.send_input(vals).await })
    }

    fn send_input_async(&self, py: Python<'_>, future: Bound<'_, PyAny>, values: Bound<'_, PyList>) -> PyResult<()> {
        let vals: Vec<_> =
            with_key(py, &self.pool, || values.iter().map(|v| convert::from_py(&v, &self.pool)).collect())?;
        let c = self.control.clone();
        spawn(py, future, async move { c.send_input(vals).await }, none)
    }

    fn end_input(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.control.clone();
        wait(py, async move { c.end_input().await })
    }

    fn end_input_async(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        let c = self.control.clone();
        spawn(py, future, async move { c.end_input().await }, none)
    }

    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.control.clone();
        wait(py, async move { c.stop().await })
    }

    fn stop_async(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        let c = self.control.clone();
        spawn(py, future, async move { c.stop().await }, none)
    }
}
