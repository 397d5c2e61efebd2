//! The environment's proxy variables, read as Python's requests reads them (psremote's users
//! come from there), with curl's stricter choices where requests has quirks. Sans-IO: the
//! variables come through a lookup function, so the rules are tested without touching the
//! process environment.
//!
//! - For an `http` endpoint `http_proxy`, else `HTTP_PROXY` (ignored when `REQUEST_METHOD` is
//!   set: under CGI a request header can set it); for `https`, `https_proxy`, else `HTTPS_PROXY`;
//!   then `all_proxy`, else `ALL_PROXY`. A lowercase variable that is set but empty means "none
//!   of this kind": the uppercase one is not read, the `all_proxy` pair is.
//! - `no_proxy` when set and not empty, else `NO_PROXY`: `*` alone bypasses every host;
//!   otherwise entries separated by commas or whitespace, each a name (matching the host and its
//!   subdomains, a leading dot ignored), `name:port` (that port only), an IP address or a CIDR
//!   network (matching addresses only, never by suffix). No name is resolved and `localhost` is
//!   not bypassed unless listed.

use std::net::IpAddr;

use super::Proxy;
use crate::error::{Error, Result};

/// The proxy the environment names for an endpoint at `host:port` (`https` for TLS), and the
/// variable it came from; `None` when no variable applies or `NO_PROXY` lists the host.
pub fn proxy_for(
    lookup: &dyn Fn(&str) -> Option<String>,
    https: bool,
    host: &str,
    port: u16,
) -> Result<Option<(Proxy, &'static str)>> {
    let Some((name, value)) = pick(lookup, https) else { return Ok(None) };
    let no_proxy = lookup("no_proxy").filter(|v| !v.trim().is_empty()).or_else(|| lookup("NO_PROXY"));
    if no_proxy.is_some_and(|list| bypasses(&list, host, port)) {
        return Ok(None);
    }
    let proxy = Proxy::parse(&value).map_err(|e| match e {
        Error::InvalidConfig(why) => Error::InvalidConfig(format!("{why} (from the environment variable {name})")),
        other => other,
    })?;
    Ok(Some((proxy, name)))
}

/// The variable that names the proxy for the scheme, and its value.
fn pick(lookup: &dyn Fn(&str) -> Option<String>, https: bool) -> Option<(&'static str, String)> {
    let (lower, upper) = if https { ("https_proxy", "HTTPS_PROXY") } else { ("http_proxy", "HTTP_PROXY") };
    let cgi = lookup("REQUEST_METHOD").is_some();
    let pairs: [(&'static str, &'static str, bool); 2] =
        [(lower, upper, !https && cgi), ("all_proxy", "ALL_PROXY", false)];
    for (lower, upper, skip_upper) in pairs {
        match lookup(lower) {
            Some(v) if !v.trim().is_empty() => return Some((lower, v)),
            Some(_) => continue,
            None => {}
        }
        if skip_upper {
            continue;
        }
        if let Some(v) = lookup(upper).filter(|v| !v.trim().is_empty()) {
            return Some((upper, v));
        }
    }
    None
}

/// Whether the `NO_PROXY` list `list` names the endpoint at `host:port`.
pub fn bypasses(list: &str, host: &str, port: u16) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    list.split(|c: char| c == ',' || c.is_whitespace()).filter(|e| !e.is_empty()).any(|entry| {
        let entry = entry.to_ascii_lowercase();
        match host_ip {
            Some(ip) => ip_entry_matches(&entry, ip),
            None => name_entry_matches(&entry, &host, port),
        }
    })
}

