//! PowerShell over SSH, the carrier: an SSH connection (russh on tokio) to the server, the host
//! key checked against `known_hosts`, a logon by key file, password or agent, and the server's
//! `powershell` subsystem (`Enter-PSSession -HostName` does the same) as a byte stream for the
//! out-of-process framing of MS-PSRP.
//!
//! The host key policy is decided here, before any credential is sent: strict by default (an
//! unknown key is refused with its fingerprint and the way to accept it), a changed key (another
//! key recorded for the host, of any algorithm) and a `@revoked` key are refused under every
//! policy. [`HostKeyPolicy::AcceptUnknown`] is OpenSSH's `StrictHostKeyChecking=accept-new`:
//! an unknown key is accepted, warned about on the audit target and appended to the
//! `known_hosts` file, so the next connection checks it strictly.

mod known_hosts;
mod stream;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use russh::ChannelMsg;
use russh::client::{self, AuthResult, Handle};
use russh::keys::{Algorithm, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zeroize::Zeroizing;

use self::known_hosts::{KnownHosts, Verdict};
pub use self::stream::{SshChannelStatus, SshStream};
use crate::error::{Error, Result};
use crate::host_key_error::{HostKeyError, HostKeyProblem};

/// How a logon proves the user's identity.
#[derive(Clone)]
#[non_exhaustive]
pub enum SshAuth {
    /// A private key file (OpenSSH or PKCS#8 format), with its passphrase when encrypted.
    KeyFile {
        /// The private key file.
        path: PathBuf,
        /// The passphrase of an encrypted key (zeroized on drop, never printed).
        passphrase: Option<Zeroizing<String>>,
    },
    /// A password (zeroized on drop, never printed).
    Password(Zeroizing<String>),
    /// The keys of an SSH agent, each tried in turn.
    Agent {
        /// The agent's socket; `None`: `$SSH_AUTH_SOCK`.
        socket: Option<PathBuf>,
    },
}

impl SshAuth {
    /// A private key file, with its passphrase when encrypted.
    pub fn key_file(path: impl Into<PathBuf>, passphrase: Option<&str>) -> Self {
        SshAuth::KeyFile { path: path.into(), passphrase: passphrase.map(|p| Zeroizing::new(p.to_owned())) }
    }

    /// A password.
    pub fn password(password: impl Into<String>) -> Self {
        SshAuth::Password(Zeroizing::new(password.into()))
    }

    /// The agent at `$SSH_AUTH_SOCK`.
    pub fn agent() -> Self {
        SshAuth::Agent { socket: None }
    }

    /// The name of the SSH method (`publickey`, `password`, `agent`), for logs and errors.
    pub fn method(&self) -> &'static str {
        match self {
            SshAuth::KeyFile { .. } => "publickey",
            SshAuth::Password(_) => "password",
            SshAuth::Agent { .. } => "agent",
        }
    }
}

impl fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SshAuth::KeyFile { path, passphrase } => f
                .debug_struct("KeyFile")
                .field("path", path)
                .field("passphrase", &passphrase.as_ref().map(|_| "<redacted>"))
                .finish(),
            SshAuth::Password(_) => f.debug_tuple("Password").field(&"<redacted>").finish(),
            SshAuth::Agent { socket } => f.debug_struct("Agent").field("socket", socket).finish(),
        }
    }
}

/// What to do with a host key that `known_hosts` does not record for the host. A changed or
/// revoked key is refused under every policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum HostKeyPolicy {
    /// Refuse it ([`Error::HostKey`] with its fingerprint).
    #[default]
    Strict,
    /// Accept it (OpenSSH's `accept-new`): warned on `psremote::audit`, and appended to the
    /// `known_hosts` file (created if missing) so that later connections check it strictly.
    AcceptUnknown,
}

