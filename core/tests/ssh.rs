//! The SSH carrier (`transport::ssh`) against Debian's OpenSSH server, started by each test on
//! 127.0.0.1 with a throwaway host key, user keys and `authorized_keys` (`make ssh-deps` installs
//! openssh-server). The subsystems are small shell programs: `cat` for byte round trips, one that
//! notes its pid, one that writes to stderr and exits; the endpoint's out-of-process mode behind
//! sshd is the client's business, tested with it. Password logons use the local account
//! `psremote_testserver.sshd` keeps for them (`ensure_password_user`: created once, as root).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TempDir, block_on, capture::capture};
use psremote::transport::ssh::{HostKeyPolicy, HostKeyStatus, SshAuth, SshOptions, SshStream, open_subsystem};
use psremote::{Error, ErrorKind, HostKeyProblem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The local account for password logons and its password, from the test server's sshd fixture
/// (which creates the account on first use).
fn password_account() -> (String, String) {
    let out = run(Command::new(common::python_path())
        .args(["-c", "from psremote_testserver.sshd import ensure_password_user as e; print(*e(), sep='\\n')"]));
    let mut lines = out.lines();
    (lines.next().unwrap().to_owned(), lines.next().expect("a password").to_owned())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new key pair `dir/name` (and `.pub`), `kind` `ed25519` or `rsa`, optionally encrypted.
fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    run(Command::new("ssh-keygen").args(["-q", "-t", kind, "-N", passphrase, "-C", name, "-f"]).arg(&path));
    path
}

/// `ssh-keygen -l`'s SHA-256 fingerprint of a public key file: OpenSSH's own, to compare with.
fn openssh_fingerprint(public: &Path) -> String {
    let out = run(Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f"]).arg(public));
    out.split_whitespace().nth(1).expect("fingerprint field").to_owned()
}

fn public_line(key: &Path) -> String {
    let text = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// An sshd on 127.0.0.1 run in the foreground (`-D -e`) for one test, stopped on drop.
struct Sshd {
    child: Child,
    port: u16,
    dir: TempDir,
    host_key: PathBuf,
    user_key: PathBuf,
    log: mpsc::Receiver<String>,
}

impl Sshd {
    /// With the `powershell` subsystem running `cat`, plus `extra` subsystems.
    fn start() -> Self {
        Self::with_subsystems(&[("powershell", "/bin/cat")])
    }

    fn with_subsystems(subsystems: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("sshd");
        // /tmp folders are world-writable: sshd's StrictModes would refuse the keys in them.
        std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::create_dir_all("/run/sshd").expect("sshd's privilege separation directory");
        let host_key = keygen(&dir.0, "host_ed25519", "ed25519", "");
        let user_key = keygen(&dir.0, "user_ed25519", "ed25519", "");
        let authorized = dir.0.join("authorized_keys");
        std::fs::write(&authorized, std::fs::read(user_key.with_extension("pub")).unwrap()).unwrap();
        std::fs::write(dir.0.join("banner.txt"), "psremote test server banner\n").unwrap();
        let mut config = format!(
            "ListenAddress 127.0.0.1\nHostKey {host}\nPidFile none\nAuthorizedKeysFile {auth}\nPermitRootLogin yes\n\
             PubkeyAuthentication yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nLogLevel VERBOSE\nBanner {banner}\n",
            host = host_key.display(),
            auth = authorized.display(),
            banner = dir.0.join("banner.txt").display()
        );
        for (name, command) in subsystems {
            config.push_str(&format!("Subsystem {name} {command}\n"));
        }
        let config_path = dir.0.join("sshd_config");
        std::fs::write(&config_path, config).unwrap();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&config_path)
                .args(["-o", &format!("Port={port}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start /usr/sbin/sshd (make ssh-deps installs openssh-server)");
            let (tx, log) = mpsc::channel();
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            let ready = format!("Server listening on 127.0.0.1 port {port}.");
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut seen = Vec::new();
            while Instant::now() < deadline {
                match log.recv_timeout(Duration::from_millis(200)) {
                    Ok(line) if line.contains(&ready) => {
                        return Sshd { child, port, dir, host_key, user_key, log };
                    }
                    Ok(line) => seen.push(line),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            // Another process took the port between our probe and sshd's bind: try another.
            if seen.iter().any(|l| l.contains("Address already in use")) {
                continue;
            }
            panic!("sshd did not start: {}", seen.join("\n"));
        }
        panic!("sshd found no free port");
    }

    /// A known_hosts file holding `lines`.
    fn known_hosts(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.dir.0.join(name);
        std::fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        path
    }

    /// The known_hosts line OpenSSH writes for this server's host key.
    fn host_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, public_line(&self.host_key))
    }

    fn trusted_known_hosts(&self) -> PathBuf {
        self.known_hosts("known_hosts", &[self.host_line()])
    }

    fn host_fingerprint(&self) -> String {
        openssh_fingerprint(&self.host_key.with_extension("pub"))
    }

    /// Key logon as root with the authorized key, host key known.
    fn options(&self) -> SshOptions {
        let mut opts = SshOptions::new("127.0.0.1", "root", SshAuth::key_file(&self.user_key, None));
        opts.port = self.port;
        opts.known_hosts = Some(self.trusted_known_hosts());
        opts.connect_timeout = Duration::from_secs(20);
        opts
    }

    /// sshd's log so far.
    fn log(&self) -> String {
        self.log.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        common::stop_child(&mut self.child);
    }
}

fn connect(opts: &SshOptions) -> Result<(SshStream, psremote::transport::ssh::SshInfo), Error> {
    block_on(open_subsystem(opts))
}

/// Writes `data` and reads the same number of bytes back (the subsystem is `cat`), both at once
/// so that neither side's window fills.
async fn round_trip(stream: &mut SshStream, data: &[u8]) -> Vec<u8> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let write = async {
        wr.write_all(data).await.unwrap();
        wr.flush().await.unwrap();
    };
    let read = async {
        let mut back = vec![0u8; data.len()];
        rd.read_exact(&mut back).await.unwrap();
        back
    };
    tokio::join!(write, read).1
}

#[test]
fn key_logon_round_trip_and_audit() {
    let sshd = Sshd::start();
    let audit = capture();
    let (mut stream, info) = connect(&sshd.options()).expect("key logon");
    assert_eq!(info.user, "root");
    assert_eq!(info.auth_method, "publickey");
    assert_eq!(info.host_key_algorithm, "ssh-ed25519");
    assert_eq!(info.host_key_sha256, sshd.host_fingerprint(), "OpenSSH's fingerprint of the host key");
    assert_eq!(info.host_key_status, HostKeyStatus::Known);
    assert!(info.server_version.starts_with("SSH-2.0-OpenSSH_"), "{}", info.server_version);
    assert_eq!(info.banner.as_deref(), Some("psremote test server banner\n"));
    assert_eq!(info.subsystem, "powershell");

    // A line, then a megabyte (many packets, past the channel's window) through `cat`.
    let line = b"<Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'>AAE=</Data>\n";
    assert_eq!(block_on(round_trip(&mut stream, line)), line);
    let big: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(block_on(round_trip(&mut stream, &big)), big);
    drop(stream);

    let text = audit.text();
    let event = text
        .lines()
        .find(|l| l.contains("event=connect") && l.contains(&format!("endpoint=127.0.0.1:{}", sshd.port)))
        .unwrap_or_else(|| panic!("no connect event in {text}"));
    for want in ["transport=ssh", "user=root", "auth=publickey", "host_key=known", "subsystem=powershell"] {
        assert!(event.contains(want), "{want} missing in {event}");
    }
    assert!(event.contains(&format!("host_key_sha256={}", sshd.host_fingerprint())), "{event}");
    assert!(event.starts_with("INFO psremote::audit"), "{event}");
}

#[test]
fn password_logon() {
    let sshd = Sshd::start();
    let (user, password) = password_account();
    let log = capture();
    let mut opts = sshd.options();
    opts.username = user.clone();
    opts.auth = SshAuth::password(password.clone());
    let (mut stream, info) = connect(&opts).unwrap_or_else(|e| panic!("password logon as {user}: {e}\n{}", sshd.log()));
    assert_eq!((info.user.as_str(), info.auth_method), (user.as_str(), "password"));
    assert_eq!(block_on(round_trip(&mut stream, b"password works\n")), b"password works\n");
    drop(stream);
    assert!(!log.text().contains(&password), "the password is in a log record");
    assert!(!format!("{opts:?}").contains(&password));
}

#[test]
fn wrong_password_is_refused() {
    let sshd = Sshd::start();
    let (user, _) = password_account();
    let mut opts = sshd.options();
    opts.username = user;
    opts.auth = SshAuth::password("not-the-password");
    let err = connect(&opts).expect_err("a wrong password");
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(matches!(err, Error::Authentication { mechanism: "ssh-password", .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("refused the password") && text.contains("publickey"), "{text}");
    assert!(!text.contains("not-the-password") && !format!("{err:?}").contains("not-the-password"));
}

#[test]
fn wrong_key_is_refused_naming_the_methods() {
    let sshd = Sshd::start();
    let other = keygen(&sshd.dir.0, "other_ed25519", "ed25519", "");
    let mut opts = sshd.options();
    opts.auth = SshAuth::key_file(&other, None);
    let err = connect(&opts).expect_err("a key that is not authorized");
    assert!(matches!(err, Error::Authentication { mechanism: "ssh-publickey", .. }), "{err:?}");
    let text = err.to_string();
    let fingerprint = openssh_fingerprint(&other.with_extension("pub"));
    assert!(text.contains(&fingerprint), "the refused key is named: {text}");
    assert!(text.contains("the server accepts: publickey, password"), "{text}");
}

#[test]
fn encrypted_key_needs_its_passphrase() {
    let sshd = Sshd::start();
    let locked = keygen(&sshd.dir.0, "locked_ed25519", "ed25519", "key-passphrase-1");
    std::fs::write(sshd.dir.0.join("authorized_keys"), std::fs::read(locked.with_extension("pub")).unwrap()).unwrap();
    let mut opts = sshd.options();

    opts.auth = SshAuth::key_file(&locked, None);
    let err = connect(&opts).expect_err("no passphrase");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("encrypted: give its passphrase"), "{err}");

    opts.auth = SshAuth::key_file(&locked, Some("wrong-passphrase-2"));
    let err = connect(&opts).expect_err("wrong passphrase");
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong-passphrase-2"));

    opts.auth = SshAuth::key_file(&locked, Some("key-passphrase-1"));
    let (mut stream, _) = connect(&opts).expect("the right passphrase");
    assert_eq!(block_on(round_trip(&mut stream, b"unlocked\n")), b"unlocked\n");
}

#[test]
fn agent_logon() {
    let sshd = Sshd::start();
    let socket = sshd.dir.0.join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let mut tries = 0;
    while !socket.exists() {
        tries += 1;
        assert!(tries < 200, "ssh-agent made no socket");
        std::thread::sleep(Duration::from_millis(25));
    }
    // An unauthorized key first, so the logon has to go on to the next one.
    let other = keygen(&sshd.dir.0, "other_ed25519", "ed25519", "");
    for key in [&other, &sshd.user_key] {
        run(Command::new("ssh-add").arg("-q").arg(key).env("SSH_AUTH_SOCK", &socket));
    }
    let mut opts = sshd.options();
    opts.auth = SshAuth::Agent { socket: Some(socket.clone()) };
    let result = connect(&opts);

    // An agent without the authorized key: refused, the keys counted.
    run(Command::new("ssh-add")
        .arg("-q")
        .arg("-d")
        .arg(sshd.user_key.with_extension("pub"))
        .env("SSH_AUTH_SOCK", &socket));
    let refused = connect(&opts).map(|_| ());
    let _ = agent.kill();
    let _ = agent.wait();

    let (mut stream, info) = result.expect("agent logon");
    assert_eq!(info.auth_method, "agent");
    assert_eq!(block_on(round_trip(&mut stream, b"agent works\n")), b"agent works\n");
    let err = refused.expect_err("no authorized key in the agent");
    assert!(matches!(err, Error::Authentication { mechanism: "ssh-agent", .. }), "{err:?}");
    assert!(err.to_string().contains("refused all 1 keys of the SSH agent"), "{err}");
}

#[test]
fn unknown_host_key_is_refused_with_its_fingerprint() {
    let sshd = Sshd::start();
    let mut opts = sshd.options();
    opts.known_hosts = Some(sshd.known_hosts("empty_known_hosts", &[]));
    let err = connect(&opts).expect_err("unknown host key");
    assert_eq!(err.kind(), ErrorKind::Policy, "{err}");
    let hk = err.host_key().expect("host key data");
    assert_eq!(hk.problem, HostKeyProblem::Unknown);
    assert_eq!(hk.host, format!("[127.0.0.1]:{}", sshd.port));
    assert_eq!(hk.fingerprint, sshd.host_fingerprint());
    let text = err.to_string();
    assert!(text.contains(&sshd.host_fingerprint()) && text.contains("accept_unknown_host_key"), "{text}");
    // Refused before the logon: sshd saw no authentication attempt.
    assert!(!sshd.log().contains("Accepted publickey"));

    // A missing file is as empty.
    opts.known_hosts = Some(sshd.dir.0.join("no-such-file"));
    assert_eq!(connect(&opts).expect_err("no file").host_key().map(|h| h.problem), Some(HostKeyProblem::Unknown));
    // A line for the host on port 22 is not one for this port.
    opts.known_hosts = Some(sshd.known_hosts("port22", &[format!("127.0.0.1 {}", public_line(&sshd.host_key))]));
    assert_eq!(connect(&opts).expect_err("other port").host_key().map(|h| h.problem), Some(HostKeyProblem::Unknown));
}

#[test]
fn changed_host_key_is_refused_naming_both_fingerprints() {
    let sshd = Sshd::start();
    let old_ed = keygen(&sshd.dir.0, "old_ed25519", "ed25519", "");
    let old_rsa = keygen(&sshd.dir.0, "old_rsa", "rsa", "");
    let name = format!("[127.0.0.1]:{}", sshd.port);
    for (old, policy) in [
        (&old_ed, HostKeyPolicy::Strict),
        (&old_rsa, HostKeyPolicy::Strict),
        // Accepting unknown keys never accepts a changed one.
        (&old_ed, HostKeyPolicy::AcceptUnknown),
        (&old_rsa, HostKeyPolicy::AcceptUnknown),
    ] {
        let mut opts = sshd.options();
        let file =
            sshd.known_hosts("changed", &["# recorded before".to_string(), format!("{name} {}", public_line(old))]);
        opts.known_hosts = Some(file.clone());
        opts.host_key_policy = policy;
        let err = connect(&opts).expect_err("changed host key");
        assert_eq!(err.kind(), ErrorKind::Policy, "{err}");
        let hk = err.host_key().unwrap();
        assert_eq!(hk.problem, HostKeyProblem::Changed, "{err}");
        let recorded = openssh_fingerprint(&old.with_extension("pub"));
        assert_eq!(hk.recorded.len(), 1);
        assert_eq!((hk.recorded[0].fingerprint.as_str(), hk.recorded[0].line), (recorded.as_str(), 2));
        let text = err.to_string();
        assert!(
            text.contains("CHANGED") && text.contains(&recorded) && text.contains(&sshd.host_fingerprint()),
            "{text}"
        );
        // The file is left as it was.
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 2, "{policy:?}");
    }
}

#[test]
fn revoked_host_key_is_refused() {
    let sshd = Sshd::start();
    let mut opts = sshd.options();
    opts.known_hosts =
        Some(sshd.known_hosts("revoked", &[sshd.host_line(), format!("@revoked * {}", public_line(&sshd.host_key))]));
    opts.host_key_policy = HostKeyPolicy::AcceptUnknown;
    let err = connect(&opts).expect_err("revoked");
    assert_eq!(err.host_key().map(|h| h.problem), Some(HostKeyProblem::Revoked), "{err}");
}

#[test]
fn hashed_and_pattern_entries_written_by_openssh_match() {
    let sshd = Sshd::start();
    let mut opts = sshd.options();
    // ssh-keygen -H rewrites the file with HashKnownHosts' |1|salt|hmac names.
    let file = sshd.known_hosts("hashed", &[sshd.host_line()]);
    run(Command::new("ssh-keygen").arg("-q").arg("-H").arg("-f").arg(&file));
    assert!(std::fs::read_to_string(&file).unwrap().starts_with("|1|"));
    opts.known_hosts = Some(file);
    let (_, info) = connect(&opts).expect("hashed entry");
    assert_eq!(info.host_key_status, HostKeyStatus::Known);
    // ssh-keygen -F (OpenSSH's own lookup) finds the same entry as a wildcard line.
    let wild = sshd
        .known_hosts("wild", &[format!("other,[127.0.0.?]:{},!10.0.0.1 {}", sshd.port, public_line(&sshd.host_key))]);
    run(Command::new("ssh-keygen").arg("-F").arg(format!("[127.0.0.1]:{}", sshd.port)).arg("-f").arg(&wild));
    opts.known_hosts = Some(wild);
    assert!(connect(&opts).is_ok());
}

#[test]
fn accept_unknown_records_the_key_and_warns() {
    let sshd = Sshd::start();
    let audit = capture();
    let mut opts = sshd.options();
    let file = sshd.dir.0.join("new/known_hosts");
    opts.known_hosts = Some(file.clone());
    opts.host_key_policy = HostKeyPolicy::AcceptUnknown;
    let (mut stream, info) = connect(&opts).expect("accepted");
    assert_eq!(info.host_key_status, HostKeyStatus::AcceptedUnknown { recorded: true });
    assert_eq!(block_on(round_trip(&mut stream, b"tofu\n")), b"tofu\n");
    drop(stream);

    let text = audit.text();
    let endpoint = format!("endpoint=127.0.0.1:{}", sshd.port);
    let warning = text
        .lines()
        .find(|l| l.contains("event=host_key_accepted") && l.contains(&endpoint))
        .unwrap_or_else(|| panic!("no warning in {text}"));
    assert!(warning.starts_with("WARN psremote::audit"), "{warning}");
    assert!(warning.contains(&sshd.host_fingerprint()), "{warning}");
    let connect_event = text.lines().find(|l| l.contains("event=connect") && l.contains(&endpoint)).unwrap();
    assert!(connect_event.contains("host_key=accepted-unknown"), "{connect_event}");

    // The key is now recorded as OpenSSH records it (ssh-keygen -F finds it), and checked strictly.
    let recorded = std::fs::read_to_string(&file).unwrap();
    assert_eq!(recorded, format!("{}\n", sshd.host_line()));
    run(Command::new("ssh-keygen").arg("-F").arg(format!("[127.0.0.1]:{}", sshd.port)).arg("-f").arg(&file));
    opts.host_key_policy = HostKeyPolicy::Strict;
    let (_, info) = connect(&opts).expect("now known");
    assert_eq!(info.host_key_status, HostKeyStatus::Known);
}

/// A TCP forwarder on 127.0.0.1 that sends each connection to the next of `targets` in turn:
/// one host:port behind which two servers answer, as when some connections are intercepted.
fn alternating_forwarder(targets: Vec<u16>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { return };
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", targets[n % targets.len()])) else { continue };
            for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    port
}

#[test]
fn concurrent_first_connections_record_one_key() {
    // Two servers with different host keys behind one host:port, connections alternating
    // between them, a new known_hosts file: of the pools opened at once, the key of only one
    // server is recorded, and the connections that reached the other are refused as changed.
    let real = Sshd::start();
    let other = Sshd::start();
    // Both let in the same user key.
    std::fs::copy(real.dir.0.join("authorized_keys"), other.dir.0.join("authorized_keys")).unwrap();
    let port = alternating_forwarder(vec![real.port, other.port]);
    let file = real.dir.0.join("concurrent/known_hosts");
    let mut opts = real.options();
    opts.port = port;
    opts.known_hosts = Some(file.clone());
    opts.host_key_policy = HostKeyPolicy::AcceptUnknown;
    let start = std::sync::Arc::new(std::sync::Barrier::new(6));
    let results: Vec<_> = (0..6)
        .map(|_| {
            let (opts, start) = (opts.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                connect(&opts).map(|(_, info)| info)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();

    let recorded = std::fs::read_to_string(&file).unwrap();
    assert_eq!(recorded.lines().count(), 1, "one key recorded: {recorded}");
    let name = format!("[127.0.0.1]:{port}");
    let (winner, loser) = if recorded == format!("{name} {}\n", public_line(&real.host_key)) {
        (&real, &other)
    } else {
        assert_eq!(recorded, format!("{name} {}\n", public_line(&other.host_key)));
        (&other, &real)
    };
    let mut accepted = 0;
    for result in &results {
        match result {
            Ok(info) => {
                assert_eq!(info.host_key_sha256, winner.host_fingerprint());
                if info.host_key_status != HostKeyStatus::Known {
                    assert_eq!(info.host_key_status, HostKeyStatus::AcceptedUnknown { recorded: true });
                    accepted += 1;
                }
            }
            Err(err) => {
                let hk = err.host_key().unwrap_or_else(|| panic!("{err}"));
                assert_eq!(hk.problem, HostKeyProblem::Changed, "{err}");
                assert_eq!(hk.fingerprint, loser.host_fingerprint(), "{err}");
            }
        }
    }
    assert_eq!(accepted, 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3, "{results:?}");

    // From then on the other server is refused under either policy, and nothing more is written.
    for _ in 0..2 {
        match connect(&opts) {
            Ok((_, info)) => assert_eq!(info.host_key_status, HostKeyStatus::Known),
            Err(err) => assert_eq!(err.host_key().map(|h| h.problem), Some(HostKeyProblem::Changed), "{err}"),
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), recorded);
}

#[test]
fn server_without_the_subsystem_is_refused() {
    let sshd = Sshd::with_subsystems(&[("sftp", "internal-sftp")]);
    let err = connect(&sshd.options()).expect_err("no powershell subsystem");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(matches!(&err, Error::SubsystemRefused { subsystem, .. } if subsystem == "powershell"), "{err:?}");
    assert!(err.to_string().contains("server without the PowerShell subsystem"), "{err}");
}

#[test]
fn unreachable_and_silent_servers_fail_in_time() {
    // Nothing listens: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut opts = SshOptions::new("127.0.0.1", "root", SshAuth::password("x"));
    opts.port = port;
    opts.known_hosts = Some(PathBuf::from("/nonexistent/known_hosts"));
    let err = connect(&opts).expect_err("closed port");
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");

    // A server that accepts and says nothing: the connect timeout ends the wait.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    opts.port = silent.local_addr().unwrap().port();
    opts.connect_timeout = Duration::from_secs(2);
    let err = connect(&opts).expect_err("silent server");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("SSH handshake"), "{err}");
    drop(silent);

    // Not an SSH server at all.
    let garbage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    opts.port = garbage.local_addr().unwrap().port();
    opts.connect_timeout = Duration::from_secs(10);
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = garbage.accept() {
            use std::io::Write;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let err = connect(&opts).expect_err("not SSH");
    assert!(matches!(err.kind(), ErrorKind::Transport), "{err:?}");
}

#[test]
fn end_of_output_and_exit_status() {
    let scripts = TempDir::new("ssh-subsystem");
    let script = scripts.0.join("fail.sh");
    std::fs::write(&script, "#!/bin/sh\necho out\necho bad-thing >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sshd = Sshd::with_subsystems(&[("powershell", script.to_str().unwrap())]);
    let (mut stream, _) = connect(&sshd.options()).expect("connect");
    let status = stream.status();
    let mut all = Vec::new();
    block_on(stream.read_to_end(&mut all)).unwrap();
    assert_eq!(all, b"out\n");
    block_on(status.closed());
    assert_eq!(status.exit_status(), Some(3));
    // OpenSSH does not pass a subsystem's stderr on (it does a command's): nothing to see here.
    assert_eq!(status.stderr(), "");
    assert_eq!(status.describe(), "the subsystem exited with status 3");
    // Writing to a closed channel fails instead of vanishing.
    let err = block_on(stream.write_all(b"late\n")).expect_err("closed");
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
}

#[test]
fn dropping_the_stream_closes_the_channel() {
    let scripts = TempDir::new("ssh-subsystem");
    let pid_file = scripts.0.join("subsystem.pid");
    let script = scripts.0.join("note-pid.sh");
    std::fs::write(&script, format!("#!/bin/sh\necho $$ > {}\nexec cat\n", pid_file.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sshd = Sshd::with_subsystems(&[("powershell", script.to_str().unwrap())]);
    let (mut stream, _) = connect(&sshd.options()).expect("connect");
    // The round trip proves the subsystem runs, so its pid is written.
    assert_eq!(block_on(round_trip(&mut stream, b"alive\n")), b"alive\n");
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists());
    let status = stream.status();
    drop(stream);
    block_on(status.closed());
    let mut polls = 0;
    while proc_dir.exists()
        && std::fs::read_to_string(proc_dir.join("stat")).map(|s| !s.contains(") Z ")).unwrap_or(false)
    {
        polls += 1;
        assert!(polls < 400, "the subsystem (pid {pid}) still runs after the stream was dropped");
        std::thread::sleep(Duration::from_millis(25));
    }
    // sshd logged the session's end.
    let mut log = String::new();
    for _ in 0..400 {
        log.push_str(&sshd.log());
        if log.contains("Disconnected from user root") || log.contains("disconnected by user") {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(log.contains("isconnected"), "{log}");
}

#[test]
fn closing_through_the_status_ends_the_stream() {
    let sshd = Sshd::start();
    let (mut stream, _) = connect(&sshd.options()).expect("connect");
    assert_eq!(block_on(round_trip(&mut stream, b"before\n")), b"before\n");
    let status = stream.status();
    assert!(!status.is_closed());
    // Whoever holds only the status (the stream split and owned elsewhere) can end it.
    status.close();
    block_on(status.closed());
    let mut rest = Vec::new();
    assert_eq!(block_on(stream.read_to_end(&mut rest)).unwrap(), 0);
    let err = block_on(stream.write_all(b"after\n")).expect_err("closed");
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
}

/// The pids of every process below `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

fn signal(pids: &[u32], sig: &str) {
    for pid in pids {
        let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
    }
}

#[test]
fn keepalives_keep_a_quiet_session_and_end_a_dead_one() {
    let sshd = Sshd::start();
    let mut opts = sshd.options();
    opts.keepalive_interval = Duration::from_millis(500);
    let (mut stream, _) = connect(&opts).expect("connect");
    // Quiet for several intervals: the server answers the keepalives and the session lives on.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(block_on(round_trip(&mut stream, b"still here\n")), b"still here\n");

    // The server stops answering (its session processes frozen): the connection is given up
    // after four unanswered keepalives and reading ends instead of waiting for ever.
    let frozen = descendants(sshd.child.id());
    assert!(!frozen.is_empty(), "no sshd session process");
    signal(&frozen, "-STOP");
    let status = stream.status();
    let ended = block_on(async {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut rest)).await
    });
    signal(&frozen, "-CONT");
    assert!(matches!(ended, Ok(Ok(0)) | Ok(Err(_))), "{ended:?}");
    block_on(status.closed());
}

/// A proxy from `python -m psremote_testserver.proxies` (Debian's tinyproxy or microsocks on
/// 127.0.0.1), stopped on drop; its URL and its log directory.
struct ProxyServer {
    child: Child,
    url: String,
    dir: TempDir,
}

impl ProxyServer {
    fn start(kind: &str, auth: bool) -> Self {
        let dir = TempDir::new("ssh-proxy");
        let mut cmd = Command::new(common::python_path());
        cmd.args(["-m", "psremote_testserver.proxies", kind]).arg(&dir.0);
        if auth {
            cmd.arg("--auth");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python -m psremote_testserver.proxies (make proxy-deps installs tinyproxy and microsocks)");
        let url = common::first_line(&mut child, Duration::from_secs(30), kind);
        ProxyServer { child, url, dir }
    }

    /// Everything the proxy logged so far (microsocks logs each connection at once).
    fn log(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(&self.dir.0).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        common::stop_child(&mut self.child);
    }
}

#[test]
fn through_http_and_socks5_proxies() {
    use psremote::proxy::{Proxy, ProxyCredentials};
    let sshd = Sshd::start();
    let audit = capture();

    // An HTTP proxy's CONNECT tunnel, with Basic credentials.
    let http = ProxyServer::start("tinyproxy", true);
    let mut opts = sshd.options();
    opts.proxy = Some(
        Proxy::parse(&http.url)
            .unwrap()
            .with_credentials(Some(ProxyCredentials::new("proxyuser", "s3cret-proxy-pass")))
            .unwrap(),
    );
    let (mut stream, info) = connect(&opts).expect("through tinyproxy");
    assert_eq!(info.proxy.as_deref(), Some(http.url.as_str()));
    assert_eq!(info.host_key_sha256, sshd.host_fingerprint());
    assert_eq!(block_on(round_trip(&mut stream, b"through a CONNECT tunnel\n")), b"through a CONNECT tunnel\n");
    drop(stream);
    // Without the credentials the proxy refuses the tunnel: a proxy error, not an SSH one.
    opts.proxy = Some(Proxy::parse(&http.url).unwrap());
    let err = connect(&opts).expect_err("no proxy credentials");
    assert_eq!(err.kind(), ErrorKind::Proxy, "{err}");

    // SOCKS5: the proxy connects to the address it is given, as its log shows.
    let socks = ProxyServer::start("microsocks", false);
    opts.proxy = Some(Proxy::parse(&socks.url).unwrap());
    let (mut stream, _) = connect(&opts).expect("through microsocks");
    assert_eq!(block_on(round_trip(&mut stream, b"through socks\n")), b"through socks\n");
    drop(stream);
    assert!(socks.log().contains(&format!("127.0.0.1:{}", sshd.port)), "{}", socks.log());

    let text = audit.text();
    let event = text
        .lines()
        .find(|l| l.contains("event=connect") && l.contains("transport=ssh") && l.contains(&http.url))
        .unwrap_or_else(|| panic!("no connect event naming the proxy in {text}"));
    assert!(!event.contains("s3cret-proxy-pass"), "{event}");
    assert!(!text.contains("s3cret-proxy-pass"));
}