fn ip_entry_matches(entry: &str, ip: IpAddr) -> bool {
    let entry = entry.trim_start_matches('[').trim_end_matches(']');
    if let Some((net, bits)) = entry.split_once('/') {
        let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else { return false };
        return in_network(ip, net, bits);
    }
    entry.parse::<IpAddr>().is_ok_and(|e| e == ip)
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

fn name_entry_matches(entry: &str, host: &str, port: u16) -> bool {
    let (name, entry_port) = match entry.rsplit_once(':') {
        Some((n, p)) if !n.contains(':') => match p.parse::<u16>() {
            Ok(p) => (n, Some(p)),
            Err(_) => return false,
        },
        _ => (entry, None),
    };
    if entry_port.is_some_and(|p| p != port) {
        return false;
    }
    let name = name.strip_prefix('.').unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name);
    // `*` inside a list and `*.example.com` match nothing (curl and requests agree).
    if name.is_empty() || name.contains('*') {
        return false;
    }
    host == name || host.strip_suffix(name).is_some_and(|rest| rest.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "www.example.com";
    const PORT: u16 = 18080;
    const P: &str = "http://127.0.0.1:9";

    /// Which variable gives the proxy for `host:port` with `vars` set.
    fn chosen(vars: &[(&str, &str)], https: bool, host: &str, port: u16) -> Option<&'static str> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        proxy_for(&lookup, https, host, port).unwrap().map(|(_, name)| name)
    }

    fn http(vars: &[(&str, &str)]) -> Option<&'static str> {
        chosen(vars, false, HOST, PORT)
    }

    #[test]
    fn which_variable_names_the_proxy() {
        assert_eq!(http(&[("http_proxy", P)]), Some("http_proxy"));
        assert_eq!(http(&[("HTTP_PROXY", P)]), Some("HTTP_PROXY"));
        assert_eq!(http(&[("HTTP_PROXY", P), ("REQUEST_METHOD", "GET")]), None);
        assert_eq!(http(&[("http_proxy", P), ("REQUEST_METHOD", "GET")]), Some("http_proxy"));
        assert_eq!(chosen(&[("HTTPS_PROXY", P)], true, HOST, PORT), Some("HTTPS_PROXY"));
        assert_eq!(chosen(&[("HTTPS_PROXY", P), ("REQUEST_METHOD", "GET")], true, HOST, PORT), Some("HTTPS_PROXY"));
        assert_eq!(chosen(&[("https_proxy", P)], false, HOST, PORT), None);
        assert_eq!(chosen(&[("http_proxy", P)], true, HOST, PORT), None);
        assert_eq!(http(&[("ALL_PROXY", P)]), Some("ALL_PROXY"));
        assert_eq!(chosen(&[("all_proxy", P)], true, HOST, PORT), Some("all_proxy"));
        assert_eq!(http(&[("http_proxy", ""), ("HTTP_PROXY", P)]), None);
        assert_eq!(http(&[("all_proxy", P), ("http_proxy", "")]), Some("all_proxy"));
        assert_eq!(
            chosen(&[("https_proxy", P), ("HTTPS_PROXY", "http://other:1")], true, HOST, PORT),
            Some("https_proxy")
        );
        // Only the exact lowercase and uppercase names count.
        assert_eq!(http(&[("Http_Proxy", P)]), None);
        assert_eq!(http(&[]), None);
    }

    #[test]
    fn no_proxy_lists_follow_requests_and_curl() {
        let with = |no_proxy: &str| http(&[("http_proxy", P), ("no_proxy", no_proxy)]);
        assert_eq!(http(&[("http_proxy", P), ("NO_PROXY", "*")]), None);
        assert_eq!(with("*,foo"), Some("http_proxy"));
        for bypass in [
            "example.com",
            ".example.com",
            "WWW.EXAMPLE.COM",
            "foo, example.com ",
            "example.com.",
            "foo example.com",
            "www.example.com:18080",
        ] {
            assert_eq!(with(bypass), None, "{bypass}");
        }
        for no in ["*.example.com", "ample.com", "www.example.com:1", "example.com;other", "", "[", "a:b:c"] {
            assert_eq!(with(no), Some("http_proxy"), "{no}");
        }
        // The lowercase list wins when set; an empty one defers to the uppercase.
        assert_eq!(
            http(&[("http_proxy", P), ("NO_PROXY", "example.com"), ("no_proxy", "other.org")]),
            Some("http_proxy")
        );
        assert_eq!(http(&[("http_proxy", P), ("no_proxy", ""), ("NO_PROXY", "*")]), None);
    }

    #[test]
    fn addresses_match_as_addresses_or_networks() {
        let at = |host: &str, no_proxy: &str| chosen(&[("http_proxy", P), ("no_proxy", no_proxy)], false, host, PORT);
        assert_eq!(at("localhost", ""), Some("http_proxy"), "no implicit localhost bypass");
        assert_eq!(at("127.0.0.1", ""), Some("http_proxy"));
        for bypass in ["127.0.0.1", "127.0.0.0/8", "127.0.0.1/32", "0.0.0.0/0"] {
            assert_eq!(at("127.0.0.1", bypass), None, "{bypass}");
        }
        for no in ["127.0.0.1:18080", "127.0.0", "0.0.1", "localhost", "127.0.0.0/33", "10.0.0.0/8"] {
            assert_eq!(at("127.0.0.1", no), Some("http_proxy"), "{no}");
        }
        assert_eq!(at("localhost", "127.0.0.0/8"), Some("http_proxy"), "no name is resolved");
        assert_eq!(at("10.1.2.3", "10.0.0.0/8"), None);
        for bypass in ["::1", "[::1]", "::1/128", "::/0"] {
            assert_eq!(at("::1", bypass), None, "{bypass}");
        }
        assert_eq!(at("::1", "::2"), Some("http_proxy"));
        assert_eq!(at("::1", "127.0.0.1"), Some("http_proxy"));
    }

    #[test]
    fn a_bad_proxy_variable_names_the_variable_not_its_value() {
        let lookup = |k: &str| (k == "https_proxy").then(|| "https://u:secret@h:1".to_owned());
        let err = proxy_for(&lookup, true, HOST, PORT).unwrap_err();
        assert!(err.to_string().contains("https_proxy") && !err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn the_proxy_comes_back_parsed() {
        let lookup = |k: &str| (k == "ALL_PROXY").then(|| "socks5h://u:p@127.0.0.1:1080".to_owned());
        let (proxy, _) = proxy_for(&lookup, false, HOST, PORT).unwrap().unwrap();
        assert_eq!(proxy.url(), "socks5h://127.0.0.1:1080");
        assert_eq!(proxy.credentials.unwrap().username(), "u");
    }
}