/// Where and how to reach an SSH server's subsystem.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SshOptions {
    /// Host name or address.
    pub host: String,
    /// TCP port (22).
    pub port: u16,
    /// The user to log on as.
    pub username: String,
    /// How to log on.
    pub auth: SshAuth,
    /// The `known_hosts` file; `None`: `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// What to do with an unknown host key (strict by default).
    pub host_key_policy: HostKeyPolicy,
    /// The subsystem to start (`powershell`).
    pub subsystem: String,
    /// Bounds the TCP connect, the key exchange, the logon and the subsystem's start together.
    pub connect_timeout: Duration,
    /// How long the connection may be quiet before a keepalive asks the server for a sign of
    /// life (15 s); after four unanswered ones the connection is given up and the stream ends.
    pub keepalive_interval: Duration,
    /// A proxy the TCP connection goes through (an HTTP proxy's CONNECT tunnel, or SOCKS5);
    /// the key exchange runs end to end inside it. The environment's proxy variables are not
    /// read for SSH, as OpenSSH does not read them.
    pub proxy: Option<crate::proxy::Proxy>,
}

impl SshOptions {
    /// Options for `username@host:22`, the `powershell` subsystem, strict host key checking
    /// against `~/.ssh/known_hosts` and a 30-second connect timeout.
    pub fn new(host: impl Into<String>, username: impl Into<String>, auth: SshAuth) -> Self {
        Self {
            host: host.into(),
            port: 22,
            username: username.into(),
            auth,
            known_hosts: None,
            host_key_policy: HostKeyPolicy::Strict,
            subsystem: "powershell".into(),
            connect_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(15),
            proxy: None,
        }
    }

    /// The `host:port` connected to (IPv6 addresses in brackets).
    pub fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `known_hosts` file used: the configured one, else `~/.ssh/known_hosts` (none when
    /// `$HOME` is unset).
    pub fn known_hosts_path(&self) -> Option<PathBuf> {
        self.known_hosts.clone().or_else(|| {
            std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| Path::new(&h).join(".ssh/known_hosts"))
        })
    }

    /// Checks the options without connecting.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidConfig(format!("SSH: {what}")));
        if self.host.trim().is_empty() {
            return bad("the host is empty");
        }
        if self.username.is_empty() {
            return bad("a user name is needed");
        }
        if self.port == 0 {
            return bad("port 0");
        }
        if self.subsystem.is_empty() {
            return bad("the subsystem name is empty");
        }
        if self.connect_timeout.is_zero() {
            return bad("the connect timeout is zero");
        }
        if self.keepalive_interval.is_zero() {
            return bad("the keepalive interval is zero");
        }
        if let SshAuth::KeyFile { path, .. } = &self.auth
            && path.as_os_str().is_empty()
        {
            return bad("the key file path is empty");
        }
        Ok(())
    }
}

/// Whether the host key was known or accepted by policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKeyStatus {
    /// `known_hosts` records it for the host.
    Known,
    /// It was unknown and accepted under [`HostKeyPolicy::AcceptUnknown`]; `recorded` tells
    /// whether it was appended to the `known_hosts` file.
    AcceptedUnknown {
        /// Whether the key is now in the file.
        recorded: bool,
    },
}

impl HostKeyStatus {
    /// `known` or `accepted-unknown`.
    pub fn name(self) -> &'static str {
        match self {
            HostKeyStatus::Known => "known",
            HostKeyStatus::AcceptedUnknown { .. } => "accepted-unknown",
        }
    }
}

/// What an SSH connection was: the server's identity and how we logged on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SshInfo {
    /// The `host:port` connected to.
    pub address: String,
    /// The user logged on.
    pub user: String,
    /// How (`publickey`, `password`, `agent`).
    pub auth_method: &'static str,
    /// The host key's type (`ssh-ed25519`, `ssh-rsa`, ...).
    pub host_key_algorithm: String,
    /// The host key's fingerprint as OpenSSH prints it: `SHA256:` and unpadded base64.
    pub host_key_sha256: String,
    /// Whether the key was known or accepted by policy.
    pub host_key_status: HostKeyStatus,
    /// The server's identification line (`SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3`); server
    /// text, escape it before a terminal.
    pub server_version: String,
    /// The server's pre-logon banner (sshd's `Banner`), when it sent one; server text.
    pub banner: Option<String>,
    /// The subsystem started.
    pub subsystem: String,
    /// The proxy the connection went through (its URL without credentials), if any.
    pub proxy: Option<String>,
}

