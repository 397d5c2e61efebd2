//! The data of an SSH host key refused by the `known_hosts` check ([`crate::Error::HostKey`]):
//! which host, which key the server offered, what the file records, and why that is not enough.

use std::fmt;

/// Why a host key was refused; stable across releases and mapped by the bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKeyProblem {
    /// `known_hosts` records no key for the host (refused under the strict policy only).
    Unknown,
    /// `known_hosts` records other keys for the host, of any algorithm: refused under every
    /// policy, since this is what an attacker in the middle looks like.
    Changed,
    /// The key is marked `@revoked` in `known_hosts`: refused under every policy.
    Revoked,
}

impl HostKeyProblem {
    /// `unknown`, `changed` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            HostKeyProblem::Unknown => "unknown",
            HostKeyProblem::Changed => "changed",
            HostKeyProblem::Revoked => "revoked",
        }
    }
}

/// A key that `known_hosts` records for the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedHostKey {
    /// The key type (`ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`, ...).
    pub algorithm: String,
    /// OpenSSH's fingerprint, `SHA256:` and the unpadded base64 of the key's SHA-256.
    pub fingerprint: String,
    /// The line of `known_hosts` it is on (from 1).
    pub line: usize,
}

/// An SSH server's host key that the `known_hosts` check refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyError {
    /// Why the key was refused.
    pub problem: HostKeyProblem,
    /// The name the key was looked up under: `host`, or `[host]:port` for another port than 22.
    pub host: String,
    /// The type of the key the server offered.
    pub algorithm: String,
    /// The fingerprint of the key the server offered (`SHA256:...`).
    pub fingerprint: String,
    /// The `known_hosts` file consulted (`None`: no file, so nothing is known).
    pub known_hosts: Option<String>,
    /// For [`HostKeyProblem::Changed`], the keys the file records for the host; for
    /// [`HostKeyProblem::Revoked`], the `@revoked` entry.
    pub recorded: Vec<RecordedHostKey>,
}

impl fmt::Display for HostKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.known_hosts.as_deref().unwrap_or("(no known_hosts file)");
        let offered = format!("{} {}", self.algorithm, self.fingerprint);
        match self.problem {
            HostKeyProblem::Unknown => write!(
                f,
                "the SSH host key of {} is not in {file}: the server offers {offered}; after checking that \
                 fingerprint with the server's administrator, add the key to the file (ssh-keyscan, or one \
                 ssh logon that accepts it) or connect once accepting unknown host keys (HostKeyPolicy::\
                 AcceptUnknown, accept_unknown_host_key=True), which records it",
                self.host
            ),
            HostKeyProblem::Changed => {
                write!(
                    f,
                    "the SSH host key of {} has CHANGED: the server offers {offered}, but {file} records ",
                    self.host
                )?;
                for (i, key) in self.recorded.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{} {} (line {})", key.algorithm, key.fingerprint, key.line)?;
                }
                write!(
                    f,
                    "; someone may be intercepting the connection, or the server was reinstalled; refused \
                     whatever the host key policy; once the new key is confirmed, remove the old entry \
                     (ssh-keygen -R {} -f {file}) and connect again",
                    self.host
                )
            }
            HostKeyProblem::Revoked => {
                write!(f, "the SSH host key of {} ({offered}) is marked @revoked in {file}", self.host)?;
                if let Some(key) = self.recorded.first() {
                    write!(f, " (line {})", key.line)?;
                }
                write!(f, "; refused whatever the host key policy")
            }
        }
    }
}
