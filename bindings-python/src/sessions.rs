//! Sessions that outlive the client, for `psremote._native`: disconnect, reconnect, is-alive,
//! listing the pools on the server, connecting to a disconnected one and attaching to a
//! pipeline by id. Module functions over the pool and client objects; translation only.

use std::sync::Arc;
use std::time::Duration;

use psremote::client::{self as core, BufferMode, PoolConfig, PoolInfo};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::client::{Client, Pipeline, RunspacePool, get};
use crate::host::PyHost;
use crate::runtime::{spawn, wait};

fn none(py: Python<'_>, _: ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

/// `"Block"` / `"Drop"` (any case) or None. The Python layer checked the type already.
pub(crate) fn buffer_mode(value: Option<&str>) -> PyResult<Option<BufferMode>> {
    match value {
        None => Ok(None),
        Some(v) => BufferMode::parse(v)
            .map(Some)
            .ok_or_else(|| PyValueError::new_err(format!("buffer_mode must be 'block' or 'drop', not {v:?}"))),
    }
}

/// Seconds as a duration; None stays None.
pub(crate) fn idle_timeout(value: Option<f64>) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) => match Duration::try_from_secs_f64(s) {
            Ok(d) if s > 0.0 => Ok(Some(d)),
            _ => Err(PyValueError::new_err(format!("idle_timeout must be a positive number of seconds, not {s}"))),
        },
    }
}

fn pool_info<'py>(py: Python<'py>, info: &PoolInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let s = &info.shell;
    d.set_item("id", &s.shell_id)?;
    d.set_item("configuration_name", &info.configuration_name)?;
    d.set_item("state", &s.state)?;
    d.set_item("pipelines", PyList::new(py, &info.pipelines)?)?;
    d.set_item("name", &s.name)?;
    d.set_item("resource_uri", &s.resource_uri)?;
    d.set_item("owner", &s.owner)?;
    d.set_item("client_ip", &s.client_ip)?;
    d.set_item("process_id", s.process_id)?;
    d.set_item("idle_timeout", s.idle_timeout.map(|t| t.as_secs_f64()))?;
    d.set_item("max_idle_timeout", s.max_idle_timeout.map(|t| t.as_secs_f64()))?;
    d.set_item("buffer_mode", s.buffer_mode.map(BufferMode::as_str))?;
    d.set_item("locale", &s.locale)?;
    d.set_item("data_locale", &s.data_locale)?;
    d.set_item("shell_run_time", &s.shell_run_time)?;
    d.set_item("shell_inactivity", &s.shell_inactivity)?;
    d.set_item("memory_used", &s.memory_used)?;
    d.set_item("child_processes", s.child_processes)?;
    d.set_item("profile_loaded", &s.profile_loaded)?;
    d.set_item("compression_mode", &s.compression_mode)?;
    d.set_item("encoding", &s.encoding)?;
    Ok(d)
}

fn pools_to_py(py: Python<'_>, pools: Vec<PoolInfo>) -> PyResult<Py<PyAny>> {
    let items = pools.iter().map(|p| pool_info(py, p)).collect::<PyResult<Vec<_>>>()?;
    Ok(PyList::new(py, items)?.into_any().unbind())
}

#[pyfunction]
pub fn pool_disconnect(py: Python<'_>, pool: &RunspacePool) -> PyResult<()> {
    let p = pool.inner.clone();
    wait(py, async move { p.disconnect().await })
}

#[pyfunction]
pub fn pool_disconnect_async(py: Python<'_>, pool: &RunspacePool, future: Bound<'_, PyAny>) -> PyResult<()> {
    let p = pool.inner.clone();
    spawn(py, future, async move { p.disconnect().await }, none)
}

#[pyfunction]
pub fn pool_reconnect(py: Python<'_>, pool: &RunspacePool) -> PyResult<()> {
    let p = pool.inner.clone();
    wait(py, async move { p.reconnect().await })
}

#[pyfunction]
pub fn pool_reconnect_async(py: Python<'_>, pool: &RunspacePool, future: Bound<'_, PyAny>) -> PyResult<()> {
    let p = pool.inner.clone();
    spawn(py, future, async move { p.reconnect().await }, none)
}

#[pyfunction]
pub fn pool_is_alive(py: Python<'_>, pool: &RunspacePool) -> PyResult<bool> {
    let p = pool.inner.clone();
    wait(py, async move { p.is_alive().await })
}

#[pyfunction]
pub fn pool_is_alive_async(py: Python<'_>, pool: &RunspacePool, future: Bound<'_, PyAny>) -> PyResult<()> {
    let p = pool.inner.clone();
    spawn(py, future, async move { p.is_alive().await }, |py, alive| {
        Ok(alive.into_pyobject(py)?.to_owned().into_any().unbind())
    })
}

