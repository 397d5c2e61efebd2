//! The PowerShell Remoting Protocol (MS-PSRP), sans-IO.
//!
//! Reference: [MS-PSRP](https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-psrp/).

pub mod fragment;
pub mod message;
pub mod session_key;
