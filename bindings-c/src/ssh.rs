//! PowerShell over SSH: a configuration for the `powershell` subsystem of an SSH server and its
//! logon and host key settings. The host key rules (strict `known_hosts` checking; an unknown key
//! accepted only when asked, warned and recorded; a changed or revoked key always refused) are the
//! core's: these setters store what the caller said, and opening a pool reports a refusal as
//! `PSR_RESULT_POLICY`, a refused logon as `PSR_RESULT_AUTHENTICATION`, a server without the
//! subsystem as `PSR_RESULT_TRANSPORT`.

use std::ffi::c_char;
use std::path::PathBuf;

use psremote::client::{Carrier, ClientConfig};
use psremote::transport::ssh::{HostKeyPolicy, SshAuth, SshOptions};

use crate::client::psr_config;
use crate::error::{Failure, PsrResult, psr_error};
use crate::ffi::{guard, guard_ptr, handle_mut, opt_str_arg, str_arg};

/// The SSH options of a configuration made by `psr_config_new_ssh`.
fn ssh_mut<'a>(c: *mut psr_config) -> Result<&'a mut SshOptions, Failure> {
    match &mut handle_mut(c, "c")?.0.carrier {
        Carrier::Ssh(options) => Ok(&mut **options),
        _ => Err(Failure::new(PsrResult::InvalidConfig, "not an SSH configuration: make it with psr_config_new_ssh")),
    }
}

/// New settings for PowerShell over SSH: the `powershell` subsystem of `host` (a name or address)
/// on `port` (0: 22), logged on as `username`. Until a `psr_config_set_ssh_*` setter says
/// otherwise it logs on with the keys of the SSH agent at `$SSH_AUTH_SOCK` and checks the host
/// key strictly against `~/.ssh/known_hosts`. `psr_client_connect` only validates such a
/// configuration; each `psr_pool_open` makes its own SSH connection. Connection setters of
/// WS-Man (authentication, TLS, trusted hosts, ignore-proxy) play no part; cmd shells and
/// disconnected sessions are refused (`PSR_RESULT_INVALID_CONFIG`). Setters that do apply:
/// `psr_config_set_operation_timeout_ms` (three of it bound the waits for the server's
/// acknowledgements), `psr_config_set_proxy` (the proxy the SSH connections go through), the
/// audit and buffering settings. `psr_config_set_process` is refused (INVALID_CONFIG): an SSH
/// configuration stays one.
///
/// Ownership: the caller frees the result with `psr_config_free`. NULL when an argument is NULL,
/// not UTF-8 or empty. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_new_ssh(host: *const c_char, port: u16, username: *const c_char) -> *mut psr_config {
    guard_ptr(|| {
        let (Ok(host), Ok(user)) = (str_arg(host, "host"), str_arg(username, "username")) else {
            return std::ptr::null_mut();
        };
        let mut options = SshOptions::new(host, user, SshAuth::agent());
        if port != 0 {
            options.port = port;
        }
        if options.validate().is_err() {
            return std::ptr::null_mut();
        }
        Box::into_raw(Box::new(psr_config(ClientConfig::ssh(options))))
    })
}

/// Logs on with the private key in the file at `path` (OpenSSH or PKCS#8 format); `passphrase`
/// decrypts an encrypted key (NULL for none; copied, zeroized when the config is freed, never
/// logged). The file is read when a pool opens: an unreadable file or an encrypted key without
/// its passphrase is INVALID_CONFIG then, a wrong passphrase or a key the server refuses
/// AUTHENTICATION.
///
/// Ownership: `c`, `path` and `passphrase` are borrowed for the call. Errors: NULL_ARGUMENT,
/// INVALID_ARGUMENT (not UTF-8), INVALID_CONFIG (not an SSH configuration).
/// Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_ssh_key_file(
    c: *mut psr_config,
    path: *const c_char,
    passphrase: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let path = str_arg(path, "path")?;
        let passphrase = opt_str_arg(passphrase, "passphrase")?;
        ssh_mut(c)?.auth = SshAuth::key_file(path, passphrase);
        Ok(())
    })
}

