//! SOAP request envelopes and reply headers (MS-WSMV 2.2.4, PROTOCOL.md A.3).

use std::fmt::Write as _;
use std::time::Duration;

use super::fault::WsmanFault;
use super::ns;
use super::xml::{self, Element, escape};
use crate::error::{Error, Result};

/// One `wsman:Option` of an `OptionSet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionEntry {
    /// Option name (compared ordinally by the server).
    pub name: String,
    /// Option value.
    pub value: String,
    /// Whether the server must fail when it does not understand the option.
    pub must_comply: bool,
}

impl OptionEntry {
    /// An option the server may ignore.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self { name: name.into(), value: value.into(), must_comply: false }
    }
}

/// The header fields of one request. The caller supplies the message id, so this stays
/// deterministic and free of randomness.
#[derive(Debug, Clone)]
pub struct RequestHeader<'a> {
    /// `wsa:Action`.
    pub action: &'a str,
    /// `wsman:ResourceURI`.
    pub resource_uri: &'a str,
    /// `wsa:To`: the endpoint URL.
    pub to: &'a str,
    /// `wsa:MessageID` without the `uuid:` prefix.
    pub message_id: uuid::Uuid,
    /// `wsmv:SessionId` without the `uuid:` prefix.
    pub session_id: uuid::Uuid,
    /// `wsman:MaxEnvelopeSize` in bytes.
    pub max_envelope_size: u32,
    /// `wsman:OperationTimeout`.
    pub operation_timeout: Duration,
    /// `xml:lang` of `wsman:Locale`.
    pub locale: &'a str,
    /// `xml:lang` of `wsmv:DataLocale`.
    pub data_locale: &'a str,
    /// `ShellId` selector, for operations on an existing shell.
    pub shell_id: Option<&'a str>,
    /// `wsman:OptionSet` entries.
    pub options: &'a [OptionEntry],
}

/// Formats a duration as xs:duration seconds with millisecond precision (`PT20.000S`).
pub fn format_duration(d: Duration) -> String {
    format!("PT{}.{:03}S", d.as_secs(), d.subsec_millis())
}

impl RequestHeader<'_> {
    /// Builds the whole envelope around `body` (the children of `s:Body`, already XML).
    pub fn envelope(&self, body: &str) -> String {
        self.envelope_with(body.len(), |s| s.push_str(body))
    }

    /// Builds the whole envelope, `write_body` writing the children of `s:Body` straight into
    /// it (a Send's base64, say, without a copy of the body made first); `body_len` is what it
    /// will write, about, for the allocation.
    pub fn envelope_with(&self, body_len: usize, write_body: impl FnOnce(&mut String)) -> String {
        let mut s = String::with_capacity(1400 + body_len);
        s.push_str(concat!(
            "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"",
            " xmlns:wsa=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"",
            " xmlns:wsman=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\"",
            " xmlns:wsmv=\"http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd\"",
            " xmlns:rsp=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell\">",
            "<s:Header>"
        ));
        // INVARIANT: write! into a String cannot fail.
        let _ = write!(
            s,
            "<wsa:Action s:mustUnderstand=\"true\">{}</wsa:Action>\
             <wsmv:DataLocale s:mustUnderstand=\"false\" xml:lang=\"{}\"/>\
             <wsman:Locale s:mustUnderstand=\"false\" xml:lang=\"{}\"/>\
             <wsman:MaxEnvelopeSize s:mustUnderstand=\"true\">{}</wsman:MaxEnvelopeSize>\
             <wsa:MessageID>uuid:{}</wsa:MessageID>\
             <wsman:OperationTimeout>{}</wsman:OperationTimeout>\
             <wsa:ReplyTo><wsa:Address s:mustUnderstand=\"true\">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:Address></wsa:ReplyTo>\
             <wsman:ResourceURI s:mustUnderstand=\"true\">{}</wsman:ResourceURI>\
             <wsmv:SessionId s:mustUnderstand=\"false\">uuid:{}</wsmv:SessionId>\
             <wsa:To>{}</wsa:To>",
            escape(self.action),
            escape(self.data_locale),
            escape(self.locale),
            self.max_envelope_size,
            self.message_id.as_hyphenated().encode_upper(&mut uuid::Uuid::encode_buffer()),
            format_duration(self.operation_timeout),
            escape(self.resource_uri),
            self.session_id.as_hyphenated().encode_upper(&mut uuid::Uuid::encode_buffer()),
            escape(self.to),
        );
        if !self.options.is_empty() {
            s.push_str("<wsman:OptionSet s:mustUnderstand=\"true\">");
            for o in self.options {
                let mc = if o.must_comply { " MustComply=\"true\"" } else { "" };
                let _ = write!(s, "<wsman:Option Name=\"{}\"{mc}>{}</wsman:Option>", escape(&o.name), escape(&o.value));
            }
            s.push_str("</wsman:OptionSet>");
        }
        if let Some(id) = self.shell_id {
            let _ = write!(
                s,
                "<wsman:SelectorSet><wsman:Selector Name=\"ShellId\">{}</wsman:Selector></wsman:SelectorSet>",
                escape(id)
            );
        }
        s.push_str("</s:Header><s:Body>");
        let start = s.len();
        write_body(&mut s);
        if s.len() == start {
            s.truncate(start - "<s:Body>".len());
            s.push_str("<s:Body/>");
        } else {
            s.push_str("</s:Body>");
        }
        s.push_str("</s:Envelope>");
        s
    }
}