/// Connects, checks the host key, logs on and starts the subsystem, all within
/// `opts.connect_timeout`. The audit event `connect` names the transport, user, host and host key.
///
/// Errors: [`Error::Connect`] (nothing accepted the connection, or not in time),
/// [`Error::HostKey`] (kind `Policy`), [`Error::Authentication`] (mechanism `ssh-publickey`,
/// `ssh-password` or `ssh-agent`; the message names the methods the server accepts),
/// [`Error::SubsystemRefused`], [`Error::Timeout`] (the server stalled after connecting),
/// [`Error::Transport`] (the SSH exchange failed), [`Error::Protocol`] (more than 1 MiB of channel
/// data before the answer to the subsystem request), [`Error::InvalidConfig`] (unusable options,
/// an unreadable key file or `known_hosts`).
pub async fn open_subsystem(opts: &SshOptions) -> Result<(SshStream, SshInfo)> {
    opts.validate()?;
    let address = opts.address();
    let phase = AtomicU8::new(Phase::Tcp as u8);
    match tokio::time::timeout(opts.connect_timeout, establish(opts, &address, &phase)).await {
        Ok(result) => result,
        Err(_) => {
            let secs = opts.connect_timeout.as_secs_f64();
            match Phase::from(phase.load(Ordering::Relaxed)) {
                Phase::Tcp if opts.proxy.is_some() => Err(Error::Proxy {
                    proxy: opts.proxy.as_ref().map(crate::proxy::Proxy::url).unwrap_or_default(),
                    failure: crate::proxy::ProxyFailure::Timeout { millis: opts.connect_timeout.as_millis() as u64 },
                }),
                Phase::Tcp => Err(Error::Connect {
                    address,
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                }),
                p => Err(Error::Timeout(format!(
                    "SSH to {address}: no session within the {secs} s connect timeout (it stalled during {})",
                    p.name()
                ))),
            }
        }
    }
}

#[derive(Clone, Copy)]
#[repr(u8)]
enum Phase {
    Tcp,
    Handshake,
    Logon,
    Subsystem,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Tcp => "the TCP connect",
            Phase::Handshake => "the SSH handshake",
            Phase::Logon => "the logon",
            Phase::Subsystem => "the subsystem's start",
        }
    }
}

impl From<u8> for Phase {
    fn from(v: u8) -> Self {
        match v {
            0 => Phase::Tcp,
            1 => Phase::Handshake,
            2 => Phase::Logon,
            _ => Phase::Subsystem,
        }
    }
}

async fn establish(opts: &SshOptions, address: &str, phase: &AtomicU8) -> Result<(SshStream, SshInfo)> {
    let known_path = opts.known_hosts_path();
    let known = KnownHosts::load(known_path.as_deref()).await?;
    let name = known_hosts::lookup_name(&opts.host, opts.port);
    let preferred_types = known.recorded_types(&name);

    let tcp = tcp_connect(opts, address).await?;
    phase.store(Phase::Handshake as u8, Ordering::Relaxed);
    let server_id = Arc::new(OnceLock::new());
    let stream = IdCapture { inner: tcp, id: server_id.clone(), head: Vec::new(), done: false };
    let shared = Arc::new(Mutex::new(Checked::default()));
    let verifier = Verifier { known, name: name.clone(), policy: opts.host_key_policy, shared: shared.clone() };
    let connected = client::connect_stream(Arc::new(client_config(opts, &preferred_types)), stream, verifier).await;
    let checked = std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()));
    let mut session = match (connected, checked.refusal) {
        (_, Some(refusal)) => return Err(Error::HostKey(refusal)),
        (Ok(session), None) => session,
        (Err(e), None) => return Err(ssh_failure(address, "the SSH handshake", &e)),
    };
    let Some(key) = checked.accepted else {
        return Err(Error::protocol(format!("SSH to {address}: the session started without a host key check")));
    };
    let host_key_status = match key.status {
        HostKeyStatus::Known => HostKeyStatus::Known,
        HostKeyStatus::AcceptedUnknown { .. } => {
            accept_unknown(opts, address, &name, &key, known_path.as_deref(), checked.cert_authorities).await?
        }
    };

    phase.store(Phase::Logon as u8, Ordering::Relaxed);
    logon(opts, address, &mut session).await?;
    // The banner comes during the logon.
    let banner = shared.lock().unwrap_or_else(|e| e.into_inner()).banner.take();

    phase.store(Phase::Subsystem as u8, Ordering::Relaxed);
    let mut channel =
        session.channel_open_session().await.map_err(|e| ssh_failure(address, "opening a session channel", &e))?;
    channel
        .request_subsystem(true, opts.subsystem.as_str())
        .await
        .map_err(|e| ssh_failure(address, "the subsystem request", &e))?;
    let refused = || Error::SubsystemRefused { address: address.to_owned(), subsystem: opts.subsystem.clone() };
    let mut early = Early::default();
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => break,
            Some(ChannelMsg::Failure) | Some(ChannelMsg::Close) | Some(ChannelMsg::Eof) | None => return Err(refused()),
            Some(ChannelMsg::Data { data }) => early.hold(&data, address)?,
            Some(_) => {}
        }
    }

    let info = SshInfo {
        address: address.to_owned(),
        user: opts.username.clone(),
        auth_method: opts.auth.method(),
        host_key_algorithm: key.algorithm,
        host_key_sha256: key.fingerprint,
        host_key_status,
        server_version: server_id.get().cloned().unwrap_or_default(),
        banner,
        subsystem: opts.subsystem.clone(),
        proxy: opts.proxy.as_ref().map(crate::proxy::Proxy::url),
    };
    tracing::info!(
        target: "psremote::audit",
        event = "connect",
        transport = "ssh",
        endpoint = %info.address,
        user = %info.user,
        auth = info.auth_method,
        host_key_algorithm = %info.host_key_algorithm,
        host_key_sha256 = %info.host_key_sha256,
        host_key = info.host_key_status.name(),
        subsystem = %info.subsystem,
        proxy = info.proxy.as_deref(),
        server_version = %crate::text::printable(&info.server_version),
        "connected over SSH"
    );
    let (read, write) = channel.split();
    Ok((SshStream::start(read, write, session, early.chunks), info))
}