/// Logs on with a password (copied, zeroized when the config is freed, never logged).
///
/// Ownership: `c` and `password` are borrowed for the call. Errors: NULL_ARGUMENT,
/// INVALID_ARGUMENT (not UTF-8), INVALID_CONFIG (not an SSH configuration).
/// Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_ssh_password(
    c: *mut psr_config,
    password: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let password = str_arg(password, "password")?;
        ssh_mut(c)?.auth = SshAuth::password(password);
        Ok(())
    })
}

/// Logs on with the keys of an SSH agent, each tried in turn: the one listening on the Unix
/// socket `socket`, or (NULL) the one `$SSH_AUTH_SOCK` names when the pool opens.
///
/// Ownership: `c` and `socket` are borrowed for the call. Errors: NULL_ARGUMENT (`c`),
/// INVALID_ARGUMENT (not UTF-8), INVALID_CONFIG (not an SSH configuration).
/// Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_ssh_agent(
    c: *mut psr_config,
    socket: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let socket = opt_str_arg(socket, "socket")?.map(PathBuf::from);
        ssh_mut(c)?.auth = SshAuth::Agent { socket };
        Ok(())
    })
}

/// Checks host keys against the OpenSSH `known_hosts` file at `path` (NULL: `~/.ssh/known_hosts`).
/// A missing file knows no host. Plain, hashed (`|1|`) and `[host]:port` entries, patterns and
/// `@revoked` lines are understood.
///
/// Ownership: `c` and `path` are borrowed for the call. Errors: NULL_ARGUMENT (`c`),
/// INVALID_ARGUMENT (not UTF-8), INVALID_CONFIG (not an SSH configuration).
/// Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_ssh_known_hosts(
    c: *mut psr_config,
    path: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let path = opt_str_arg(path, "path")?.map(PathBuf::from);
        ssh_mut(c)?.known_hosts = path;
        Ok(())
    })
}

/// With `accept` true, a host key that `known_hosts` does not record is accepted (OpenSSH's
/// `accept-new`): the connection logs an audit warning and appends the key to the file, so the
/// next connection checks it strictly. Off by default (such a key is refused with POLICY, the
/// message naming its fingerprint). A changed or revoked key is refused either way.
///
/// Ownership: `c` is borrowed. Errors: NULL_ARGUMENT, INVALID_CONFIG (not an SSH configuration).
/// Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_ssh_accept_unknown_host_key(
    c: *mut psr_config,
    accept: bool,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        ssh_mut(c)?.host_key_policy = if accept { HostKeyPolicy::AcceptUnknown } else { HostKeyPolicy::Strict };
        Ok(())
    })
}

/// Names the SSH subsystem to start (default "powershell", as `Enter-PSSession -HostName` uses).
///
/// Ownership: `c` and `name` are borrowed for the call. Errors: NULL_ARGUMENT, INVALID_ARGUMENT
/// (not UTF-8), INVALID_CONFIG (empty, or not an SSH configuration).
/// Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_ssh_subsystem(
    c: *mut psr_config,
    name: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let name = str_arg(name, "name")?;
        if name.is_empty() {
            return Err(Failure::new(PsrResult::InvalidConfig, "the subsystem name is empty"));
        }
        ssh_mut(c)?.subsystem = name.to_owned();
        Ok(())
    })
}

/// Bounds the TCP connect, key exchange, logon and subsystem start of each SSH connection, in
/// milliseconds (default 30000).
///
/// Ownership: `c` is borrowed. Errors: NULL_ARGUMENT, INVALID_CONFIG (0, or not an SSH
/// configuration). Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_ssh_connect_timeout_ms(
    c: *mut psr_config,
    ms: u32,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        if ms == 0 {
            return Err(Failure::new(PsrResult::InvalidConfig, "the connect timeout must be above 0 ms"));
        }
        ssh_mut(c)?.connect_timeout = std::time::Duration::from_millis(u64::from(ms));
        Ok(())
    })
}