/// A parsed reply envelope that is not a fault.
#[derive(Debug, Clone)]
pub struct Reply {
    /// `wsa:Action` of the reply.
    pub action: String,
    /// The `s:Body` element.
    pub body: Element,
}

/// Parses a reply: checks `RelatesTo` against the request's message id and turns a SOAP fault
/// into [`Error::Fault`].
pub fn parse_reply(bytes: &[u8], message_id: uuid::Uuid) -> Result<Reply> {
    let root = xml::parse(bytes)?;
    if !root.is(ns::SOAP, "Envelope") {
        return Err(Error::protocol(format!("expected a SOAP envelope, got <{}>", root.name)));
    }
    let header = root.child(ns::SOAP, "Header");
    let body = root.child(ns::SOAP, "Body").ok_or_else(|| Error::protocol("SOAP envelope without a body"))?;
    if let Some(fault) = body.child(ns::SOAP, "Fault") {
        return Err(Error::Fault(WsmanFault::from_element(fault)));
    }
    let header = header.ok_or_else(|| Error::protocol("SOAP envelope without a header"))?;
    let relates = header
        .child(ns::ADDRESSING, "RelatesTo")
        .map(|e| e.text.trim())
        .ok_or_else(|| Error::protocol("reply without wsa:RelatesTo"))?;
    let expected = relates.strip_prefix("uuid:").and_then(|u| uuid::Uuid::parse_str(u).ok());
    if expected != Some(message_id) {
        return Err(Error::protocol(format!(
            "reply relates to {relates}, expected uuid:{}",
            message_id.as_hyphenated().encode_upper(&mut uuid::Uuid::encode_buffer())
        )));
    }
    let action = header.child(ns::ADDRESSING, "Action").map(|e| e.text.trim().to_owned()).unwrap_or_default();
    let body = body.clone();
    Ok(Reply { action, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(options: &'a [OptionEntry]) -> RequestHeader<'a> {
        RequestHeader {
            action: crate::wsman::action::CREATE,
            resource_uri: crate::wsman::CMD_SHELL_URI,
            to: "http://127.0.0.1:5985/wsman",
            message_id: uuid::Uuid::from_u128(0xFC40E3CD_53E9_4315_B486_6D538B25D1F5),
            session_id: uuid::Uuid::from_u128(1),
            max_envelope_size: 153600,
            operation_timeout: Duration::from_secs(20),
            locale: "en-US",
            data_locale: "en-US",
            shell_id: Some("4283CBDC-3706-415B-88BD-B385F3E51A53"),
            options,
        }
    }

    #[test]
    fn envelope_has_every_required_header() {
        let opts = [OptionEntry::new("WINRS_NOPROFILE", "FALSE")];
        let env = header(&opts).envelope("<rsp:Shell/>");
        let root = xml::parse(env.as_bytes()).unwrap();
        let h = root.child(ns::SOAP, "Header").unwrap();
        for (n, name) in [
            (ns::ADDRESSING, "Action"),
            (ns::WSMV, "DataLocale"),
            (ns::WSMAN, "Locale"),
            (ns::WSMAN, "MaxEnvelopeSize"),
            (ns::ADDRESSING, "MessageID"),
            (ns::WSMAN, "OperationTimeout"),
            (ns::ADDRESSING, "ReplyTo"),
            (ns::WSMAN, "ResourceURI"),
            (ns::WSMV, "SessionId"),
            (ns::ADDRESSING, "To"),
            (ns::WSMAN, "OptionSet"),
            (ns::WSMAN, "SelectorSet"),
        ] {
            assert!(h.child(n, name).is_some(), "missing {name}");
        }
        assert_eq!(h.child(ns::WSMAN, "Locale").unwrap().attr("mustUnderstand"), Some("false"));
        assert_eq!(h.child(ns::WSMAN, "OperationTimeout").unwrap().text, "PT20.000S");
        assert_eq!(h.child(ns::ADDRESSING, "MessageID").unwrap().text, "uuid:FC40E3CD-53E9-4315-B486-6D538B25D1F5");
    }

    #[test]
    fn reply_must_relate_to_the_request() {
        let reply = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"><s:Header><a:Action>x</a:Action><a:RelatesTo>uuid:FC40E3CD-53E9-4315-B486-6D538B25D1F5</a:RelatesTo></s:Header><s:Body/></s:Envelope>"#;
        let id = uuid::Uuid::from_u128(0xFC40E3CD_53E9_4315_B486_6D538B25D1F5);
        assert_eq!(parse_reply(reply, id).unwrap().action, "x");
        let err = parse_reply(reply, uuid::Uuid::from_u128(7)).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Protocol);
    }
}
