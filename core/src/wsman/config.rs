//! The server's WinRM configuration (`winrm/config`, read with a Transfer Get on
//! `http://schemas.microsoft.com/wbem/wsman/1/config`, MS-WSMV 3.1.4.5): the limits a client
//! sizes its requests by.

use super::envelope::Reply;
use crate::error::{Error, Result};

/// The resource URI of `winrm/config`.
pub const CONFIG_URI: &str = "http://schemas.microsoft.com/wbem/wsman/1/config";
const CONFIG_NS: &str = "http://schemas.microsoft.com/wbem/wsman/1/config";
/// More settings than Windows has: a reply past this is hostile.
const MAX_ENTRIES: usize = 1024;
/// Longest value kept (an SDDL string is the longest Windows sends).
const MAX_VALUE: usize = 4096;

/// The parts of `winrm/config` a client acts on, and every setting as `Section/Name` text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// `MaxEnvelopeSizekb`: the largest request the server accepts, in KiB.
    pub max_envelope_size_kb: Option<u32>,
    /// `MaxTimeoutms`: the longest OperationTimeout the server accepts.
    pub max_timeout_ms: Option<u64>,
    /// `MaxBatchItems`: most items an Enumerate answer carries.
    pub max_batch_items: Option<u32>,
    /// `Winrs/IdleTimeout` in milliseconds.
    pub shell_idle_timeout_ms: Option<u64>,
    /// `Winrs/MaxShellsPerUser`.
    pub max_shells_per_user: Option<u32>,
    /// `Winrs/MaxMemoryPerShellMB`.
    pub max_memory_per_shell_mb: Option<u32>,
    /// `Service/MaxConcurrentOperationsPerUser`.
    pub max_concurrent_operations_per_user: Option<u32>,
    /// Every leaf setting in document order, named by its path below `Config`
    /// (`MaxEnvelopeSizekb`, `Service/Auth/Basic`, `Winrs/IdleTimeout`, ...).
    pub entries: Vec<(String, String)>,
}

impl ServerConfig {
    /// The largest request in bytes, when the server said.
    pub fn max_envelope_size(&self) -> Option<u32> {
        self.max_envelope_size_kb.and_then(|kb| kb.checked_mul(1024))
    }

    /// A setting by its path (`Service/AllowUnencrypted`), case-insensitively.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k.eq_ignore_ascii_case(path)).map(|(_, v)| v.as_str())
    }
}

/// Reads a GetResponse of `winrm/config`.
pub fn parse_config(reply: &Reply) -> Result<ServerConfig> {
    let root = reply
        .body
        .child(CONFIG_NS, "Config")
        .ok_or_else(|| Error::protocol("the winrm/config reply holds no cfg:Config element"))?;
    let mut entries = Vec::new();
    collect(root, "", &mut entries)?;
    let named = ServerConfig { entries, ..ServerConfig::default() };
    let number = |path: &str| named.get(path).and_then(|v| v.trim().parse::<u64>().ok());
    let small = |path: &str| number(path).and_then(|v| u32::try_from(v).ok());
    Ok(ServerConfig {
        max_envelope_size_kb: small("MaxEnvelopeSizekb"),
        max_timeout_ms: number("MaxTimeoutms"),
        max_batch_items: small("MaxBatchItems"),
        shell_idle_timeout_ms: number("Winrs/IdleTimeout"),
        max_shells_per_user: small("Winrs/MaxShellsPerUser"),
        max_memory_per_shell_mb: small("Winrs/MaxMemoryPerShellMB"),
        max_concurrent_operations_per_user: small("Service/MaxConcurrentOperationsPerUser"),
        entries: named.entries.clone(),
    })
}

fn collect(element: &super::xml::Element, prefix: &str, out: &mut Vec<(String, String)>) -> Result<()> {
    for child in &element.children {
        let path = if prefix.is_empty() { child.name.clone() } else { format!("{prefix}/{}", child.name) };
        if child.children.is_empty() {
            if out.len() >= MAX_ENTRIES {
                return Err(Error::protocol(format!("the winrm/config reply has more than {MAX_ENTRIES} settings")));
            }
            let value: String = child.text.trim().chars().take(MAX_VALUE).collect();
            out.push((path, value));
        } else {
            collect(child, &path, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsman::parse_reply;

    const REPLY: &str = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"><s:Header><a:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse</a:Action><a:RelatesTo>uuid:452E314E-4267-4F1D-AE4F-5E3483848E3B</a:RelatesTo></s:Header><s:Body><cfg:Config xmlns:cfg="http://schemas.microsoft.com/wbem/wsman/1/config"><cfg:MaxEnvelopeSizekb>150</cfg:MaxEnvelopeSizekb><cfg:MaxTimeoutms>60000</cfg:MaxTimeoutms><cfg:MaxBatchItems>32000</cfg:MaxBatchItems><cfg:Service><cfg:MaxConcurrentOperationsPerUser>1500</cfg:MaxConcurrentOperationsPerUser><cfg:Auth><cfg:Basic>true</cfg:Basic></cfg:Auth></cfg:Service><cfg:Winrs><cfg:IdleTimeout>7200000</cfg:IdleTimeout><cfg:MaxMemoryPerShellMB>2147483647</cfg:MaxMemoryPerShellMB><cfg:MaxShellsPerUser>2147483647</cfg:MaxShellsPerUser></cfg:Winrs></cfg:Config></s:Body></s:Envelope>"#;

    #[test]
    fn reads_the_recorded_windows_config() {
        let id = uuid::Uuid::parse_str("452E314E-4267-4F1D-AE4F-5E3483848E3B").unwrap();
        let config = parse_config(&parse_reply(REPLY.as_bytes(), id).unwrap()).unwrap();
        assert_eq!(config.max_envelope_size_kb, Some(150));
        assert_eq!(config.max_envelope_size(), Some(153_600));
        assert_eq!(config.max_timeout_ms, Some(60_000));
        assert_eq!(config.max_batch_items, Some(32_000));
        assert_eq!(config.shell_idle_timeout_ms, Some(7_200_000));
        assert_eq!(config.max_shells_per_user, Some(2_147_483_647));
        assert_eq!(config.max_concurrent_operations_per_user, Some(1500));
        assert_eq!(config.get("service/auth/basic"), Some("true"));
    }

    #[test]
    fn a_reply_without_config_is_refused() {
        let id = uuid::Uuid::parse_str("452E314E-4267-4F1D-AE4F-5E3483848E3B").unwrap();
        let other = REPLY.replace("cfg:Config", "cfg:Other");
        assert!(parse_config(&parse_reply(other.as_bytes(), id).unwrap()).is_err());
    }
}