async fn tcp_connect(opts: &SshOptions, address: &str) -> Result<tokio::net::TcpStream> {
    let host = opts.host.trim_start_matches('[').trim_end_matches(']');
    let connect_error = |source| Error::Connect { address: address.to_owned(), source };
    if let Some(proxy) = &opts.proxy {
        let tcp = super::tunnel::through(proxy, host, opts.port).await?;
        tcp.set_nodelay(true).map_err(connect_error)?;
        return Ok(tcp);
    }
    let mut last = None;
    for addr in tokio::net::lookup_host((host, opts.port)).await.map_err(connect_error)? {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => {
                // PSRP over SSH is request and answer: Nagle's delay would hold each request.
                tcp.set_nodelay(true).map_err(connect_error)?;
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(connect_error(
        last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolved to no address")),
    ))
}

fn client_config(opts: &SshOptions, preferred_types: &[String]) -> client::Config {
    let mut config = client::Config {
        client_id: russh::SshId::Standard(format!("SSH-2.0-psremote_{}", env!("CARGO_PKG_VERSION")).into()),
        // A quiet pool is fine, a dead server is not: a keepalive after each quiet interval
        // (answered by any live sshd), the connection given up after four unanswered ones, or
        // after a minute (or the connect timeout, or five intervals) without a byte from the server.
        keepalive_interval: Some(opts.keepalive_interval),
        keepalive_max: 4,
        inactivity_timeout: Some(
            opts.connect_timeout.max(Duration::from_secs(60)).max(opts.keepalive_interval.saturating_mul(5)),
        ),
        ..Default::default()
    };
    // Host key algorithms of the recorded keys first (as ssh orders them), so that a server
    // with several host keys shows the one we can check; the others stay, so a server that
    // now has only another key shows it and is refused as changed rather than failing to agree.
    let family = |a: &Algorithm| if a.clone().is_rsa() { "ssh-rsa".to_owned() } else { a.as_str().to_owned() };
    let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) =
        config.preferred.key.iter().cloned().partition(|a| preferred_types.contains(&family(a)));
    first.extend(rest);
    config.preferred.key = first.into();
    config
}

/// The host key that passed, and what the handler saw.
#[derive(Debug, Default)]
struct Checked {
    accepted: Option<AcceptedKey>,
    refusal: Option<Box<HostKeyError>>,
    cert_authorities: bool,
    banner: Option<String>,
}

#[derive(Debug)]
struct AcceptedKey {
    algorithm: String,
    fingerprint: String,
    blob: Vec<u8>,
    status: HostKeyStatus,
}

/// The russh handler: checks the host key against `known_hosts` under the policy, and keeps the
/// server's banner.
struct Verifier {
    known: KnownHosts,
    name: String,
    policy: HostKeyPolicy,
    shared: Arc<Mutex<Checked>>,
}

impl Verifier {
    fn decide(&self, key: &russh::keys::PublicKey) -> Result<AcceptedKey, Box<HostKeyError>> {
        let blob = key.to_bytes().unwrap_or_default();
        let algorithm = known_hosts::blob_type(&blob).map(str::to_owned).unwrap_or_else(|| key.algorithm().to_string());
        let fingerprint = known_hosts::fingerprint(&blob);
        let refuse = |problem, recorded| {
            Box::new(HostKeyError {
                problem,
                host: self.name.clone(),
                algorithm: algorithm.clone(),
                fingerprint: fingerprint.clone(),
                known_hosts: self.known.path().map(|p| p.display().to_string()),
                recorded,
            })
        };
        let status = match self.known.check(&self.name, &blob) {
            Verdict::Known(_) => HostKeyStatus::Known,
            Verdict::Unknown { cert_authorities } => {
                self.shared.lock().unwrap_or_else(|e| e.into_inner()).cert_authorities = cert_authorities;
                match self.policy {
                    HostKeyPolicy::Strict => return Err(refuse(HostKeyProblem::Unknown, Vec::new())),
                    HostKeyPolicy::AcceptUnknown => HostKeyStatus::AcceptedUnknown { recorded: false },
                }
            }
            Verdict::Changed(recorded) => return Err(refuse(HostKeyProblem::Changed, recorded)),
            Verdict::Revoked(entry) => return Err(refuse(HostKeyProblem::Revoked, vec![entry])),
        };
        Ok(AcceptedKey { algorithm, fingerprint, blob, status })
    }
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        // Host certificates are not negotiated (no certificate algorithm is offered), so this is
        // a plain key; a certificate would be judged by its key alone.
        let decision = self.decide(&key.public_key());
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        match decision {
            Ok(accepted) => {
                shared.accepted = Some(accepted);
                Ok(true)
            }
            Err(refusal) => {
                shared.refusal = Some(refusal);
                Ok(false)
            }
        }
    }

    async fn auth_banner(&mut self, banner: &str, _session: &mut client::Session) -> Result<(), Self::Error> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        keep_banner(&mut shared.banner, banner);
        Ok(())
    }
}

