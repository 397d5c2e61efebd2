//! The proxy settings of a configuration. The URL's reading, the environment's variables and
//! the tunnels are the core's; these setters store what the caller said.

use std::ffi::c_char;

use psremote::proxy::{Proxy, ProxyCredentials};
use zeroize::Zeroizing;

use crate::client::psr_config;
use crate::error::{Failure, PsrResult, psr_error};
use crate::ffi::{guard, handle_mut, opt_str_arg};

/// Tunnels every connection through a proxy. `url`: `http://[user:password@]host:port` (an HTTP
/// proxy asked for a CONNECT tunnel, for http and https endpoints alike, so NTLM, Kerberos and
/// CredSSP keep their connection and TLS runs end to end), `socks5://...` (the server's name
/// resolved here) or `socks5h://...` (resolved by the proxy); without a port, 80 for http and
/// 1080 for SOCKS. NULL `url` goes back to the environment's proxy variables (`https_proxy`,
/// `http_proxy`, `all_proxy`, `no_proxy`, read as Python's requests reads them) unless
/// `psr_config_set_ignore_proxy`. A proxy set here is used whatever `no_proxy` says.
/// `username` and `password` (NULL: none, or the URL's) log on to whichever proxy is used
/// (Basic for an HTTP proxy, RFC 1929 for SOCKS5) and replace any in the URL; the password is
/// copied, zeroized when the config is freed and never appears in an error, a log record or
/// `psr_client_connection_info_json`. On a `psr_config_new_ssh` configuration it is the proxy
/// the SSH connections go through: the environment's variables are never read for SSH, so NULL
/// `url` means no proxy, and `username` or `password` without a `url` (or `password` without
/// `username`) is INVALID_CONFIG rather than dropped.
///
/// Ownership: the strings are borrowed for the call. NULL `c` gives NULL_ARGUMENT. Errors:
/// INVALID_ARGUMENT (not UTF-8), INVALID_CONFIG (a URL that cannot be used: another scheme,
/// a bad port; the message never repeats the URL). A proxy that is unreachable, refuses the
/// tunnel or the credentials, or breaks the protocol makes `psr_client_connect` (or the first
/// call that connects) return PSR_RESULT_PROXY, its message naming the proxy. Threading: not
/// concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_proxy(
    c: *mut psr_config,
    url: *const c_char,
    username: *const c_char,
    password: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        let url = opt_str_arg(url, "url")?;
        let username = opt_str_arg(username, "username")?;
        let password = opt_str_arg(password, "password")?.map(|p| Zeroizing::new(p.to_owned()));
        let proxy = url.map(Proxy::parse).transpose()?;
        let credentials =
            username.map(|u| ProxyCredentials::new(u, password.as_deref().map(String::as_str).unwrap_or("")));
        if let (Some(p), Some(creds)) = (&proxy, &credentials) {
            // Checked now, so a user name the proxy's scheme cannot carry fails here.
            p.clone().with_credentials(Some(creds.clone()))?;
        }
        if let psremote::client::Carrier::Ssh(ssh) = &mut c.0.carrier {
            // The SSH connections' own proxy; the configuration's is WS-Man's. SSH reads no
            // proxy from the environment, so credentials without a proxy, or a password without
            // a user name, would be dropped: refused instead.
            if proxy.is_none() && (credentials.is_some() || password.is_some()) {
                return Err(Failure::new(
                    PsrResult::InvalidConfig,
                    "proxy credentials need a proxy URL on an SSH configuration (SSH reads no proxy from the environment)",
                ));
            }
            if credentials.is_none() && password.is_some() {
                return Err(Failure::new(PsrResult::InvalidConfig, "a proxy password needs a proxy user name"));
            }
            ssh.proxy = proxy.map(|p| p.with_credentials(credentials)).transpose()?;
            return Ok(());
        }
        (c.0.proxy, c.0.proxy_credentials) = (proxy, credentials);
        Ok(())
    })
}

/// Ignores the environment's proxy variables (`https_proxy`, `http_proxy`, `all_proxy` and
/// their uppercase forms): connections go directly unless `psr_config_set_proxy` named a proxy.
/// Off by default.
///
/// Ownership: `c` is borrowed. NULL `c` gives NULL_ARGUMENT. Errors: none other. Threading: not
/// concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_ignore_proxy(c: *mut psr_config, ignore: bool, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || {
        handle_mut(c, "c")?.0.ignore_proxy = ignore;
        Ok(())
    })
}
