//! The security settings of a configuration (trusted hosts, TLS verification, client
//! certificates, message encryption, Kerberos names, audit) and what a connection established.
//!
//! Every rule (NTLM only towards a server that HTTPS or the trusted hosts vouch for, Basic only
//! over HTTPS, certificate checks) is the core's: these setters only store what the caller said,
//! and `psr_client_connect` reports a refusal as `PSR_RESULT_POLICY` or `PSR_RESULT_TLS`.

use std::ffi::c_char;
use std::path::PathBuf;

use psremote::client::{ClientCertificate, MessageEncryption, TlsVersion, parse_pin};
use zeroize::Zeroizing;

use crate::client::{psr_client, psr_config};
use crate::error::{Failure, PsrResult, psr_error};
use crate::ffi::{check_out, free_string, guard, handle, handle_mut, opt_str_arg, out_string, str_arg};

fn invalid_config(message: impl Into<String>) -> Failure {
    Failure::new(PsrResult::InvalidConfig, message)
}

/// Names the hosts towards which NTLM is accepted although nothing proves the server's identity,
/// as WinRM's TrustedHosts: a comma-separated list of names and addresses, `*` wildcards
/// (`*.corp.example`, `10.0.0.*`, `*`) and `<local>` (names without a dot). Replaces the list;
/// NULL or "" empties it. Naming a host accepts that its identity is not verified; over HTTPS with
/// a certificate that verifies, NTLM needs no entry.
///
/// Ownership: `c` and `hosts` are borrowed for the call. NULL `c` gives NULL_ARGUMENT. Errors:
/// INVALID_ARGUMENT (not UTF-8). Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_trusted_hosts(
    c: *mut psr_config,
    hosts: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        let hosts = opt_str_arg(hosts, "hosts")?.unwrap_or("");
        c.0.trusted_hosts = hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned).collect();
        Ok(())
    })
}

/// Trusts the CA certificates in the PEM file at `path` for https endpoints instead of the
/// system's trust store; NULL goes back to the system's. The file is read by `psr_client_connect`.
///
/// Ownership: `c` and `path` are borrowed for the call. NULL `c` gives NULL_ARGUMENT. Errors:
/// INVALID_ARGUMENT (not UTF-8); an unreadable file is INVALID_CONFIG from `psr_client_connect`.
/// Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_ca_file(
    c: *mut psr_config,
    path: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        c.0.tls.ca_file = opt_str_arg(path, "path")?.map(PathBuf::from);
        Ok(())
    })
}

/// Trusts the CA certificates in the PEM files of the folder `path` (e.g. `/etc/ssl/certs`)
/// instead of the system's trust store; NULL goes back to the system's.
///
/// Ownership: `c` and `path` are borrowed for the call. NULL `c` gives NULL_ARGUMENT. Errors:
/// INVALID_ARGUMENT (not UTF-8); a folder without certificates is INVALID_CONFIG from
/// `psr_client_connect`. Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_ca_dir(
    c: *mut psr_config,
    path: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        c.0.tls.ca_dir = opt_str_arg(path, "path")?.map(PathBuf::from);
        Ok(())
    })
}

/// The name the server's certificate must carry (and the TLS SNI) when it is not the URL's host,
/// e.g. connecting by address to a certificate issued for the server's DNS name. NULL: the host.
///
/// Ownership: `c` and `name` are borrowed for the call. NULL `c` gives NULL_ARGUMENT. Errors:
/// INVALID_ARGUMENT (not UTF-8), INVALID_CONFIG (empty). Threading: not concurrently with other
/// calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_server_name(
    c: *mut psr_config,
    name: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        let name = opt_str_arg(name, "name")?;
        if name.is_some_and(|n| n.trim().is_empty()) {
            return Err(invalid_config("the server name is empty; pass NULL to use the URL's host"));
        }
        c.0.tls.server_name = name.map(|n| n.trim().to_owned());
        Ok(())
    })
}

