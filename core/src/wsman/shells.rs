//! Shells that outlive their client (MS-WSMV 3.1.4.15–3.1.4.17, PROTOCOL.md A.8): the bodies of
//! Disconnect, Reconnect and Connect, Enumerate and Pull of shells and of a shell's commands,
//! and the shell description (`rsp:Shell`) that Enumerate and Transfer Get return.

use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::envelope::{Reply, format_duration};
use super::ns;
use super::xml::{Element, escape};
use crate::error::{Error, Result};

/// Resource URI for enumerating (and getting) shells.
pub const SHELL_RESOURCE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
/// Resource URI for enumerating the commands of one shell.
pub const COMMAND_RESOURCE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
/// WS-Enumeration namespace.
pub const ENUMERATION_NS: &str = "http://schemas.xmlsoap.org/ws/2004/09/enumeration";
/// The PowerShell namespace of `connectXml` / `connectResponseXml`.
pub const POWERSHELL_NS: &str = "http://schemas.microsoft.com/powershell";
/// Most items asked for per Enumerate or Pull (what pypsrp and PowerShell ask for).
const MAX_ELEMENTS: u32 = 32000;

/// What the server does with output produced while the shell is disconnected
/// (MS-WSMV 2.2.5.10 OutputBufferingModeEnumeration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufferMode {
    /// Stop the commands until a client receives again (Windows' default).
    Block,
    /// Keep running and discard the oldest output that does not fit.
    Drop,
}

impl BufferMode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BufferMode::Block => "Block",
            BufferMode::Drop => "Drop",
        }
    }

    /// Reads the wire spelling (case-insensitive).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            t if t.eq_ignore_ascii_case("block") => Some(BufferMode::Block),
            t if t.eq_ignore_ascii_case("drop") => Some(BufferMode::Drop),
            _ => None,
        }
    }
}

/// `rsp:Disconnect`, with the idle timeout after which the server deletes the disconnected
/// shell and the buffering mode for output produced meanwhile (both optional).
pub fn disconnect_body(idle_timeout: Option<Duration>, buffer_mode: Option<BufferMode>) -> String {
    if idle_timeout.is_none() && buffer_mode.is_none() {
        return "<rsp:Disconnect/>".into();
    }
    let mut s = String::from("<rsp:Disconnect>");
    if let Some(t) = idle_timeout {
        let _ = write!(s, "<rsp:IdleTimeOut>{}</rsp:IdleTimeOut>", format_duration(t));
    }
    if let Some(b) = buffer_mode {
        let _ = write!(s, "<rsp:BufferMode>{}</rsp:BufferMode>", b.as_str());
    }
    s.push_str("</rsp:Disconnect>");
    s
}

/// `rsp:Connect` of a new client to a disconnected PowerShell shell: `data` is the connectXml
/// (SESSION_CAPABILITY and CONNECT_RUNSPACEPOOL fragments).
pub fn connect_body(data: &[u8]) -> String {
    format!("<rsp:Connect><connectXml xmlns=\"{POWERSHELL_NS}\">{}</connectXml></rsp:Connect>", B64.encode(data))
}

/// `rsp:Connect` to one command of a shell this client connected to.
pub fn connect_command_body(command_id: &str) -> String {
    format!("<rsp:Connect CommandId=\"{}\"/>", escape(command_id))
}

/// The server's PSRP fragments in a ConnectResponse (`connectResponseXml`); empty when the
/// response carries none (the answer to a command-level Connect).
pub fn connect_response_data(reply: &Reply) -> Result<Vec<u8>> {
    let resp = reply
        .body
        .child(ns::SHELL, "ConnectResponse")
        .ok_or_else(|| Error::protocol("expected rsp:ConnectResponse"))?;
    match resp.child(POWERSHELL_NS, "connectResponseXml") {
        None => Ok(Vec::new()),
        Some(x) => {
            let text: String = x.text.split_ascii_whitespace().collect();
            B64.decode(text.as_bytes())
                .map_err(|e| Error::protocol(format!("invalid base64 in connectResponseXml: {e}")))
        }
    }
}

