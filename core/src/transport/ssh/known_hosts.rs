//! OpenSSH `known_hosts` files, read and matched here rather than by russh's helper, which
//! treats a host recorded with a key of another algorithm as unknown (so a changed key could be
//! accepted under a trust-on-first-use policy), splits on single spaces and knows no wildcards.
//!
//! The format is sshd(8)'s "SSH_KNOWN_HOSTS FILE FORMAT": `[marker] patterns keytype base64 [comment]`
//! with `#` comments. Patterns are a comma list of host names, `[host]:port` for ports other
//! than 22, `*` and `?` wildcards and `!` negations, or one hashed entry `|1|salt|hmac` (HMAC-SHA1
//! of the name keyed by the salt, as `HashKnownHosts` writes it). `@revoked` entries refuse their
//! key; `@cert-authority` entries are not used (host certificates are not negotiated) and are
//! named in the refusal of an unknown key. Lines that cannot be read are skipped, as ssh does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::host_key_error::RecordedHostKey;

/// The name a host's keys are recorded under: the host in lower case for port 22, else
/// `[host]:port` (OpenSSH's `put_host_port`). An IPv6 address given in brackets is named
/// without them, as OpenSSH names it (`::1`, `[::1]:2222`).
pub(crate) fn lookup_name(host: &str, port: u16) -> String {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).to_ascii_lowercase();
    if port == 22 { host } else { format!("[{host}]:{port}") }
}

/// OpenSSH's fingerprint of a public key blob: `SHA256:` and the unpadded base64 of its SHA-256.
pub(crate) fn fingerprint(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

/// The key type a public key blob names (its first SSH string), when it is well formed.
pub(crate) fn blob_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4usize.checked_add(len)?)?;
    std::str::from_utf8(name).ok().filter(|n| !n.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug)]
struct Entry {
    line: usize,
    marker: Marker,
    hosts: String,
    key_type: String,
    blob: Vec<u8>,
}

impl Entry {
    fn recorded(&self) -> RecordedHostKey {
        RecordedHostKey { algorithm: self.key_type.clone(), fingerprint: fingerprint(&self.blob), line: self.line }
    }
}

/// What the file says about an offered key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The key is recorded for the host (on this line).
    Known(usize),
    /// Nothing is recorded for the host; `cert_authorities` tells whether `@cert-authority`
    /// entries match it (they are not used).
    Unknown { cert_authorities: bool },
    /// Other keys are recorded for the host.
    Changed(Vec<RecordedHostKey>),
    /// The key is revoked for the host.
    Revoked(RecordedHostKey),
}

/// A parsed `known_hosts` file (or none).
#[derive(Debug, Default)]
pub(crate) struct KnownHosts {
    path: Option<PathBuf>,
    entries: Vec<Entry>,
}

impl KnownHosts {
    /// Reads `path`; a file that does not exist is empty (every key unknown), one that cannot be
    /// read is a configuration error.
    pub(crate) async fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else { return Ok(Self::default()) };
        match tokio::fs::read(path).await {
            Ok(bytes) => Ok(Self::parse(Some(path.to_path_buf()), &String::from_utf8_lossy(&bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::parse(Some(path.to_path_buf()), "")),
            Err(e) => Err(Error::InvalidConfig(format!("cannot read the known_hosts file {}: {e}", path.display()))),
        }
    }

    pub(crate) fn parse(path: Option<PathBuf>, text: &str) -> Self {
        let entries = text.lines().enumerate().filter_map(|(i, line)| parse_line(i + 1, line)).collect();
        Self { path, entries }
    }

    /// The file, for messages.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn for_host<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| hosts_match(&e.hosts, name))
    }

    /// The key types recorded for `name` (usable keys only), in file order without repeats: the
    /// host key algorithms to prefer, as ssh does, so that a server with several keys shows the
    /// one recorded.
    pub(crate) fn recorded_types(&self, name: &str) -> Vec<String> {
        let mut types: Vec<String> = Vec::new();
        for e in self.for_host(name).filter(|e| e.marker == Marker::None) {
            if !types.contains(&e.key_type) {
                types.push(e.key_type.clone());
            }
        }
        types
    }

    /// What the file says about `blob` offered by `name`.
    pub(crate) fn check(&self, name: &str, blob: &[u8]) -> Verdict {
        if let Some(e) = self.for_host(name).find(|e| e.marker == Marker::Revoked && e.blob == blob) {
            return Verdict::Revoked(e.recorded());
        }
        let usable: Vec<&Entry> = self.for_host(name).filter(|e| e.marker == Marker::None).collect();
        if let Some(e) = usable.iter().find(|e| e.blob == blob) {
            return Verdict::Known(e.line);
        }
        if usable.is_empty() {
            let cert_authorities = self.for_host(name).any(|e| e.marker == Marker::CertAuthority);
            return Verdict::Unknown { cert_authorities };
        }
        Verdict::Changed(usable.iter().map(|e| e.recorded()).collect())
    }
}