/// Adds a public-key pin: the SHA-256 of the SubjectPublicKeyInfo of a certificate the server
/// may present, as 64 hex digits (optionally `sha256/`-prefixed or colon-separated). Once any pin
/// is given, the server's key must match one of them, in addition to the chain check (or instead
/// of it with `psr_config_set_insecure_skip_verify`; a matching pin still proves the server).
///
/// Ownership: `c` and `hex` are borrowed for the call. NULL `c` or `hex` gives NULL_ARGUMENT.
/// Errors: INVALID_ARGUMENT (not UTF-8), INVALID_CONFIG (not a pin). Threading: not concurrently
/// with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_add_pinned_key(
    c: *mut psr_config,
    hex: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        let pin = parse_pin(str_arg(hex, "hex")?)?;
        if !c.0.tls.pinned_spki_sha256.contains(&pin) {
            c.0.tls.pinned_spki_sha256.push(pin);
        }
        Ok(())
    })
}

/// DANGEROUS: skips the verification of the server's certificate chain and name, so anyone on
/// the network path can impersonate the server. Every connection then logs a warning, and NTLM
/// needs the host in the trusted hosts again (unless a pin matches). Off by default.
///
/// Ownership: `c` is borrowed. NULL `c` gives NULL_ARGUMENT. Errors: none other. Threading: not
/// concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_insecure_skip_verify(
    c: *mut psr_config,
    skip: bool,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(c, "c")?.0.tls.insecure_skip_verify = skip;
        Ok(())
    })
}

fn tls_version(v: Option<&str>) -> Result<Option<TlsVersion>, Failure> {
    Ok(v.map(str::parse::<TlsVersion>).transpose()?)
}

/// The TLS versions offered: `min_version` and `max_version` are "1.2" or "1.3" (also "TLSv1.2",
/// "TLSv1.3"); NULL keeps the default (1.2 and 1.3).
///
/// Ownership: the strings are borrowed for the call. NULL `c` gives NULL_ARGUMENT. Errors:
/// INVALID_ARGUMENT (not UTF-8), INVALID_CONFIG (unknown version, or min above max); nothing is
/// changed on error. Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_tls_versions(
    c: *mut psr_config,
    min_version: *const c_char,
    max_version: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        let min = tls_version(opt_str_arg(min_version, "min_version")?)?;
        let max = tls_version(opt_str_arg(max_version, "max_version")?)?;
        if let Some((lo, hi)) = min.zip(max).filter(|(lo, hi)| lo > hi) {
            return Err(invalid_config(format!(
                "the minimum TLS version {} is above the maximum {}",
                lo.name(),
                hi.name()
            )));
        }
        c.0.tls.min_version = min;
        c.0.tls.max_version = max;
        Ok(())
    })
}

/// A client certificate (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1 or SEC1; NULL
/// when `cert_path` holds the key too), for `psr_config_set_auth(c, "certificate")` or for
/// servers that ask for one. `key_password` (NULL for an unencrypted key) decrypts an encrypted
/// PKCS#8 key; it is copied, zeroized when the config is freed and never appears in an error or
/// log. The files are read by `psr_client_connect`. `cert_path` NULL removes the certificate.
///
/// Ownership: the strings are borrowed for the call. NULL `c` gives NULL_ARGUMENT. Errors:
/// INVALID_ARGUMENT (not UTF-8); unreadable files or a wrong key password are INVALID_CONFIG from
/// `psr_client_connect`. Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_client_certificate(
    c: *mut psr_config,
    cert_path: *const c_char,
    key_path: *const c_char,
    key_password: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        let cert = opt_str_arg(cert_path, "cert_path")?;
        let key = opt_str_arg(key_path, "key_path")?;
        let password = opt_str_arg(key_password, "key_password")?.map(|p| Zeroizing::new(p.to_owned()));
        c.0.tls.client_certificate = cert.map(|cert| ClientCertificate {
            certificate: PathBuf::from(cert),
            key: PathBuf::from(key.unwrap_or(cert)),
            key_password: password,
        });
        Ok(())
    })
}

/// When bodies are sealed with the authentication's keys (WinRM message encryption): "auto"
/// (the default: over http always, over https not, TLS protecting them) or "always" (inside TLS
/// too; needs a mechanism that seals: negotiate, ntlm, kerberos, credssp).
///
/// Ownership: `mode` is borrowed for the call. NULL `c` or `mode` gives NULL_ARGUMENT. Errors:
/// INVALID_ARGUMENT (not UTF-8), INVALID_CONFIG (unknown mode). Threading: not concurrently with
/// other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_message_encryption(
    c: *mut psr_config,
    mode: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        c.0.message_encryption = str_arg(mode, "mode")?.parse::<MessageEncryption>()?;
        Ok(())
    })
}

