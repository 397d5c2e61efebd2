//! Core errors become the exception classes of `psremote.exceptions`, in one exhaustive match.

use psremote::{Error, ErrorKind};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The `psremote.exceptions` class for each kind of core error.
pub fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidConfig => "ConfigurationError",
        ErrorKind::Authentication => "AuthenticationError",
        ErrorKind::Connect => "ConnectError",
        ErrorKind::Transport => "TransportError",
        ErrorKind::Fault => "WSManFault",
        ErrorKind::Protocol => "ProtocolError",
        ErrorKind::Timeout => "OperationTimeoutError",
        ErrorKind::Closed => "ClosedError",
        ErrorKind::Tls => "TLSError",
        ErrorKind::Policy => "SecurityPolicyError",
    }
}

/// Builds the Python exception for a core error, with its data as attributes.
pub fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
    match build(py, &e) {
        Ok(err) => err,
        Err(import_failed) => {
            PyRuntimeError::new_err(format!("{e} (and psremote.exceptions is unavailable: {import_failed})"))
        }
    }
}

fn build(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let module = py.import("psremote.exceptions")?;
    let class = module.getattr(class_name(e.kind()))?;
    let exc = class.call1((e.to_string(),))?;
    match e {
        Error::Authentication { mechanism, .. } => exc.setattr("mechanism", *mechanism)?,
        Error::Connect { address, .. } => exc.setattr("address", address)?,
        Error::Tls { endpoint, .. } => exc.setattr("address", endpoint)?,
        Error::Transport { status, .. } => exc.setattr("status", *status)?,
        Error::Fault(f) => {
            exc.setattr("code", f.code)?;
            exc.setattr("machine", f.machine.clone())?;
            exc.setattr("message", f.message.clone())?;
            exc.setattr("subcode", f.subcode.clone())?;
        }
        _ => {}
    }
    Ok(PyErr::from_value(exc))
}
