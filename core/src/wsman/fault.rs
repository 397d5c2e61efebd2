//! SOAP/WS-Management faults (MS-WSMV 2.2.4.43, PROTOCOL.md A.9).

use super::ns;
use super::xml::Element;

/// Fault codes a client acts on.
pub mod code {
    /// A Receive found no output within the OperationTimeout: poll again.
    pub const OPERATION_TIMEOUT: u32 = 0x8033_8029;
    /// The shell or command id is unknown (for example the shell is already gone).
    pub const INVALID_SELECTORS: u32 = 0x8033_805B;
    /// The shell is disconnected (ERROR_WINRS_SHELL_DISCONNECTED): what a waiting Receive gets
    /// when its shell is disconnected, and any request but Disconnect, Reconnect, Connect,
    /// Delete and Get on such a shell.
    pub const SHELL_DISCONNECTED: u32 = 0x8033_81C4;
}

/// A WS-Management fault returned by the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct WsmanFault {
    /// `f:WSManFault/@Code`, the Windows error code, when present.
    pub code: Option<u32>,
    /// `s:Subcode/s:Value` (for example `w:TimedOut`), with its prefix.
    pub subcode: Option<String>,
    /// `f:WSManFault/@Machine`.
    pub machine: Option<String>,
    /// The most specific message: `f:Message`, else the provider fault, else `s:Reason/s:Text`.
    pub message: String,
}

impl WsmanFault {
    /// Reads a `s:Fault` element.
    pub fn from_element(fault: &Element) -> Self {
        let subcode = fault
            .path(&[(ns::SOAP, "Code"), (ns::SOAP, "Subcode"), (ns::SOAP, "Value")])
            .map(|e| e.text.trim().to_owned());
        let reason = fault
            .path(&[(ns::SOAP, "Reason"), (ns::SOAP, "Text")])
            .map(|e| e.text.trim().to_owned())
            .unwrap_or_default();
        let detail = fault.path(&[(ns::SOAP, "Detail"), (ns::FAULT, "WSManFault")]);
        let code = detail.and_then(|d| d.attr("Code")).and_then(|c| c.trim().parse::<u32>().ok());
        let machine = detail.and_then(|d| d.attr("Machine")).map(str::to_owned);
        let message = detail
            .and_then(|d| d.child(ns::FAULT, "Message"))
            .map(|m| collapse(&m.deep_text()))
            .filter(|m| !m.is_empty())
            .unwrap_or(reason);
        Self { code, subcode, machine, message: bounded(message) }
    }

    /// Whether this is the Receive OperationTimeout fault, which means "poll again".
    pub fn is_operation_timeout(&self) -> bool {
        self.code == Some(code::OPERATION_TIMEOUT)
            || (self.code.is_none() && self.subcode.as_deref().is_some_and(|s| s.ends_with(":TimedOut")))
    }

    fn describe(&self) -> String {
        let mut s = String::from("WS-Management fault");
        if let Some(c) = self.code {
            s.push_str(&format!(" {c:#010x}"));
        }
        // The machine name and the message are the server's text: shown, never obeyed.
        if let Some(m) = &self.machine {
            s.push_str(&format!(" from {}", crate::text::printable(m)));
        }
        if !self.message.is_empty() {
            s.push_str(": ");
            s.push_str(&crate::text::printable(&self.message));
        }
        s
    }
}

/// The most of a fault's message kept, in bytes: enough for any real WinRM message, while a
/// hostile server's megabytes of text are not carried around in every error.
pub const MAX_FAULT_MESSAGE: usize = 64 * 1024;

/// `message` cut to [`MAX_FAULT_MESSAGE`] bytes (at a character boundary), saying that it was.
fn bounded(mut message: String) -> String {
    if message.len() <= MAX_FAULT_MESSAGE {
        return message;
    }
    let total = message.len();
    let mut end = MAX_FAULT_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(&format!(" [message cut: {total} bytes, the first {end} kept]"));
    message
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsman::xml;

    #[test]
    fn reads_the_recorded_operation_timeout() {
        let doc = br#"<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" xmlns:e="http://schemas.xmlsoap.org/ws/2004/08/eventing" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"><s:Header><a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action></s:Header><s:Body><s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  </s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858793" Machine="192.168.56.11"><f:Message>The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  </f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>"#;
        let root = xml::parse(doc).unwrap();
        let f = root.path(&[(ns::SOAP, "Body"), (ns::SOAP, "Fault")]).unwrap();
        let fault = WsmanFault::from_element(f);
        assert!(fault.is_operation_timeout());
        assert_eq!(fault.code, Some(2150858793));
        assert_eq!(fault.machine.as_deref(), Some("192.168.56.11"));
        assert_eq!(fault.subcode.as_deref(), Some("w:TimedOut"));
        assert!(fault.to_string().contains("0x80338029"));
    }

    #[test]
    fn a_huge_message_is_cut_and_says_so() {
        // 'é' is two bytes: the cut must land on a character boundary.
        let text = "é".repeat(100_000);
        let doc = format!(
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault><s:Code><s:Value>s:Receiver</s:Value></s:Code><s:Reason><s:Text>short</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="5"><f:Message>x{text}</f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>"#
        );
        let root = xml::parse(doc.as_bytes()).unwrap();
        let f = root.path(&[(ns::SOAP, "Body"), (ns::SOAP, "Fault")]).unwrap();
        let fault = WsmanFault::from_element(f);
        assert!(fault.message.len() <= MAX_FAULT_MESSAGE + 100, "{} bytes kept", fault.message.len());
        assert!(fault.message.starts_with("xéé"));
        assert!(
            fault.message.ends_with("[message cut: 200001 bytes, the first 65535 kept]"),
            "{}",
            &fault.message[65000..]
        );
        let short = bounded("short".into());
        assert_eq!(short, "short");
    }
}
