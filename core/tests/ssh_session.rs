//! PowerShell over SSH end to end: the client's out-of-process transport over the SSH carrier,
//! against Debian's OpenSSH server (`python -m psremote_testserver.sshd`, on 127.0.0.1 with
//! throwaway keys) running the loopback endpoint's out-of-process mode as its `powershell`
//! subsystem. Nothing in that chain is psremote's but the client. Pools, pipelines, streams,
//! input, SecureStrings, copy and fetch; key and password logons; host key and logon refusals
//! and a server without the subsystem through the client; WS-Man-only calls refused; no
//! subsystem process left after a pool closes or is dropped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TempDir, block_on, capture::capture};
use psremote::client::{Client, ClientConfig, CopyOptions, FetchOptions, PipelineResult, PoolConfig, RunspacePool};
use psremote::clixml::Value;
use psremote::psrp::{PipelineSpec, PipelineState};
use psremote::transport::ssh::{HostKeyPolicy, SshAuth, SshOptions};
use psremote::{Error, ErrorKind, HostKeyProblem};

/// The sshd fixture, stopped (with every session it started) on drop.
struct Sshd {
    child: Child,
    info: serde_json::Value,
}

impl Sshd {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(common::python_path())
            .args(["-m", "psremote_testserver.sshd"])
            .args(extra)
            .current_dir(common::workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python -m psremote_testserver.sshd");
        let line = common::first_line(&mut child, Duration::from_secs(60), "psremote_testserver.sshd");
        let info = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        Sshd { child, info }
    }

    fn text(&self, key: &str) -> String {
        self.info[key].as_str().unwrap_or_else(|| panic!("no {key} in {}", self.info)).to_owned()
    }

    fn port(&self) -> u16 {
        self.info["port"].as_u64().unwrap() as u16
    }

    /// Key logon as the fixture's user, host key known.
    fn options(&self) -> SshOptions {
        let mut opts =
            SshOptions::new("127.0.0.1", self.text("user"), SshAuth::key_file(self.text("user_key_path"), None));
        opts.port = self.port();
        opts.known_hosts = Some(PathBuf::from(self.text("known_hosts_path")));
        opts.connect_timeout = Duration::from_secs(30);
        opts
    }

    /// Subsystem processes (the endpoint's out-of-process mode) still running for this sshd.
    fn sessions(&self) -> usize {
        let marker = self.text("dir");
        let mut n = 0;
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline);
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let zombie = status.lines().any(|l| l.starts_with("State:") && l.contains('Z'));
            if !zombie && cmdline.contains("outofproc") && cmdline.contains(&marker) {
                n += 1;
            }
        }
        n
    }

    /// Waits (bounded) until no subsystem process is left; fails the test otherwise.
    async fn assert_no_session(&self) {
        for _ in 0..200 {
            if self.sessions() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("a subsystem process still runs after its pool ended");
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        common::stop_child(&mut self.child);
    }
}

fn strings(r: &PipelineResult) -> Vec<String> {
    r.output.iter().map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}")).to_owned()).collect()
}