/// `wsen:Enumerate` with OptimizeEnumeration (the first items come in the response), optionally
/// filtered to one shell (for the commands of that shell).
pub fn enumerate_body(shell_filter: Option<&str>) -> String {
    let mut s = format!(
        "<wsen:Enumerate xmlns:wsen=\"{ENUMERATION_NS}\"><wsman:OptimizeEnumeration/><wsman:MaxElements>{MAX_ELEMENTS}</wsman:MaxElements>"
    );
    if let Some(id) = shell_filter {
        let _ = write!(
            s,
            "<wsman:Filter Dialect=\"http://schemas.dmtf.org/wbem/wsman/1/wsman/SelectorFilter\"><wsman:SelectorSet><wsman:Selector Name=\"ShellId\">{}</wsman:Selector></wsman:SelectorSet></wsman:Filter>",
            escape(id)
        );
    }
    s.push_str("</wsen:Enumerate>");
    s
}

/// `wsen:Pull` of the next items of an enumeration.
pub fn pull_body(context: &str) -> String {
    format!(
        "<wsen:Pull xmlns:wsen=\"{ENUMERATION_NS}\"><wsen:EnumerationContext>{}</wsen:EnumerationContext><wsen:MaxElements>{MAX_ELEMENTS}</wsen:MaxElements></wsen:Pull>",
        escape(context)
    )
}

/// One response of an enumeration: its items, and the context to Pull the rest with.
#[derive(Debug, Clone, Default)]
pub struct EnumerationPage {
    /// The `rsp:Shell` / `rsp:Command` elements, in order.
    pub items: Vec<Element>,
    /// The context for the next Pull; None once the server said EndOfSequence.
    pub next: Option<String>,
}

/// Reads an EnumerateResponse or a PullResponse.
pub fn parse_enumeration(reply: &Reply) -> Result<EnumerationPage> {
    let resp = reply
        .body
        .child(ENUMERATION_NS, "EnumerateResponse")
        .or_else(|| reply.body.child(ENUMERATION_NS, "PullResponse"))
        .ok_or_else(|| Error::protocol("expected wsen:EnumerateResponse or wsen:PullResponse"))?;
    // Optimized enumerations put the items in wsman:Items, Pull in wsen:Items.
    let items = resp.child(ns::WSMAN, "Items").or_else(|| resp.child(ENUMERATION_NS, "Items"));
    let end = resp.child(ns::WSMAN, "EndOfSequence").is_some() || resp.child(ENUMERATION_NS, "EndOfSequence").is_some();
    let context = resp.child(ENUMERATION_NS, "EnumerationContext").map(|c| c.text.trim().to_owned());
    let next = match (end, context) {
        (true, _) => None,
        (false, Some(c)) if !c.is_empty() => Some(c),
        (false, _) => return Err(Error::protocol("an enumeration that is not over has no context to pull with")),
    };
    Ok(EnumerationPage { items: items.map(|i| i.children.clone()).unwrap_or_default(), next })
}

/// A shell as the server describes it (`rsp:Shell` of Enumerate and Transfer Get,
/// MS-WSMV 2.2.4.37). Fields the server left out are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellInfo {
    /// ShellId (the runspace pool id for PowerShell shells).
    pub shell_id: String,
    /// The shell's name, when it was given one.
    pub name: Option<String>,
    /// Resource URI (`http://schemas.microsoft.com/powershell/<configuration>` for PowerShell).
    pub resource_uri: String,
    /// The account that owns it.
    pub owner: String,
    /// The address of the client that created or last connected it.
    pub client_ip: String,
    /// The server process hosting it.
    pub process_id: Option<u32>,
    /// `Connected` or `Disconnected`.
    pub state: String,
    /// Idle timeout.
    pub idle_timeout: Option<Duration>,
    /// Largest idle timeout the server allows.
    pub max_idle_timeout: Option<Duration>,
    /// Output buffering while disconnected.
    pub buffer_mode: Option<BufferMode>,
    /// Locale.
    pub locale: String,
    /// Data locale.
    pub data_locale: String,
    /// Input streams.
    pub input_streams: String,
    /// Output streams.
    pub output_streams: String,
    /// How long it has existed (xs:duration text, e.g. `P0DT0H0M9S`).
    pub shell_run_time: String,
    /// How long it has been idle (xs:duration text).
    pub shell_inactivity: String,
    /// Memory in use, as the server writes it (`46MB`).
    pub memory_used: String,
    /// Child processes.
    pub child_processes: Option<u32>,
    /// Whether the user profile was loaded.
    pub profile_loaded: String,
    /// Compression mode.
    pub compression_mode: String,
    /// Encoding.
    pub encoding: String,
}