/// The most banner text kept from a server, in bytes.
const BANNER_LIMIT: usize = 16 * 1024;

/// The most channel data held while the server has not answered the subsystem request.
const EARLY_LIMIT: usize = 1024 * 1024;

/// Adds one USERAUTH_BANNER message to the banner kept so far: its first 4096 characters, as
/// far as the total stays within [`BANNER_LIMIT`] bytes; what comes after that is ignored.
fn keep_banner(kept: &mut Option<String>, banner: &str) {
    let mut room = BANNER_LIMIT.saturating_sub(kept.as_ref().map_or(0, String::len));
    let piece: String = banner
        .chars()
        .take(4096)
        .take_while(|c| match room.checked_sub(c.len_utf8()) {
            Some(left) => {
                room = left;
                true
            }
            None => false,
        })
        .collect();
    if !piece.is_empty() || kept.is_none() {
        kept.get_or_insert_with(String::new).push_str(&piece);
    }
}

/// Channel data the server sent before it answered the subsystem request, for the stream.
#[derive(Default)]
struct Early {
    chunks: Vec<Bytes>,
    held: usize,
}

impl Early {
    /// Keeps `data`; past [`EARLY_LIMIT`] bytes the server is at fault (russh widens the window as
    /// data comes, so nothing else would stop it before the connect timeout).
    fn hold(&mut self, data: &[u8], address: &str) -> Result<()> {
        if data.len() > EARLY_LIMIT - self.held {
            return Err(Error::protocol(format!(
                "SSH to {address}: the server sent more than {} KiB on the channel before it answered the \
                 subsystem request",
                EARLY_LIMIT / 1024
            )));
        }
        self.held += data.len();
        self.chunks.push(Bytes::copy_from_slice(data));
        Ok(())
    }
}

