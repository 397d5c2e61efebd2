//! WS-Management (MS-WSMV) as used by WinRM: envelopes, faults and the WinRS shell operations.
//!
//! Sans-IO: functions here turn requests into bytes and bytes into typed replies. Nothing here
//! opens a socket or reads a clock.
//!
//! Reference: [MS-WSMV](https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-wsmv/).

pub mod config;
mod envelope;
mod fault;
pub mod shells;
pub mod winrs;
pub mod xml;

pub use envelope::{OptionEntry, Reply, RequestHeader, parse_reply};
pub use fault::{WsmanFault, code};

/// XML namespace URIs (MS-WSMV 2.2.1).
pub mod ns {
    /// SOAP 1.2 envelope.
    pub const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
    /// WS-Addressing.
    pub const ADDRESSING: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
    /// DMTF WS-Management.
    pub const WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
    /// Microsoft WS-Management extensions.
    pub const WSMV: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd";
    /// Windows remote shell.
    pub const SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
    /// WS-Transfer.
    pub const TRANSFER: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer";
    /// WS-Management fault details.
    pub const FAULT: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault";
}

/// Action URIs (MS-WSMV 3.1.4).
pub mod action {
    /// WS-Transfer Create.
    pub const CREATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create";
    /// WS-Transfer Delete.
    pub const DELETE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete";
    /// WinRS Command.
    pub const COMMAND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
    /// WinRS Send.
    pub const SEND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send";
    /// WinRS Receive.
    pub const RECEIVE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive";
    /// WinRS Signal.
    pub const SIGNAL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal";
    /// WinRS Disconnect (MS-WSMV 3.1.4.16).
    pub const DISCONNECT: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Disconnect";
    /// WinRS Reconnect (MS-WSMV 3.1.4.17).
    pub const RECONNECT: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Reconnect";
    /// WinRS Connect (MS-WSMV 3.1.4.15).
    pub const CONNECT: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Connect";
    /// WS-Transfer Get.
    pub const GET: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get";
    /// WS-Enumeration Enumerate.
    pub const ENUMERATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate";
    /// WS-Enumeration Pull.
    pub const PULL: &str = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull";
}

/// Resource URI of the text cmd shell.
pub const CMD_SHELL_URI: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";
