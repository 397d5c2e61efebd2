//! psremote: a PowerShell Remoting client core.
//!
//! The crate has two tiers (see `ARCHITECTURE.md`):
//! - the sans-IO protocol layer, always built: [`wsman`] (SOAP envelopes, faults, WinRS
//!   operations) and [`encryption`] (WinRM message-encryption framing);
//! - the client layer behind the default-on `client` feature: [`auth`] (sspi security contexts),
//!   [`transport`] (tokio + hyper HTTP/1.1 connections with per-connection authentication) and
//!   [`client`] (the public async API).

pub mod clixml;
pub mod encryption;
mod error;
mod file_error;
#[doc(hidden)]
pub mod fuzzing;
mod host_key_error;
pub mod proxy;
pub mod psrp;
pub mod text;
pub mod wsman;

#[cfg(feature = "client")]
pub mod auth;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
pub mod transport;

pub use error::{Error, ErrorKind, Result};
pub use file_error::{FileError, FileErrorKind, FileSide};
pub use host_key_error::{HostKeyError, HostKeyProblem, RecordedHostKey};