/// Records an unknown key accepted by policy, and warns; unless, read again under the file's
/// lock, `known_hosts` now records a key for the host: the same key is known, another is
/// refused as changed.
async fn accept_unknown(
    opts: &SshOptions,
    address: &str,
    name: &str,
    key: &AcceptedKey,
    known_path: Option<&Path>,
    cert_authorities: bool,
) -> Result<HostKeyStatus> {
    let written = match (known_path, known_hosts::entry_line(name, &key.blob)) {
        (Some(path), Some(line)) => {
            // Other connections of this process may have recorded a key for the host since this
            // one read the file: it is read again under the file's lock, and a key recorded
            // meanwhile decides as it would have at the handshake.
            let _lock = known_hosts::lock(path).await;
            let now = KnownHosts::load(Some(path)).await?;
            let refuse = |problem, recorded| {
                Err(Error::HostKey(Box::new(HostKeyError {
                    problem,
                    host: name.to_owned(),
                    algorithm: key.algorithm.clone(),
                    fingerprint: key.fingerprint.clone(),
                    known_hosts: Some(path.display().to_string()),
                    recorded,
                })))
            };
            match now.check(name, &key.blob) {
                Verdict::Known(_) => return Ok(HostKeyStatus::Known),
                Verdict::Changed(recorded) => return refuse(HostKeyProblem::Changed, recorded),
                Verdict::Revoked(entry) => return refuse(HostKeyProblem::Revoked, vec![entry]),
                Verdict::Unknown { .. } => match known_hosts::append(path, &line).await {
                    Ok(()) => Ok(path.display().to_string()),
                    Err(e) => Err(format!("could not be added to {}: {e}", path.display())),
                },
            }
        }
        (None, _) => Err("was not recorded: no known_hosts file ($HOME is unset)".to_owned()),
        (_, None) => Err("was not recorded: the key is malformed".to_owned()),
    };
    tracing::warn!(
        target: "psremote::audit",
        event = "host_key_accepted",
        transport = "ssh",
        endpoint = %address,
        user = %opts.username,
        host_key_algorithm = %key.algorithm,
        host_key_sha256 = %key.fingerprint,
        recorded_in = written.as_deref().ok(),
        cert_authorities_ignored = cert_authorities,
        "accepted an unknown SSH host key by configuration (HostKeyPolicy::AcceptUnknown): the server's identity \
         was not verified; {}",
        match &written {
            Ok(path) => format!("the key was added to {path} and is checked from now on"),
            Err(why) => format!("the key {why}"),
        }
    );
    Ok(HostKeyStatus::AcceptedUnknown { recorded: written.is_ok() })
}

async fn logon(opts: &SshOptions, address: &str, session: &mut Handle<Verifier>) -> Result<()> {
    let user = opts.username.as_str();
    let failed = |mechanism: &'static str, message: String| Error::Authentication { mechanism, message };
    let during = |e: russh::Error| ssh_failure(address, "the logon", &e);
    match &opts.auth {
        SshAuth::KeyFile { path, passphrase } => {
            let key = load_key(path, passphrase.as_deref().map(String::as_str))?;
            let fingerprint = key.public_key().fingerprint(russh::keys::HashAlg::Sha256).to_string();
            let hash = session.best_supported_rsa_hash().await.map_err(during)?.flatten();
            let result = session
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                .await
                .map_err(during)?;
            refused(result, || {
                format!("the SSH server {address} refused the key {} ({fingerprint}) for user {user:?}", path.display())
            })
            .map_err(|m| failed("ssh-publickey", m))
        }
        SshAuth::Password(password) => {
            // russh copies the password into a String of its own, which is not zeroized.
            let result = session.authenticate_password(user, password.as_str()).await.map_err(during)?;
            refused(result, || format!("the SSH server {address} refused the password for user {user:?}"))
                .map_err(|m| failed("ssh-password", m))
        }
        SshAuth::Agent { socket } => {
            let agent_error = |e: russh::keys::Error| failed("ssh-agent", format!("cannot use the SSH agent: {e}"));
            let mut agent = match socket {
                Some(path) => russh::keys::agent::client::AgentClient::connect_uds(path).await.map_err(agent_error)?,
                None => {
                    let Some(path) = std::env::var_os("SSH_AUTH_SOCK").filter(|p| !p.is_empty()) else {
                        return Err(failed("ssh-agent", "no SSH agent: SSH_AUTH_SOCK is not set".into()));
                    };
                    russh::keys::agent::client::AgentClient::connect_uds(path).await.map_err(agent_error)?
                }
            };
            let identities = agent.request_identities().await.map_err(agent_error)?;
            let hash = session.best_supported_rsa_hash().await.map_err(during)?.flatten();
            let mut last = None;
            let mut tried = 0;
            for identity in identities {
                let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = identity else { continue };
                tried += 1;
                let result = session
                    .authenticate_publickey_with(user, key, hash, &mut agent)
                    .await
                    .map_err(|e| failed("ssh-agent", format!("the SSH agent could not sign for {address}: {e}")))?;
                if result.success() {
                    return Ok(());
                }
                last = Some(result);
            }
            match last {
                None => Err(failed("ssh-agent", "the SSH agent holds no keys".into())),
                Some(result) => refused(result, || {
                    format!("the SSH server {address} refused all {tried} keys of the SSH agent for user {user:?}")
                })
                .map_err(|m| failed("ssh-agent", m)),
            }
        }
    }
}