impl ShellInfo {
    /// Reads one `rsp:Shell` element.
    pub fn from_element(shell: &Element) -> Result<Self> {
        let text = |name: &str| shell.child(ns::SHELL, name).map(|e| e.text.trim().to_owned()).unwrap_or_default();
        let shell_id = text("ShellId");
        if shell_id.is_empty() {
            return Err(Error::protocol("rsp:Shell without a ShellId"));
        }
        let number = |name: &str| text(name).parse::<u32>().ok();
        Ok(Self {
            shell_id,
            name: shell.child(ns::SHELL, "Name").map(|e| e.text.trim().to_owned()),
            resource_uri: text("ResourceUri"),
            owner: text("Owner"),
            client_ip: text("ClientIP"),
            process_id: number("ProcessId"),
            state: text("State"),
            idle_timeout: parse_duration(&text("IdleTimeOut")),
            max_idle_timeout: parse_duration(&text("MaxIdleTimeOut")),
            buffer_mode: BufferMode::parse(&text("BufferMode")),
            locale: text("Locale"),
            data_locale: text("DataLocale"),
            input_streams: text("InputStreams"),
            output_streams: text("OutputStreams"),
            shell_run_time: text("ShellRunTime"),
            shell_inactivity: text("ShellInactivity"),
            memory_used: text("MemoryUsed"),
            child_processes: number("ChildProcesses"),
            profile_loaded: text("ProfileLoaded"),
            compression_mode: text("CompressionMode"),
            encoding: text("Encoding"),
        })
    }

    /// Whether the shell is disconnected (a client may connect to it).
    pub fn is_disconnected(&self) -> bool {
        self.state.eq_ignore_ascii_case("Disconnected")
    }
}

/// The CommandIds among the items of a command enumeration (`rsp:Command/rsp:CommandId`).
pub fn command_ids(items: &[Element]) -> Vec<String> {
    items
        .iter()
        .filter(|i| i.is(ns::SHELL, "Command"))
        .filter_map(|i| i.child(ns::SHELL, "CommandId").map(|c| c.text.trim().to_owned()))
        .filter(|c| !c.is_empty())
        .collect()
}

/// The `rsp:Shell` of a Transfer GetResponse.
pub fn shell_from_get(reply: &Reply) -> Result<ShellInfo> {
    let shell = reply.body.child(ns::SHELL, "Shell").ok_or_else(|| Error::protocol("GetResponse without rsp:Shell"))?;
    ShellInfo::from_element(shell)
}