#[pyfunction]
pub fn pool_attach_pipeline(py: Python<'_>, pool: &RunspacePool, command_id: String) -> PyResult<Pipeline> {
    let p = pool.inner.clone();
    let attached = wait(py, async move { p.attach_pipeline(&command_id).await })?;
    Ok(Pipeline::new(attached, pool.inner.clone()))
}

#[pyfunction]
pub fn pool_attach_pipeline_async(
    py: Python<'_>,
    pool: &RunspacePool,
    future: Bound<'_, PyAny>,
    command_id: String,
) -> PyResult<()> {
    let p = pool.inner.clone();
    let keep = pool.inner.clone();
    spawn(py, future, async move { p.attach_pipeline(&command_id).await }, move |py, attached| {
        Ok(Py::new(py, Pipeline::new(attached, keep))?.into_any())
    })
}

#[pyfunction]
pub fn client_list_pools(py: Python<'_>, client: &Client) -> PyResult<Py<PyAny>> {
    let (cell, config) = client.handle();
    let pools = wait(py, async move { get(cell, config).await?.list_pools().await })?;
    pools_to_py(py, pools)
}

#[pyfunction]
pub fn client_list_pools_async(py: Python<'_>, client: &Client, future: Bound<'_, PyAny>) -> PyResult<()> {
    let (cell, config) = client.handle();
    spawn(py, future, async move { get(cell, config).await?.list_pools().await }, pools_to_py)
}

fn connect_config(
    configuration_name: String,
    host: Option<Py<PyAny>>,
    idle_timeout_s: Option<f64>,
    buffer: Option<&str>,
) -> PyResult<PoolConfig> {
    Ok(PoolConfig {
        configuration_name,
        host: host.map(|h| Arc::new(PyHost(h)) as Arc<dyn core::Host>),
        idle_timeout: idle_timeout(idle_timeout_s)?,
        buffer_mode: buffer_mode(buffer)?,
        ..PoolConfig::default()
    })
}

#[pyfunction]
#[pyo3(signature = (client, shell_id, configuration_name, host=None, idle_timeout=None, buffer_mode=None))]
pub fn client_connect_pool(
    py: Python<'_>,
    client: &Client,
    shell_id: String,
    configuration_name: String,
    host: Option<Py<PyAny>>,
    idle_timeout: Option<f64>,
    buffer_mode: Option<&str>,
) -> PyResult<RunspacePool> {
    let pool = connect_config(configuration_name, host, idle_timeout, buffer_mode)?;
    let (cell, config) = client.handle();
    let inner = wait(py, async move { core::RunspacePool::connect(&get(cell, config).await?, &shell_id, pool).await })?;
    Ok(RunspacePool { inner })
}

#[pyfunction]
#[pyo3(signature = (client, future, shell_id, configuration_name, host=None, idle_timeout=None, buffer_mode=None))]
#[allow(clippy::too_many_arguments)]
pub fn client_connect_pool_async(
    py: Python<'_>,
    client: &Client,
    future: Bound<'_, PyAny>,
    shell_id: String,
    configuration_name: String,
    host: Option<Py<PyAny>>,
    idle_timeout: Option<f64>,
    buffer_mode: Option<&str>,
) -> PyResult<()> {
    let pool = connect_config(configuration_name, host, idle_timeout, buffer_mode)?;
    let (cell, config) = client.handle();
    let fut = async move { core::RunspacePool::connect(&get(cell, config).await?, &shell_id, pool).await };
    spawn(py, future, fut, |py, inner| Ok(Py::new(py, RunspacePool { inner })?.into_any()))
}

/// Registers the functions in the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pool_disconnect, m)?)?;
    m.add_function(wrap_pyfunction!(pool_disconnect_async, m)?)?;
    m.add_function(wrap_pyfunction!(pool_reconnect, m)?)?;
    m.add_function(wrap_pyfunction!(pool_reconnect_async, m)?)?;
    m.add_function(wrap_pyfunction!(pool_is_alive, m)?)?;
    m.add_function(wrap_pyfunction!(pool_is_alive_async, m)?)?;
    m.add_function(wrap_pyfunction!(pool_attach_pipeline, m)?)?;
    m.add_function(wrap_pyfunction!(pool_attach_pipeline_async, m)?)?;
    m.add_function(wrap_pyfunction!(client_list_pools, m)?)?;
    m.add_function(wrap_pyfunction!(client_list_pools_async, m)?)?;
    m.add_function(wrap_pyfunction!(client_connect_pool, m)?)?;
    m.add_function(wrap_pyfunction!(client_connect_pool_async, m)?)?;
    Ok(())
}