/// `Ok` on success, else the message `what` completed with the methods the server accepts.
fn refused(result: AuthResult, what: impl FnOnce() -> String) -> Result<(), String> {
    match result {
        AuthResult::Success => Ok(()),
        AuthResult::Failure { remaining_methods, partial_success } => {
            let methods: Vec<&'static str> = remaining_methods.iter().map(<&'static str>::from).collect();
            let methods = if methods.is_empty() { "none".to_owned() } else { methods.join(", ") };
            let more = if partial_success {
                "; it accepted that but asks for a second factor, which psremote does not offer"
            } else {
                ""
            };
            Err(format!("{}{more} (the server accepts: {methods})", what()))
        }
    }
}

fn load_key(path: &Path, passphrase: Option<&str>) -> Result<russh::keys::PrivateKey> {
    let text = std::fs::read(path)
        .map_err(|e| Error::InvalidConfig(format!("cannot read the SSH key file {}: {e}", path.display())))?;
    let text = Zeroizing::new(String::from_utf8_lossy(&text).into_owned());
    russh::keys::decode_secret_key(&text, passphrase).map_err(|e| match (e, passphrase) {
        (russh::keys::Error::KeyIsEncrypted, _) => {
            Error::InvalidConfig(format!("the SSH key file {} is encrypted: give its passphrase", path.display()))
        }
        (_, Some(_)) => Error::Authentication {
            mechanism: "ssh-publickey",
            message: format!("cannot decrypt the SSH key file {} (a wrong passphrase?)", path.display()),
        },
        (e, None) => Error::InvalidConfig(format!("the file {} is not a usable SSH private key: {e}", path.display())),
    })
}

/// An SSH failure other than the host key, logon or subsystem: the connection broke or the
/// server broke the protocol.
fn ssh_failure(address: &str, during: &str, e: &russh::Error) -> Error {
    let message = match e {
        russh::Error::Disconnect | russh::Error::HUP => {
            format!("the SSH server {address} closed the connection during {during}")
        }
        russh::Error::IO(io) => format!("SSH to {address} failed during {during}: {io}"),
        russh::Error::NoCommonAlgo { kind, .. } => {
            format!("the SSH server {address} shares no {kind:?} algorithm with psremote")
        }
        other => format!("SSH to {address} failed during {during}: {other}"),
    };
    Error::Transport { message, status: None }
}

/// The TCP stream with the server's identification line noted on its way to russh (which does
/// not make it public): the lines before the first `SSH-` line are skipped, as RFC 4253 §4.2
/// allows them.
struct IdCapture {
    inner: tokio::net::TcpStream,
    id: Arc<OnceLock<String>>,
    head: Vec<u8>,
    done: bool,
}

impl IdCapture {
    fn note(&mut self, data: &[u8]) {
        self.head.extend_from_slice(data);
        for line in self.head.split_inclusive(|&b| b == b'\n').filter(|l| l.ends_with(b"\n")) {
            if line.starts_with(b"SSH-") {
                let text = String::from_utf8_lossy(line);
                let _ = self.id.set(text.trim_end_matches(['\r', '\n']).chars().take(255).collect());
                self.done = true;
                break;
            }
        }
        if self.done || self.head.len() > 8192 {
            self.done = true;
            self.head = Vec::new();
        }
    }
}