/// Kerberos settings, used by "kerberos" and "negotiate": the KDC (`host`, `host:port`,
/// `tcp://host:port` or `udp://host:port`; NULL finds it from `PSREMOTE_KDC` or krb5.conf), the
/// service class of the SPN (NULL: "HTTP", what Windows registers for WinRM; or "host", "WSMAN"),
/// the host name in the SPN when it is not the URL's host (NULL: the host), and whether to
/// delegate a forwardable ticket to the server (the double hop; off unless asked).
///
/// Ownership: the strings are borrowed for the call. NULL `c` gives NULL_ARGUMENT. Errors:
/// INVALID_ARGUMENT (not UTF-8); a service class that cannot be used is INVALID_CONFIG from
/// `psr_client_connect`. Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_kerberos(
    c: *mut psr_config,
    kdc: *const c_char,
    service: *const c_char,
    hostname: *const c_char,
    delegate: bool,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        let kdc = opt_str_arg(kdc, "kdc")?.map(str::to_owned);
        let service = opt_str_arg(service, "service")?.unwrap_or("HTTP").to_owned();
        let hostname = opt_str_arg(hostname, "hostname")?.map(str::to_owned);
        let k = &mut c.0.kerberos;
        (k.kdc, k.service, k.hostname, k.delegate) = (kdc, service, hostname, delegate);
        Ok(())
    })
}

/// Puts pipeline arguments (parameter values, scripts) into the audit log events (target
/// `psremote::audit`, see `psr_set_log_callback`). Off by default, since arguments may carry data
/// an audit log should not hold.
///
/// Ownership: `c` is borrowed. NULL `c` gives NULL_ARGUMENT. Errors: none other. Threading: not
/// concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_audit_arguments(
    c: *mut psr_config,
    audit: bool,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(c, "c")?.0.audit_arguments = audit;
        Ok(())
    })
}

/// What the client's most recent connection established, as one JSON object: `endpoint` (the
/// URL), `mechanism` (configured), `negotiated` (used on the wire), `encryption`
/// ("message-encryption", "tls", "tls+message-encryption" or "none"), `channel_binding` (bool),
/// `tls_version` ("TLSv1.2"/"TLSv1.3"), `cipher_suite` and `certificate_sha256` (the server
/// certificate's SHA-256, lowercase hex); the last three are null over http; `proxy`: the proxy
/// the connection went through (its URL without credentials), null for a direct connection.
/// Never a secret.
///
/// Ownership: `*out_json` (written only on success) is a NUL-terminated UTF-8 string the caller
/// frees with `psr_string_free`. Errors: NULL_ARGUMENT. Threading: any thread; does no I/O.
#[unsafe(no_mangle)]
pub extern "C" fn psr_client_connection_info_json(
    c: *const psr_client,
    out_json: *mut *mut c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let client = handle(c, "c")?;
        check_out(out_json, "out_json")?;
        let json = match client.0.connection_info() {
            None => serde_json::Value::Null,
            Some(info) => {
                let tls = info.tls.as_ref();
                serde_json::json!({
                    "endpoint": info.endpoint,
                    "mechanism": info.mechanism.name(),
                    "negotiated": info.negotiated,
                    "encryption": info.encryption.name(),
                    "channel_binding": info.channel_binding,
                    "tls_version": tls.map(|t| t.version.name()),
                    "cipher_suite": tls.map(|t| t.cipher_suite.as_str()),
                    "certificate_sha256": tls.map(|t| t.certificate_sha256.as_str()),
                    "proxy": info.proxy,
                })
            }
        };
        out_string(out_json, &json.to_string());
        Ok(())
    })
}

/// Frees a string this library returned through a `char **` out-parameter (such as
/// `psr_client_connection_info_json`'s). NULL is allowed. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_string_free(s: *mut c_char) {
    free_string(s);
}
