//! Core errors become the exception classes of `psremote.exceptions`, in one exhaustive match.

use psremote::{Error, ErrorKind, FileErrorKind};
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
        ErrorKind::File => "FileTransferError",
        ErrorKind::Disconnected => "DisconnectedError",
        ErrorKind::NotFound => "NotFoundError",
        ErrorKind::OutputTooLarge => "OutputTooLargeError",
        ErrorKind::Proxy => "ProxyError",
    }
}

/// The `psremote.exceptions` class for each kind of file-transfer failure.
pub fn file_class_name(kind: FileErrorKind) -> &'static str {
    match kind {
        FileErrorKind::NotFound | FileErrorKind::ParentNotFound => "TransferFileNotFoundError",
        FileErrorKind::IsADirectory => "TransferIsADirectoryError",
        FileErrorKind::AccessDenied => "TransferPermissionError",
        FileErrorKind::DiskFull => "TransferDiskFullError",
        FileErrorKind::HashMismatch => "HashMismatchError",
        FileErrorKind::InUse | FileErrorKind::InvalidPath | FileErrorKind::Cancelled | FileErrorKind::Io => {
            "FileTransferError"
        }
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
    let name = match (e.file(), e.host_key()) {
        (Some(f), _) => file_class_name(f.kind),
        (None, Some(_)) => "HostKeyError",
        (None, None) => class_name(e.kind()),
    };
    let class = module.getattr(name)?;
    let exc = class.call1((e.to_string(),))?;
    match e {
        Error::Authentication { mechanism, .. } => exc.setattr("mechanism", *mechanism)?,
        Error::Connect { address, .. } => exc.setattr("address", address)?,
        Error::Tls { endpoint, .. } => exc.setattr("address", endpoint)?,
        Error::Transport { status, .. } => exc.setattr("status", *status)?,
        Error::ReplyTooLarge { size, limit, .. } => {
            exc.setattr("reply_size", *size)?;
            exc.setattr("reply_limit", *limit)?;
        }
        Error::File(f) => {
            exc.setattr("kind", f.kind.as_str())?;
            exc.setattr("side", f.side.as_str())?;
            exc.setattr("path", f.path.clone())?;
            exc.setattr("filename", f.path.clone())?;
            exc.setattr("expected_sha1", f.expected_sha1.clone())?;
            exc.setattr("actual_sha1", f.actual_sha1.clone())?;
            exc.setattr(
                "fully_qualified_error_id",
                f.record.as_ref().and_then(|r| r.fully_qualified_error_id.clone()),
            )?;
        }
        Error::OutputTooLarge { limit } => exc.setattr("output_limit", *limit)?,
        Error::HostKey(h) => {
            exc.setattr("problem", h.problem.as_str())?;
            exc.setattr("host", h.host.clone())?;
            exc.setattr("algorithm", h.algorithm.clone())?;
            exc.setattr("fingerprint", h.fingerprint.clone())?;
            exc.setattr("known_hosts", h.known_hosts.clone())?;
            let recorded: Vec<String> = h.recorded.iter().map(|r| r.fingerprint.clone()).collect();
            exc.setattr("recorded_fingerprints", pyo3::types::PyTuple::new(py, recorded)?)?;
        }
        Error::Proxy { proxy, failure } => {
            exc.setattr("proxy", proxy)?;
            exc.setattr("reason", failure.name())?;
            exc.setattr("status", failure.status())?;
        }
        Error::Fault(f) | Error::NotFound { fault: f, .. } => {
            exc.setattr("code", f.code)?;
            exc.setattr("machine", f.machine.clone())?;
            exc.setattr("message", f.message.clone())?;
            exc.setattr("subcode", f.subcode.clone())?;
        }
        _ => {}
    }
    Ok(PyErr::from_value(exc))
}