async fn client(opts: SshOptions) -> Client {
    Client::connect(ClientConfig::ssh(opts)).await.unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn pools_pipelines_and_files_over_ssh() {
    let sshd = Sshd::start(&[]);
    let audit = capture();
    let dir = TempDir::new("ssh-files");
    block_on(async {
        let client = client(sshd.options()).await;
        assert_eq!(client.transport_name(), "ssh");
        assert_eq!(client.url(), format!("ssh://{}@127.0.0.1:{}/powershell", sshd.text("user"), sshd.port()));
        // Nothing is contacted before a pool opens.
        assert_eq!(sshd.sessions(), 0);
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        assert_eq!(pool.transport(), "ssh");
        assert_eq!(sshd.sessions(), 1);

        let r = pool.invoke(&PipelineSpec::script("Write-Output 'hello over ssh'")).await.unwrap();
        assert_eq!(strings(&r), ["hello over ssh"]);
        let r =
            pool.invoke(&PipelineSpec::script("Write-Output out; Write-Warning warn; Write-Error err")).await.unwrap();
        assert_eq!(strings(&r), ["out"]);
        assert_eq!(r.warnings[0].message, "warn");
        assert!(r.errors[0].message.contains("err"), "{:?}", r.errors);
        assert_eq!(r.state, PipelineState::Completed);

        // Input in many Data packets, and a large object in many fragments.
        let input: Vec<Value> = (0..2000).map(Value::I32).collect();
        let r = pool.invoke_with_input(&PipelineSpec::script("Measure-Input"), input).await.unwrap();
        let m = r.output.first().and_then(Value::as_object).unwrap_or_else(|| panic!("{r:?}"));
        assert_eq!(m.property("Count").and_then(Value::as_i64), Some(2000));
        let r = pool.invoke(&PipelineSpec::script("New-HugeObject -Size 300000")).await.unwrap();
        assert_eq!(r.output[0].as_str().map(str::len), Some(300000), "{:?}", r.errors);

        // The session key exchange and SecureStrings both ways.
        pool.exchange_key().await.unwrap();
        let r = pool
            .invoke(&PipelineSpec::script("ConvertTo-SecureString -String 'over-ssh' -AsPlainText -Force"))
            .await
            .unwrap();
        let Some(Value::SecureString(ct)) = r.output.first() else { panic!("{:?} {:?}", r.output, r.errors) };
        assert_eq!(pool.decrypt_secure_string(ct).unwrap().as_str(), "over-ssh");

        // Two pipelines at once.
        assert!(pool.set_max_runspaces(2).await.unwrap());
        let a = pool.start(&PipelineSpec::script("Start-Sleep -Milliseconds 300; Write-Output a")).await.unwrap();
        let b = pool.start(&PipelineSpec::script("Write-Output b")).await.unwrap();
        assert_eq!(strings(&b.wait().await.unwrap()), ["b"]);
        assert_eq!(strings(&a.wait().await.unwrap()), ["a"]);
        pool.close().await.unwrap();
        sshd.assert_no_session().await;

        // Copy and fetch (each runs its own pool, so its own SSH connection).
        let src = dir.0.join("source.bin");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let remote = dir.0.join("remote.bin");
        let out = client.copy(&src, path_str(&remote), &CopyOptions::default()).await.unwrap();
        assert_eq!(std::fs::read(&remote).unwrap(), data);
        let back = dir.0.join("back.bin");
        let got = client.fetch(path_str(&remote), &back, &FetchOptions::default()).await.unwrap();
        assert_eq!((got.sha1, std::fs::read(&back).unwrap()), (out.sha1, data));
        sshd.assert_no_session().await;
    });
    let text = audit.text();
    let endpoint = format!("endpoint=127.0.0.1:{}", sshd.port());
    let event = text
        .lines()
        .find(|l| l.contains("event=connect") && l.contains("transport=ssh") && l.contains(&endpoint))
        .unwrap_or_else(|| panic!("no ssh connect event in {text}"));
    assert!(event.contains(&format!("host_key_sha256={}", sshd.text("host_key_fingerprint"))), "{event}");
    assert!(event.contains(&format!("user={}", sshd.text("user"))), "{event}");
}

#[test]
fn password_logon_over_ssh() {
    let sshd = Sshd::start(&[]);
    let user = sshd.info["password_user"].as_str().unwrap_or_else(|| panic!("no password account: {}", sshd.info));
    let mut opts = sshd.options();
    opts.username = user.to_owned();
    opts.auth = SshAuth::password(sshd.text("password"));
    block_on(async {
        let pool = RunspacePool::open(&client(opts).await, PoolConfig::default()).await.unwrap();
        let r = pool.invoke(&PipelineSpec::script("Write-Output 'by password'")).await.unwrap();
        assert_eq!(strings(&r), ["by password"]);
        pool.close().await.unwrap();
        sshd.assert_no_session().await;
    });
}

/// The error opening a pool with `opts` gives.
fn refused(opts: SshOptions) -> Error {
    block_on(async { RunspacePool::open(&client(opts).await, PoolConfig::default()).await.unwrap_err() })
}

#[test]
fn refusals_through_the_client() {
    let sshd = Sshd::start(&[]);
    let fingerprint = sshd.text("host_key_fingerprint");

    let mut opts = sshd.options();
    opts.known_hosts = Some(PathBuf::from(sshd.text("empty_known_hosts_path")));
    let e = refused(opts);
    assert_eq!(e.host_key().map(|h| h.problem), Some(HostKeyProblem::Unknown), "{e}");
    assert!(e.to_string().contains(&fingerprint), "{e}");

    let mut opts = sshd.options();
    opts.known_hosts = Some(PathBuf::from(sshd.text("changed_known_hosts_path")));
    opts.host_key_policy = HostKeyPolicy::AcceptUnknown;
    let e = refused(opts);
    assert_eq!(e.kind(), ErrorKind::Policy, "{e}");
    assert_eq!(e.host_key().map(|h| h.problem), Some(HostKeyProblem::Changed), "{e}");
    assert!(e.to_string().contains(&fingerprint), "{e}");

    let mut opts = sshd.options();
    opts.auth = SshAuth::key_file(sshd.text("wrong_key_path"), None);
    let e = refused(opts);
    assert!(matches!(e, Error::Authentication { mechanism: "ssh-publickey", .. }), "{e:?}");

    if let Some(user) = sshd.info["password_user"].as_str() {
        let mut opts = sshd.options();
        opts.username = user.to_owned();
        opts.auth = SshAuth::password("not-the-password");
        let e = refused(opts);
        assert!(matches!(e, Error::Authentication { mechanism: "ssh-password", .. }), "{e:?}");
    }
    assert_eq!(sshd.sessions(), 0);

    let bare = Sshd::start(&["--no-subsystem"]);
    let e = refused(bare.options());
    assert!(matches!(e, Error::SubsystemRefused { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Transport);
}

#[test]
fn wsman_only_calls_and_dropped_pools_over_ssh() {
    let sshd = Sshd::start(&[]);
    block_on(async {
        let client = client(sshd.options()).await;
        match client.run_cmd("whoami", &[]).await {
            Err(e @ Error::WsmanOnly { transport: "ssh", .. }) => assert_eq!(e.kind(), ErrorKind::InvalidConfig),
            other => panic!("{other:?}"),
        }
        assert_eq!(sshd.sessions(), 0);
        // A pool dropped without close ends its SSH session and the server's process.
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        assert_eq!(strings(&pool.invoke(&PipelineSpec::script("Write-Output x")).await.unwrap()), ["x"]);
        assert_eq!(sshd.sessions(), 1);
        drop(pool);
        sshd.assert_no_session().await;
    });
}
