//! A Python object as the pool's PowerShell host: `host.call(method_name, method_id, params)`.

use psremote::client::Host;
use psremote::psrp::{HostCall, HostDefaults, HostResponse};
use pyo3::prelude::*;

use crate::convert::{self, NoKeys};
use crate::shutdown;

/// Forwards host calls to a Python object. Runs on a blocking worker thread; takes the GIL (not
/// once the interpreter is exiting: then a call is answered with an error).
pub struct PyHost(pub Py<PyAny>);

impl Host for PyHost {
    fn call(&self, call: &HostCall) -> HostResponse {
        let answered = shutdown::attach(|py| match answer(py, &self.0, call) {
            Ok(r) => r,
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyNotImplementedError>(py) => HostResponse::NotImplemented,
            Err(e) => HostResponse::Error(e.value(py).to_string()),
        });
        answered.unwrap_or_else(|_| HostResponse::Error("the Python interpreter is exiting".into()))
    }

    fn defaults(&self) -> Option<HostDefaults> {
        shutdown::attach(|py| match read_defaults(py, &self.0) {
            Ok(d) => d,
            Err(e) => {
                // A host whose defaults cannot be read is offered without a raw UI.
                tracing::warn!(error = %e.value(py), "the host's host_defaults() failed; no raw UI is offered");
                None
            }
        })
        .unwrap_or(None)
    }
}

/// `host.host_defaults()` (absent on duck-typed hosts, or `None`: no raw UI).
fn read_defaults(py: Python<'_>, host: &Py<PyAny>) -> PyResult<Option<HostDefaults>> {
    let host = host.bind(py);
    if !host.hasattr("host_defaults")? {
        return Ok(None);
    }
    let d = host.call_method0("host_defaults")?;
    if d.is_none() {
        return Ok(None);
    }
    let base = HostDefaults::default();
    let get = |key: &str| d.get_item(key);
    Ok(Some(HostDefaults {
        foreground_color: get("foreground_color")?.extract()?,
        background_color: get("background_color")?.extract()?,
        cursor_position: get("cursor_position")?.extract()?,
        window_position: get("window_position")?.extract()?,
        cursor_size: get("cursor_size")?.extract()?,
        buffer_size: get("buffer_size")?.extract()?,
        window_size: get("window_size")?.extract()?,
        max_window_size: get("max_window_size")?.extract()?,
        max_physical_window_size: get("max_physical_window_size")?.extract()?,
        window_title: get("window_title")?.extract().unwrap_or(base.window_title),
    }))
}

fn answer(py: Python<'_>, host: &Py<PyAny>, call: &HostCall) -> PyResult<HostResponse> {
    let mut params = Vec::with_capacity(call.parameters.len());
    for p in &call.parameters {
        params.push(convert::to_py(py, p, &NoKeys).map_err(convert::ConvertError::into_py)?);
    }
    let result = host.bind(py).call_method1("call", (call.method.name(), call.method.id(), params))?;
    let values = py.import("psremote.values")?;
    if result.is_instance(&values.getattr("SecureString")?)? {
        let plain: String = result.call_method0("get_value")?.extract()?;
        return Ok(HostResponse::SecureString(plain.into()));
    }
    if result.is_instance(&values.getattr("PSCredential")?)? {
        let username: String = result.getattr("username")?.extract()?;
        let password = result.getattr("password")?;
        let plain: String = if password.is_none() {
            String::new()
        } else if password.is_instance(&values.getattr("SecureString")?)? {
            password.call_method0("get_value")?.extract()?
        } else {
            password.extract()?
        };
        return Ok(HostResponse::Credential { username, password: plain.into() });
    }
    Ok(HostResponse::Value(convert::from_py(&result, &NoKeys).map_err(convert::ConvertError::into_py)?))
}
