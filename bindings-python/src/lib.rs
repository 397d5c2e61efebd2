//! The native module `psremote._native`: translates the core's API into Python. No protocol
//! decision lives here; see `ARCHITECTURE.md`.

mod client;
mod cmd;
mod convert;
mod errors;
mod files;
mod fleet;
mod host;
mod logging;
mod runtime;
mod sessions;
mod shutdown;

use pyo3::prelude::*;

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<client::Client>()?;
    m.add_class::<client::RunspacePool>()?;
    m.add_class::<client::Pipeline>()?;
    m.add_class::<cmd::CmdShell>()?;
    m.add_class::<cmd::CmdProcess>()?;
    m.add_function(wrap_pyfunction!(runtime::_complete, m)?)?;
    m.add_function(wrap_pyfunction!(logging::set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(convert::clixml_loads, m)?)?;
    sessions::register(m)?;
    files::register(m)?;
    fleet::register(m)?;
    shutdown::register(m)?;
    Ok(())
}
