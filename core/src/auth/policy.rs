//! The remoting security rules the client enforces before it authenticates (DESIGN: Security):
//! NTLM only when something else proves the server's identity, Basic only over TLS, and
//! `trusted_hosts` matched as WinRM's TrustedHosts is.

use std::net::IpAddr;

use crate::error::Error;

/// Whether `host` matches one `trusted_hosts` entry. Entries compare case-insensitively; `*`
/// matches any run of characters (`*`, `*.corp.example`, `10.0.0.*`), and `<local>` matches
/// every name without a dot, as WinRM's TrustedHosts does.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    let host = host.trim().trim_matches(['[', ']']).to_ascii_lowercase();
    if pattern.is_empty() || host.is_empty() {
        return false;
    }
    if pattern == "<local>" {
        return !host.contains('.') && !host.contains(':');
    }
    glob(pattern.as_bytes(), host.as_bytes())
}

/// Iterative `*` matching (no backtracking blow-up on hostile patterns).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// Whether any `trusted_hosts` entry names `host`. Entries may also be comma-separated lists.
pub fn is_trusted_host(trusted_hosts: &[String], host: &str) -> bool {
    trusted_hosts.iter().flat_map(|e| e.split(',')).any(|p| host_matches(p, host))
}

/// Whether `host` is an IP address literal (Kerberos needs a name to find the service).
pub fn is_ip_address(host: &str) -> bool {
    host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
}

/// Why NTLM may be used towards a host, when it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NtlmPermit {
    /// HTTPS with a certificate that validated (or matched a pin) proves the server.
    VerifiedTls,
    /// The host is named in `trusted_hosts`.
    TrustedHost,
}

/// NTLM proves the user but not the server, so it is allowed only when TLS proves the server or
/// the caller named the host in `trusted_hosts`.
pub fn ntlm_permit(https_proves_identity: bool, trusted_hosts: &[String], host: &str) -> Option<NtlmPermit> {
    if https_proves_identity {
        Some(NtlmPermit::VerifiedTls)
    } else if is_trusted_host(trusted_hosts, host) {
        Some(NtlmPermit::TrustedHost)
    } else {
        None
    }
}

/// The refusal for NTLM towards an unproven server; it names the three ways out.
pub fn ntlm_refused(host: &str, why: &str) -> Error {
    Error::Policy(format!(
        "{why}: NTLM cannot prove the identity of {host}. Use Kerberos (negotiate or kerberos towards the host's \
         name, with a reachable KDC), or connect over HTTPS with a certificate that validates, or add {host:?} to \
         trusted_hosts to accept NTLM without server verification"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_trustedhosts_does() {
        assert!(host_matches("*", "anything.example"));
        assert!(host_matches("*.corp.example", "srv1.CORP.example"));
        assert!(!host_matches("*.corp.example", "corp.example.evil"));
        assert!(host_matches("10.0.0.*", "10.0.0.17"));
        assert!(!host_matches("10.0.0.*", "10.0.1.17"));
        assert!(host_matches("SRV1", "srv1"));
        assert!(!host_matches("srv1", "srv10"));
        assert!(host_matches("<local>", "srv1"));
        assert!(!host_matches("<local>", "srv1.corp"));
        assert!(host_matches("::1", "[::1]"));
        assert!(!host_matches("", "srv1"));
    }

    #[test]
    fn hostile_patterns_stay_linear() {
        let pattern = "*a".repeat(200) + "b";
        assert!(!host_matches(&pattern, &"a".repeat(5000)));
    }

    #[test]
    fn lists_may_be_comma_separated() {
        let list = vec!["a.example, 127.0.0.1".to_owned()];
        assert!(is_trusted_host(&list, "127.0.0.1"));
        assert!(is_trusted_host(&list, "A.example"));
        assert!(!is_trusted_host(&list, "b.example"));
    }

    #[test]
    fn permit_needs_tls_or_trusted_host() {
        assert_eq!(ntlm_permit(true, &[], "h"), Some(NtlmPermit::VerifiedTls));
        assert_eq!(ntlm_permit(false, &["h".into()], "h"), Some(NtlmPermit::TrustedHost));
        assert_eq!(ntlm_permit(false, &["x".into()], "h"), None);
        let msg = ntlm_refused("h", "ntlm towards an unverified server").to_string();
        assert!(msg.contains("Kerberos") && msg.contains("HTTPS") && msg.contains("trusted_hosts"), "{msg}");
    }

    #[test]
    fn ip_literals_are_recognised() {
        assert!(is_ip_address("127.0.0.1"));
        assert!(is_ip_address("[::1]"));
        assert!(!is_ip_address("localhost"));
    }
}