/// The line ssh writes for a key: `name keytype base64`.
pub(crate) fn entry_line(name: &str, blob: &[u8]) -> Option<String> {
    Some(format!("{name} {} {}\n", blob_type(blob)?, STANDARD.encode(blob)))
}

/// Holds this process's lock on the `known_hosts` file at `path` (one per path), so that
/// connections accepting an unknown key check and append one at a time.
pub(crate) async fn lock(path: &Path) -> tokio::sync::OwnedMutexGuard<()> {
    type Locks = Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let lock =
        LOCKS.get_or_init(Locks::default).lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone();
    lock.lock_owned().await
}

/// Appends `line` to the file (created 0600, its directory 0700, as ssh does), on a line of its
/// own.
pub(crate) async fn append(path: &Path, line: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = tokio::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(dir).await?;
    }
    let mut file = tokio::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).await?;
    let needs_newline = match tokio::fs::read(path).await {
        Ok(existing) => existing.last().is_some_and(|&b| b != b'\n'),
        Err(_) => false,
    };
    let text = if needs_newline { format!("\n{line}") } else { line.to_owned() };
    file.write_all(text.as_bytes()).await?;
    file.flush().await
}

fn parse_line(number: usize, line: &str) -> Option<Entry> {
    let mut fields = line.split_ascii_whitespace();
    let mut first = fields.next()?;
    if first.starts_with('#') {
        return None;
    }
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        m if m.starts_with('@') => return None,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next()?;
    }
    let key_type = fields.next()?;
    let blob = STANDARD.decode(fields.next()?).ok()?;
    // A line whose key type and key disagree is damaged; ssh skips it too.
    if blob_type(&blob)? != key_type {
        return None;
    }
    Some(Entry { line: number, marker, hosts: first.to_owned(), key_type: key_type.to_owned(), blob })
}