impl AsyncRead for IdCapture {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.done && matches!(polled, std::task::Poll::Ready(Ok(()))) {
            let fresh = buf.filled()[before..].to_vec();
            this.note(&fresh);
        }
        polled
    }
}

impl AsyncWrite for IdCapture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug() {
        let opts = SshOptions::new("h", "u", SshAuth::password("hunter2-secret"));
        assert!(!format!("{opts:?}").contains("hunter2"));
        let key = SshAuth::key_file("/k", Some("passphrase-secret"));
        let text = format!("{key:?}");
        assert!(!text.contains("passphrase-secret") && text.contains("redacted"), "{text}");
    }

    #[test]
    fn addresses_and_checks() {
        let mut opts = SshOptions::new("::1", "u", SshAuth::agent());
        assert_eq!(opts.address(), "[::1]:22");
        opts.host = "web1".into();
        opts.port = 2222;
        assert_eq!(opts.address(), "web1:2222");
        assert!(opts.validate().is_ok());
        opts.username.clear();
        assert!(matches!(opts.validate(), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn recorded_key_types_come_first() {
        let opts = SshOptions::new("h", "u", SshAuth::agent());
        let config = client_config(&opts, &["ssh-rsa".to_owned()]);
        assert!(config.preferred.key[0].clone().is_rsa(), "{:?}", config.preferred.key);
        assert!(config.preferred.key.contains(&Algorithm::Ed25519));
        let config = client_config(&opts, &[]);
        assert_eq!(config.preferred.key, client::Config::default().preferred.key);
    }

    #[test]
    fn identification_line_after_other_lines() {
        // IdCapture::note is all that is tested here; the stream itself is exercised against sshd.
        let id = Arc::new(OnceLock::new());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let mut cap = IdCapture { inner: tcp, id: id.clone(), head: Vec::new(), done: false };
            cap.note(b"hello there\r\nSSH-2.0-Open");
            assert!(id.get().is_none());
            cap.note(b"SSH_9.2p1 Debian\r\n\0\0\0binary");
            assert!(cap.done);
        });
        assert_eq!(id.get().map(String::as_str), Some("SSH-2.0-OpenSSH_9.2p1 Debian"));
    }

    #[test]
    fn many_banners_are_kept_to_a_total() {
        // OpenSSH sends one banner per connection, so a server sending many is tested here.
        let mut kept = None;
        keep_banner(&mut kept, "welcome\n");
        assert_eq!(kept.as_deref(), Some("welcome\n"));
        let long = "é".repeat(10_000);
        keep_banner(&mut kept, &long);
        assert_eq!(kept.as_ref().unwrap().chars().count(), 8 + 4096, "one banner is cut to 4096 characters");
        for _ in 0..1000 {
            keep_banner(&mut kept, &long);
        }
        let kept = kept.unwrap();
        assert!(kept.len() <= BANNER_LIMIT, "{} bytes kept", kept.len());
        assert!(kept.len() > BANNER_LIMIT - 4, "the banner is filled up to the limit: {} bytes", kept.len());
        assert!(kept.starts_with("welcome\n"));
    }

    #[test]
    fn data_before_the_subsystem_answer_is_capped() {
        // OpenSSH answers the subsystem request before it forwards the program's output, so a
        // server flooding the channel before its answer is tested here.
        let mut early = Early::default();
        early.hold(b"early bytes", "srv:22").unwrap();
        let chunk = vec![7u8; 32 * 1024];
        let mut refused = None;
        for _ in 0..1000 {
            if let Err(e) = early.hold(&chunk, "srv:22") {
                refused = Some(e);
                break;
            }
        }
        let err = refused.expect("32 MB held before the subsystem's answer");
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
        assert!(err.to_string().contains("srv:22"), "{err}");
        let held: usize = early.chunks.iter().map(Bytes::len).sum();
        assert!(held <= EARLY_LIMIT, "{held} bytes held");
        assert_eq!(&early.chunks[0][..], b"early bytes");
    }
}