/// Reads an xs:duration of days, hours, minutes and seconds (`PT7200.000S`, `P0DT0H0M9S`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let rest = text.trim().strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut secs = 0f64;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
            } else {
                let (_, scale) = units.iter().find(|(u, _)| *u == c)?;
                secs += number.parse::<f64>().ok()? * scale;
                number.clear();
            }
        }
        number.is_empty().then_some(())
    };
    take(days, &[('D', 86400.0)])?;
    take(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    (secs.is_finite() && (0.0..1e12).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsman::parse_reply;

    // The Enumerate answer of the Windows recording test_psrp_disconnect_runspaces.yml (one
    // of its two shells), and its Get answer from test_psrp_is_alive_invalid_selectors.yml.
    const ENUMERATE: &str = r#"<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"><s:Header><a:Action>http://schemas.xmlsoap.org/ws/2004/09/enumeration/EnumerateResponse</a:Action><a:RelatesTo>uuid:00000000-0000-0000-0000-000000000001</a:RelatesTo></s:Header><s:Body><n:EnumerateResponse><n:EnumerationContext></n:EnumerationContext><w:Items><rsp:Shell xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><rsp:ShellId>B6631D8E-65A0-49F2-9053-A1B156C95777</rsp:ShellId><rsp:ResourceUri>http://schemas.microsoft.com/powershell/Microsoft.PowerShell</rsp:ResourceUri><rsp:Owner>WIN-NNMU24VVKJ0\vagrant</rsp:Owner><rsp:ClientIP>10.0.2.2</rsp:ClientIP><rsp:ProcessId>2792</rsp:ProcessId><rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut><rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams><rsp:MaxIdleTimeOut>PT2147483.647S</rsp:MaxIdleTimeOut><rsp:Locale>en-US</rsp:Locale><rsp:DataLocale>en-US</rsp:DataLocale><rsp:CompressionMode>NoCompression</rsp:CompressionMode><rsp:ProfileLoaded>Yes</rsp:ProfileLoaded><rsp:Encoding>UTF8</rsp:Encoding><rsp:BufferMode>Block</rsp:BufferMode><rsp:State>Disconnected</rsp:State><rsp:ShellRunTime>P0DT0H0M9S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity><rsp:MemoryUsed>46MB</rsp:MemoryUsed><rsp:ChildProcesses>0</rsp:ChildProcesses></rsp:Shell></w:Items><w:EndOfSequence/></n:EnumerateResponse></s:Body></s:Envelope>"#;

    #[test]
    fn reads_the_recorded_enumeration() {
        let reply = parse_reply(ENUMERATE.as_bytes(), uuid::Uuid::from_u128(1)).unwrap();
        let page = parse_enumeration(&reply).unwrap();
        assert_eq!(page.next, None);
        assert_eq!(page.items.len(), 1);
        let shell = ShellInfo::from_element(&page.items[0]).unwrap();
        assert_eq!(shell.shell_id, "B6631D8E-65A0-49F2-9053-A1B156C95777");
        assert!(shell.is_disconnected());
        assert_eq!(shell.owner, "WIN-NNMU24VVKJ0\\vagrant");
        assert_eq!(shell.process_id, Some(2792));
        assert_eq!(shell.idle_timeout, Some(Duration::from_secs(7200)));
        assert_eq!(shell.max_idle_timeout, Some(Duration::from_millis(2_147_483_647)));
        assert_eq!(shell.buffer_mode, Some(BufferMode::Block));
        assert_eq!(shell.memory_used, "46MB");
        assert_eq!(shell.child_processes, Some(0));
    }

    #[test]
    fn an_unfinished_enumeration_needs_its_context() {
        let open = ENUMERATE.replace("<w:EndOfSequence/>", "");
        let reply = parse_reply(open.as_bytes(), uuid::Uuid::from_u128(1)).unwrap();
        assert_eq!(parse_enumeration(&reply).unwrap_err().kind(), crate::ErrorKind::Protocol);
        let with_context = open.replace(
            "<n:EnumerationContext></n:EnumerationContext>",
            "<n:EnumerationContext>uuid:ABC</n:EnumerationContext>",
        );
        let reply = parse_reply(with_context.as_bytes(), uuid::Uuid::from_u128(1)).unwrap();
        assert_eq!(parse_enumeration(&reply).unwrap().next.as_deref(), Some("uuid:ABC"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("P0DT0H1M9S"), Some(Duration::from_secs(69)));
        assert_eq!(parse_duration("PT0.500S"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("P1D"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("PT-1S"), None);
        assert_eq!(parse_duration("7200"), None);
    }

    #[test]
    fn bodies() {
        assert_eq!(disconnect_body(None, None), "<rsp:Disconnect/>");
        assert_eq!(
            disconnect_body(Some(Duration::from_secs(180)), Some(BufferMode::Drop)),
            "<rsp:Disconnect><rsp:IdleTimeOut>PT180.000S</rsp:IdleTimeOut><rsp:BufferMode>Drop</rsp:BufferMode></rsp:Disconnect>"
        );
        assert_eq!(connect_command_body("A<"), "<rsp:Connect CommandId=\"A&lt;\"/>");
        assert!(enumerate_body(Some("X")).contains("<wsman:Selector Name=\"ShellId\">X</wsman:Selector>"));
    }
}