/// Whether a host field matches `name` (already lower case): a hashed entry by its HMAC, else
/// a pattern list where any negated match excludes the line (OpenSSH's `match_hostname`).
fn hosts_match(hosts: &str, name: &str) -> bool {
    if let Some(hashed) = hosts.strip_prefix("|1|") {
        return hashed_match(hashed, name);
    }
    let mut matched = false;
    for pattern in hosts.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if wildcard_match(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

fn hashed_match(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else { return false };
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt) else { return false };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` (any run) and `?` (any one byte) glob matching, iterative with one backtrack point.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake key blob of `kind` (the type string, then some bytes).
    fn blob(kind: &str, fill: u8) -> Vec<u8> {
        let mut b = (kind.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind.as_bytes());
        b.extend_from_slice(&[0, 0, 0, 4, fill, fill, fill, fill]);
        b
    }

    fn line(hosts: &str, b: &[u8]) -> String {
        format!("{hosts} {} {}", blob_type(b).unwrap(), STANDARD.encode(b))
    }

    fn hashed(name: &str, salt: &[u8]) -> String {
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn names_and_fingerprints_follow_openssh() {
        assert_eq!(lookup_name("Server.Example", 22), "server.example");
        assert_eq!(lookup_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
        assert_eq!(lookup_name("::1", 2222), "[::1]:2222");
        // A bracketed IPv6 address (as SshOptions accepts it) is recorded as OpenSSH records it.
        assert_eq!(lookup_name("[::1]", 2222), "[::1]:2222");
        assert_eq!(lookup_name("[::1]", 22), "::1");
        assert_eq!(lookup_name("[FE80::1]", 22), "fe80::1");
        // core/tests/ssh.rs compares with ssh-keygen -l on real keys.
        let b = blob("ssh-ed25519", 7);
        let fp = fingerprint(&b);
        assert!(fp.starts_with("SHA256:") && !fp.ends_with('='), "{fp}");
        assert_eq!(STANDARD_NO_PAD.decode(&fp[7..]).unwrap(), Sha256::digest(&b).to_vec());
    }

    #[test]
    fn plain_patterns_ports_and_lists() {
        let ed = blob("ssh-ed25519", 1);
        let text = format!(
            "# comment\n\n{}\n{}\n{}\n",
            line("web1,web2", &ed),
            line("[10.0.0.5]:2222", &ed),
            line("*.lab.example,!bad.lab.example", &ed)
        );
        let k = KnownHosts::parse(None, &text);
        assert_eq!(k.check("web2", &ed), Verdict::Known(3));
        assert_eq!(k.check("[10.0.0.5]:2222", &ed), Verdict::Known(4));
        assert_eq!(k.check("10.0.0.5", &ed), Verdict::Unknown { cert_authorities: false });
        assert_eq!(k.check("a.lab.example", &ed), Verdict::Known(5));
        assert_eq!(k.check("bad.lab.example", &ed), Verdict::Unknown { cert_authorities: false });
        assert_eq!(k.check("web3", &ed), Verdict::Unknown { cert_authorities: false });
    }

    #[test]
    fn tabs_and_upper_case_patterns_match() {
        let ed = blob("ssh-ed25519", 1);
        let text = format!("WEB1\tssh-ed25519\t{}   a comment", STANDARD.encode(&ed));
        let k = KnownHosts::parse(None, &text);
        assert_eq!(k.check("web1", &ed), Verdict::Known(1));
    }

    #[test]
    fn hashed_entries_match_their_name_only() {
        let ed = blob("ssh-ed25519", 1);
        let text = format!(
            "{}\n{}\n",
            line(&hashed("[127.0.0.1]:2222", b"salt-one-2345678901"), &ed),
            line(&hashed("web1", b"salt-two-2345678901"), &ed)
        );
        let k = KnownHosts::parse(None, &text);
        assert_eq!(k.check("[127.0.0.1]:2222", &ed), Verdict::Known(1));
        assert_eq!(k.check("web1", &ed), Verdict::Known(2));
        assert_eq!(k.check("127.0.0.1", &ed), Verdict::Unknown { cert_authorities: false });
    }

    #[test]
    fn another_key_is_a_change_across_algorithms() {
        let rsa = blob("ssh-rsa", 2);
        let ed = blob("ssh-ed25519", 1);
        let ed_other = blob("ssh-ed25519", 9);
        let k = KnownHosts::parse(None, &line("host", &rsa));
        let Verdict::Changed(recorded) = k.check("host", &ed) else { panic!("not a change") };
        assert_eq!(
            recorded,
            vec![RecordedHostKey { algorithm: "ssh-rsa".into(), fingerprint: fingerprint(&rsa), line: 1 }]
        );
        // Several recorded keys: any one of them is enough, and the others are named on a change.
        let k = KnownHosts::parse(None, &format!("{}\n{}\n", line("host", &rsa), line("host", &ed)));
        assert_eq!(k.check("host", &ed), Verdict::Known(2));
        let Verdict::Changed(recorded) = k.check("host", &ed_other) else { panic!("not a change") };
        assert_eq!(recorded.len(), 2);
        assert_eq!(k.recorded_types("host"), vec!["ssh-rsa".to_string(), "ssh-ed25519".to_string()]);
    }

    #[test]
    fn markers_revoke_or_are_set_aside() {
        let ed = blob("ssh-ed25519", 1);
        let ca = blob("ssh-ed25519", 5);
        let text = format!(
            "@revoked * {}\n@cert-authority *.example {}\n@unknown-marker host {}\n",
            &line("", &ed)[1..],
            &line("", &ca)[1..],
            &line("", &ca)[1..]
        );
        let k = KnownHosts::parse(None, &text);
        let Verdict::Revoked(r) = k.check("any", &ed) else { panic!("not revoked") };
        assert_eq!(r.line, 1);
        assert_eq!(k.check("h.example", &blob("ssh-ed25519", 6)), Verdict::Unknown { cert_authorities: true });
        assert_eq!(k.check("host", &ca), Verdict::Unknown { cert_authorities: false });
        assert!(k.recorded_types("h.example").is_empty());
    }

    #[test]
    fn damaged_lines_are_skipped() {
        let ed = blob("ssh-ed25519", 1);
        let text = format!(
            "host ssh-ed25519 !!notbase64\nhost ssh-rsa {}\nhost\nhost ssh-ed25519\n{}\n",
            STANDARD.encode(&ed),
            line("host", &ed)
        );
        let k = KnownHosts::parse(None, &text);
        assert_eq!(k.check("host", &ed), Verdict::Known(5));
        assert_eq!(k.recorded_types("host"), vec!["ssh-ed25519".to_string()]);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*", b"anything"));
        assert!(wildcard_match(b"web?", b"web1"));
        assert!(!wildcard_match(b"web?", b"web12"));
        assert!(wildcard_match(b"*.example.*", b"a.example.org"));
        assert!(wildcard_match(b"[*]:2222", b"[10.1.1.1]:2222"));
        assert!(!wildcard_match(b"[*]:2222", b"[10.1.1.1]:22"));
        assert!(wildcard_match(b"a*b*c", b"aXXbYYc"));
        assert!(!wildcard_match(b"a*b*c", b"aXXbYY"));
        assert!(wildcard_match(b"", b""));
        assert!(!wildcard_match(b"", b"x"));
    }

    #[test]
    fn entry_lines_round_trip() {
        let ed = blob("ssh-ed25519", 3);
        let l = entry_line("[127.0.0.1]:2222", &ed).unwrap();
        assert!(l.ends_with('\n'));
        let k = KnownHosts::parse(None, &l);
        assert_eq!(k.check("[127.0.0.1]:2222", &ed), Verdict::Known(1));
        assert_eq!(entry_line("x", b"\0\0"), None);
    }
}
