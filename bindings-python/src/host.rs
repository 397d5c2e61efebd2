//! A Python object as the pool's PowerShell host: `host.call(method_name, method_id, params)`.

use psremote::client::Host;
use psremote::psrp::{HostCall, HostResponse};
use pyo3::prelude::*;

use crate::convert::{self, NoKeys};

/// Forwards host calls to a Python object. Runs on a blocking worker thread; takes the GIL.
pub struct PyHost(pub Py<PyAny>);

impl Host for PyHost {
    fn call(&self, call: &HostCall) -> HostResponse {
        Python::attach(|py| match answer(py, &self.0, call) {
            Ok(r) => r,
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyNotImplementedError>(py) => HostResponse::NotImplemented,
            Err(e) => HostResponse::Error(e.value(py).to_string()),
        })
    }
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
