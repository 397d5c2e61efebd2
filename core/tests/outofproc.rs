//! The out-of-process transport over the local-process carrier, against the loopback endpoint's
//! out-of-process mode (`python -m psremote_testserver --out-of-proc`: psrpcore's server side
//! behind PowerShell's OutOfProc framing on stdin/stdout, as `pwsh -s` serves it). Pools,
//! pipelines, every stream, input, host calls, SecureStrings, copy and fetch, stop; the
//! WS-Man-only calls refused; a process that exits, or writes garbage, gives a typed error and
//! is gone afterwards. Every test checks that no server process is left.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{TempDir, block_on};
use psremote::client::{
    Client, ClientConfig, CopyOptions, FetchOptions, Host, PipelineResult, PoolConfig, ProcessOptions, RunspacePool,
};
use psremote::clixml::Value;
use psremote::psrp::{Command, Event, HostCall, HostMethod, HostResponse, PipelineSpec, PipelineState};
use psremote::{Error, ErrorKind};

/// A server started by the client: the endpoint's out-of-process mode, its log in a temporary
/// directory whose path also marks its command line (to find leftovers).
struct Server {
    dir: TempDir,
    extra: Vec<String>,
}

impl Server {
    fn new(extra: &[&str]) -> Self {
        Self { dir: TempDir::new("oop"), extra: extra.iter().map(|s| s.to_string()).collect() }
    }

    fn log(&self) -> PathBuf {
        self.dir.0.join("server.log")
    }

    fn options(&self) -> ProcessOptions {
        let mut arguments: Vec<String> =
            ["-m", "psremote_testserver", "--out-of-proc", "--log"].iter().map(|s| s.to_string()).collect();
        arguments.push(self.log().to_str().unwrap().to_owned());
        arguments.extend(self.extra.iter().cloned());
        ProcessOptions { executable: common::python_path().to_str().unwrap().to_owned(), arguments }
    }

    async fn client(&self) -> Client {
        Client::connect(ClientConfig::process(self.options())).await.unwrap()
    }

    async fn pool(&self) -> RunspacePool {
        RunspacePool::open(&self.client().await, PoolConfig::default()).await.unwrap()
    }

    /// Processes still running with this server's log on their command line.
    fn running(&self) -> usize {
        let marker = self.log().to_str().unwrap().to_owned();
        let mut n = 0;
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
                let zombie = status.lines().any(|l| l.starts_with("State:") && l.contains('Z'));
                if !zombie && String::from_utf8_lossy(&cmdline).contains(&marker) {
                    n += 1;
                }
            }
        }
        n
    }

    /// Waits (bounded) until no process of this server is left; fails the test otherwise.
    async fn assert_gone(&self) {
        for _ in 0..100 {
            if self.running() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the out-of-process server is still running");
    }
}

fn strings(r: &PipelineResult) -> Vec<String> {
    r.output.iter().map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}")).to_owned()).collect()
}

#[test]
fn pools_pipelines_and_every_stream_over_a_process() {
    let server = Server::new(&[]);
    block_on(async {
        let client = server.client().await;
        assert_eq!(client.transport_name(), "process");
        assert!(client.url().starts_with("process:"), "{}", client.url());
        assert!(client.connection_info().is_none());
        // Nothing is started before a pool opens.
        assert_eq!(server.running(), 0);
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        assert_eq!(pool.transport(), "process");
        assert_eq!(server.running(), 1);
        assert_eq!(pool.max_chunk(), 32768);
        assert!(pool.protocol_version().is_some());

        let r = pool.invoke(&PipelineSpec::script("Write-Output hello")).await.unwrap();
        assert_eq!(strings(&r), ["hello"]);
        let script = "Write-Output out; Write-Error err; Write-Warning warn; Write-Verbose verb; Write-Debug dbg; \
                      Write-Information info; Write-Progress -Activity act -Status stat -PercentComplete 50";
        let r = pool.invoke(&PipelineSpec::script(script)).await.unwrap();
        assert_eq!(strings(&r), ["out"]);
        assert!(r.errors[0].message.contains("err"), "{:?}", r.errors);
        assert_eq!(r.warnings[0].message, "warn");
        assert_eq!(r.verbose[0].message, "verb");
        assert_eq!(r.debug[0].message, "dbg");
        assert_eq!(r.information[0].text(), "info");
        assert_eq!(r.progress[0].activity, "act");
        assert_eq!(r.state, PipelineState::Completed);

        // A command with parameters, and a failing one.
        let mut cmd = Command::new("Write-Output");
        cmd.parameters.push((Some("InputObject".into()), Value::I32(42)));
        let r = pool.invoke(&PipelineSpec::command(cmd)).await.unwrap();
        assert_eq!(r.output, [Value::I32(42)]);
        let r = pool.invoke(&PipelineSpec::script("Invoke-Failure -Message 'it broke'")).await.unwrap();
        assert_eq!(r.state, PipelineState::Failed);
        assert!(r.terminating_error.unwrap().message.contains("it broke"));

        // Input: many objects (several Data packets, each after the DataAck of the one before).
        let input: Vec<Value> = (0..3000).map(Value::I32).collect();
        let r = pool.invoke_with_input(&PipelineSpec::script("Measure-Input"), input).await.unwrap();
        let m = r.output.first().and_then(Value::as_object).unwrap_or_else(|| panic!("{r:?}"));
        assert_eq!(m.property("Count").and_then(Value::as_i64), Some(3000));
        // Input echoed back while more is sent: the output does not hold up the acks.
        let input: Vec<Value> = (0..1500).map(|i| Value::Str(format!("item {i} {}", "x".repeat(100)))).collect();
        let r = pool.invoke_with_input(&PipelineSpec::script("Write-Output"), input.clone()).await.unwrap();
        assert_eq!(r.output, input);

        // A large object comes back in many fragments.
        let r = pool.invoke(&PipelineSpec::script("New-HugeObject -Size 300000")).await.unwrap();
        assert_eq!(r.output[0].as_str().map(str::len), Some(300000), "{:?}", r.errors);

        // Pipelines at once on one pool, and the pool-level calls.
        assert!(pool.set_max_runspaces(3).await.unwrap());
        let a = pool.start(&PipelineSpec::script("Start-Sleep -Milliseconds 500; Write-Output a")).await.unwrap();
        let b = pool.start(&PipelineSpec::script("Start-Sleep -Milliseconds 500; Write-Output b")).await.unwrap();
        let c = pool.start(&PipelineSpec::script("Write-Output c")).await.unwrap();
        assert_eq!(strings(&c.wait().await.unwrap()), ["c"]);
        assert_eq!(strings(&a.wait().await.unwrap()), ["a"]);
        assert_eq!(strings(&b.wait().await.unwrap()), ["b"]);
        assert!(pool.available_runspaces().await.unwrap() >= 1);
        assert!(pool.is_alive().await.unwrap());

        pool.close().await.unwrap();
        server.assert_gone().await;
        // The server saw the pool closed, then the end of its input, and exited by itself (not
        // killed: a killed server logs neither).
        let log = std::fs::read_to_string(server.log()).unwrap();
        assert!(!log.contains("Traceback"), "{log}");
        assert!(log.contains("runspace pool closed") && log.contains("end of input: closing"), "{log}");
    });
}

struct TestHost;

impl Host for TestHost {
    fn call(&self, call: &HostCall) -> HostResponse {
        match call.method {
            HostMethod::ReadLine => HostResponse::Value(Value::Str("typed by the host".into())),
            HostMethod::ReadLineAsSecureString => HostResponse::SecureString("typed secret".to_owned().into()),
            HostMethod::PromptForCredential1 | HostMethod::PromptForCredential2 => HostResponse::Credential {
                username: "DOMAIN\\someone".into(),
                password: "cred-password".to_owned().into(),
            },
            _ => HostResponse::NotImplemented,
        }
    }
}

#[test]
fn host_calls_and_securestrings_over_a_process() {
    let server = Server::new(&["--verbose"]);
    block_on(async {
        let client = server.client().await;
        let config = PoolConfig { host: Some(Arc::new(TestHost)), ..PoolConfig::default() };
        let pool = RunspacePool::open(&client, config).await.unwrap();
        // Host responses travel as PromptResponse Data.
        let r = pool.invoke(&PipelineSpec::script("Read-Host -Prompt 'name?'")).await.unwrap();
        assert_eq!(strings(&r), ["typed by the host"]);
        let log = std::fs::read_to_string(server.log()).unwrap();
        assert!(log.contains("PromptResponse"), "no PromptResponse Data in the server's log");
        let r = pool.invoke(&PipelineSpec::script("Get-Credential")).await.unwrap();
        let cred = r.output[0].as_object().unwrap_or_else(|| panic!("{:?} {:?}", r.output, r.errors));
        assert_eq!(cred.property("UserName").and_then(Value::as_str), Some("DOMAIN\\someone"));
        let Some(Value::SecureString(ct)) = cred.property("Password") else { panic!("{cred:?}") };
        assert_eq!(pool.decrypt_secure_string(ct).unwrap().as_str(), "cred-password");
        let r = pool.invoke(&PipelineSpec::script("Read-Host -AsSecureString")).await.unwrap();
        let Some(Value::SecureString(ct)) = r.output.first() else { panic!("{:?} {:?}", r.output, r.errors) };
        assert_eq!(pool.decrypt_secure_string(ct).unwrap().as_str(), "typed secret");

        pool.exchange_key().await.unwrap();
        let r = pool
            .invoke(&PipelineSpec::script("ConvertTo-SecureString -String 's3cr3t' -AsPlainText -Force"))
            .await
            .unwrap();
        let Some(Value::SecureString(ct)) = r.output.first() else { panic!("{:?} {:?}", r.output, r.errors) };
        assert_eq!(pool.decrypt_secure_string(ct).unwrap().as_str(), "s3cr3t");
        let secret = pool.secure_string("from the client").await.unwrap();
        let mut cmd = Command::new("Write-Output");
        cmd.parameters.push((Some("InputObject".into()), secret));
        let r = pool.invoke(&PipelineSpec::command(cmd)).await.unwrap();
        let Some(Value::SecureString(back)) = r.output.first() else { panic!("{:?}", r.output) };
        assert_eq!(pool.decrypt_secure_string(back).unwrap().as_str(), "from the client");

        // Without a host, a host call fails the call instead of hanging.
        let bare = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        let r = bare.invoke(&PipelineSpec::script("Read-Host -Prompt 'name?'")).await.unwrap();
        assert!(r.had_errors() && r.output.is_empty(), "{r:?}");
        bare.close().await.unwrap();
        pool.close().await.unwrap();
        server.assert_gone().await;
    });
}

#[test]
fn stop_and_drop_over_a_process() {
    let server = Server::new(&[]);
    block_on(async {
        let pool = server.pool().await;
        let mut p = pool.start(&PipelineSpec::script("Write-Output first; Invoke-Stall")).await.unwrap();
        match p.next_event().await.unwrap() {
            Some(Event::Output { value, .. }) => assert_eq!(value, Value::Str("first".into())),
            other => panic!("{other:?}"),
        }
        // Signal, SignalAck, then the Stopped state as Data.
        p.stop().await.unwrap();
        assert_eq!(p.wait().await.unwrap().state, PipelineState::Stopped);
        // A running pipeline dropped is stopped and released; the pool carries on.
        let dropped = pool.start(&PipelineSpec::script("Invoke-Stall")).await.unwrap();
        drop(dropped);
        let r = pool.invoke(&PipelineSpec::script("Write-Output still")).await.unwrap();
        assert_eq!(strings(&r), ["still"]);
        // Pipelines still running when the pool closes: the close stops and closes them first
        // (the server acknowledges the pool's Close only once its commands are closed).
        let stalled = pool.start(&PipelineSpec::script("Invoke-Stall")).await.unwrap();
        let control = stalled.control();
        control.stop().await.unwrap();
        assert_eq!(stalled.wait().await.unwrap().state, PipelineState::Stopped);
        let _running = pool.start(&PipelineSpec::script("Invoke-Stall")).await.unwrap();
        let _other = pool.start(&PipelineSpec::script("Write-Output 1; Invoke-Stall")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), pool.close()).await.expect("the close waited").unwrap();
        server.assert_gone().await;
        let log = std::fs::read_to_string(server.log()).unwrap();
        assert!(log.contains("runspace pool closed") && log.contains("end of input: closing"), "{log}");

        // A pool dropped without close ends its process all the same.
        let server2 = Server::new(&[]);
        let pool = server2.pool().await;
        assert_eq!(strings(&pool.invoke(&PipelineSpec::script("Write-Output x")).await.unwrap()), ["x"]);
        drop(pool);
        server2.assert_gone().await;
    });
}

/// Output nobody reads does not hold up the session: one stream carries every pipeline's data
/// and every acknowledgement, so the reader never waits for a pipeline's consumer.
#[test]
fn a_pipeline_nobody_reads_stalls_no_other() {
    let server = Server::new(&[]);
    block_on(async {
        // One event decoded ahead of the reader: the rest waits undecoded in the session.
        let mut config = ClientConfig::process(server.options());
        config.max_events_ahead = 1;
        let client = Client::connect(config).await.unwrap();
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        assert!(pool.set_max_runspaces(2).await.unwrap());
        // About 40 MB of output that nobody takes yet (more than any one inbox used to hold).
        let script = vec!["New-HugeObject -Size 400000"; 100].join("; ");
        let unread = pool.start(&PipelineSpec::script(&script)).await.unwrap();
        // Time for the server to write it (not a measurement: a slower server only makes the
        // rest of the test easier).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let run = async {
            for i in 0..3 {
                let r = pool.invoke(&PipelineSpec::script(format!("Write-Output 'x{i}'"))).await.unwrap();
                assert_eq!(strings(&r), [format!("x{i}")]);
            }
            pool.exchange_key().await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(30), run).await.expect("the other pipelines were held up");
        let r = unread.wait().await.unwrap();
        assert_eq!(r.output.len(), 100, "{:?}", r.errors);
        pool.close().await.unwrap();
        server.assert_gone().await;
    });
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn copy_and_fetch_over_a_process() {
    let server = Server::new(&[]);
    let dir = TempDir::new("oop-files");
    block_on(async {
        let client = server.client().await;
        let src = dir.0.join("source.bin");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let remote = dir.0.join("remote.bin");
        let out = client.copy(&src, path_str(&remote), &CopyOptions::default()).await.unwrap();
        assert_eq!(out.bytes, data.len() as u64);
        assert_eq!(std::fs::read(&remote).unwrap(), data);
        let back = dir.0.join("back.bin");
        let got = client.fetch(path_str(&remote), &back, &FetchOptions::default()).await.unwrap();
        assert_eq!(got.sha1, out.sha1);
        assert_eq!(std::fs::read(&back).unwrap(), data);
        // A remote failure is the usual typed file error.
        let e = client.fetch(path_str(&dir.0.join("missing")), &back, &FetchOptions::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::File, "{e}");
        server.assert_gone().await;
    });
}

fn assert_wsman_only<T: std::fmt::Debug>(r: psremote::Result<T>, what: &str) {
    match r {
        Err(e @ Error::WsmanOnly { transport: "process" | "ssh", .. }) => {
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            let text = e.to_string();
            assert!(text.contains(what) && text.contains("WS-Man"), "{text}");
        }
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn wsman_only_calls_are_refused() {
    let server = Server::new(&[]);
    block_on(async {
        let client = server.client().await;
        assert_wsman_only(client.run_cmd("whoami", &[]).await, "cmd shell");
        assert_wsman_only(client.open_cmd_shell(Default::default()).await, "cmd shell");
        assert_wsman_only(client.list_pools().await, "listing runspace pools");
        assert_wsman_only(client.server_config().await, "WinRM configuration");
        assert_wsman_only(client.fit_envelope_to_server().await, "envelope size");
        assert_wsman_only(
            RunspacePool::connect(&client, "5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa", PoolConfig::default()).await,
            "connecting",
        );
        // No process was started for any of them.
        assert_eq!(server.running(), 0);
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        assert_wsman_only(pool.disconnect().await, "disconnecting");
        assert_wsman_only(pool.reconnect().await, "reconnecting");
        assert_wsman_only(pool.attach_pipeline("5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa").await, "attaching");
        // The pool is untouched by the refusals.
        assert_eq!(strings(&pool.invoke(&PipelineSpec::script("Write-Output ok")).await.unwrap()), ["ok"]);
        // Session configurations are WS-Man's too.
        let named = PoolConfig { configuration_name: "Restricted".into(), ..PoolConfig::default() };
        let e = RunspacePool::open(&client, named).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        pool.close().await.unwrap();
        server.assert_gone().await;
    });
}

/// Opens a pool on a misbehaving server and runs one pipeline; the error that comes.
async fn misbehaving(server: &Server) -> Error {
    let client = server.client().await;
    let run = async {
        let pool = RunspacePool::open(&client, PoolConfig::default()).await?;
        let r = pool.invoke(&PipelineSpec::script("Write-Output 1")).await;
        let _ = pool.close().await;
        r
    };
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Ok(Ok(r)) => panic!("the misbehaving server gave a result: {r:?}"),
        Ok(Err(e)) => e,
        Err(_) => panic!("the client hung on a misbehaving server"),
    }
}

/// A server that never acknowledges ends the session after three operation timeouts: a
/// Command without its CommandAck, a Data without its DataAck (the pool's next message waits for
/// it), each a Timeout, the process ended.
#[test]
fn a_server_that_does_not_acknowledge_is_a_timeout() {
    block_on(async {
        for at in ["2", "1"] {
            let server = Server::new(&["--misbehave", "no-ack", "--misbehave-at", at]);
            let mut config = ClientConfig::process(server.options());
            config.operation_timeout = Duration::from_secs(1);
            let client = Client::connect(config).await.unwrap();
            let run = async {
                let pool = RunspacePool::open(&client, PoolConfig::default()).await?;
                if at == "1" {
                    // The pool's opening Data was not acknowledged: its next message waits.
                    pool.set_max_runspaces(2).await.map(drop)
                } else {
                    pool.invoke(&PipelineSpec::script("Write-Output 1")).await.map(drop)
                }
            };
            let e = match tokio::time::timeout(Duration::from_secs(30), run).await {
                Ok(r) => r.unwrap_err(),
                Err(_) => panic!("the client hung on a server that does not acknowledge"),
            };
            assert_eq!(e.kind(), ErrorKind::Timeout, "at {at}: {e}");
            assert!(e.to_string().contains("did not acknowledge"), "{e}");
            server.assert_gone().await;
        }
    });
}

#[test]
fn a_process_that_exits_mid_session_is_a_typed_error() {
    block_on(async {
        // The second packet is the pipeline's Command: the server exits instead of answering.
        let server = Server::new(&["--misbehave", "exit"]);
        let e = misbehaving(&server).await;
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        let text = e.to_string();
        assert!(text.contains("mid-session") && text.contains("exited with status 3"), "{text}");
        server.assert_gone().await;

        // Its stderr is in the message, escaped.
        let server = Server::new(&["--misbehave", "exit-stderr"]);
        let e = misbehaving(&server).await;
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        assert!(e.to_string().contains("simulated crash"), "{e}");
        server.assert_gone().await;

        // Exiting while the pool opens.
        let server = Server::new(&["--misbehave", "exit", "--misbehave-at", "1"]);
        let e = RunspacePool::open(&server.client().await, PoolConfig::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
        server.assert_gone().await;
    });
}

#[test]
fn a_process_that_writes_garbage_is_a_typed_error() {
    block_on(async {
        for (fault, why) in [
            ("garbage", "does not start with '<'"),
            ("bad-base64", "invalid base64"),
            ("endless-line", "longer than"),
            ("foreign-ack", "for no Command of the client"),
        ] {
            let server = Server::new(&["--misbehave", fault]);
            let e = misbehaving(&server).await;
            assert_eq!(e.kind(), ErrorKind::Protocol, "{fault}: {e}");
            let text = e.to_string();
            assert!(text.contains(why) && text.contains("process python"), "{fault}: {text}");
            // The process was killed and reaped.
            server.assert_gone().await;
        }
    });
}

#[test]
fn programs_that_are_no_server() {
    block_on(async {
        // No such program.
        let options = ProcessOptions { executable: "/nonexistent/pwsh".into(), arguments: vec![] };
        let client = Client::connect(ClientConfig::process(options)).await.unwrap();
        let e = RunspacePool::open(&client, PoolConfig::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        // A program that exits at once, one that prints text, and one that reads on and says
        // nothing: each a typed error, none a hang.
        let cases: [(&str, &[&str], ErrorKind, &str); 3] = [
            ("/bin/sh", &["-c", "echo oops >&2; exit 7"], ErrorKind::Transport, "exited with status 7; stderr: oops"),
            ("/bin/echo", &["hello"], ErrorKind::Protocol, "does not start with '<'"),
            ("/bin/sh", &["-c", "exec cat >/dev/null"], ErrorKind::Timeout, "did not finish"),
        ];
        for (program, args, kind, why) in cases {
            let options =
                ProcessOptions { executable: program.into(), arguments: args.iter().map(|s| s.to_string()).collect() };
            let client = Client::connect(ClientConfig::process(options)).await.unwrap();
            let config = PoolConfig { open_timeout: Some(Duration::from_secs(2)), ..PoolConfig::default() };
            let e = RunspacePool::open(&client, config).await.unwrap_err();
            assert_eq!(e.kind(), kind, "{program} {args:?}: {e}");
            assert!(e.to_string().contains(why), "{program} {args:?}: {e}");
        }
        // Empty options are refused before anything starts.
        let options = ProcessOptions { executable: String::new(), arguments: vec![] };
        let e = Client::connect(ClientConfig::process(options)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    });
}

/// The endpoint's sshd fixture (`python -m psremote_testserver.sshd`: Debian's OpenSSH on
/// 127.0.0.1 with throwaway keys, the out-of-process mode as its `powershell` subsystem),
/// stopped when dropped.
struct Sshd {
    child: std::process::Child,
    info: serde_json::Value,
}

impl Sshd {
    fn start() -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(common::python_path())
            .args(["-m", "psremote_testserver.sshd"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the sshd fixture");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let info: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("the sshd fixture said {line:?}: {e}"));
        Sshd { child, info }
    }

    fn options(&self) -> psremote::transport::ssh::SshOptions {
        use psremote::transport::ssh::{SshAuth, SshOptions};
        let s = |k: &str| self.info[k].as_str().unwrap().to_owned();
        let mut o = SshOptions::new("127.0.0.1", s("user"), SshAuth::key_file(s("user_key_path"), None));
        o.port = self.info["port"].as_u64().unwrap() as u16;
        o.known_hosts = Some(s("known_hosts_path").into());
        o
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // SIGTERM: the fixture stops sshd and every session it started.
        let _ = std::process::Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

#[test]
fn pools_pipelines_and_files_over_ssh() {
    let sshd = Sshd::start();
    let dir = TempDir::new("oop-ssh");
    block_on(async {
        let client = Client::connect(ClientConfig::ssh(sshd.options())).await.unwrap();
        assert_eq!(client.transport_name(), "ssh");
        assert!(client.url().starts_with("ssh://"), "{}", client.url());
        let config = PoolConfig { host: Some(Arc::new(TestHost)), ..PoolConfig::default() };
        let pool = RunspacePool::open(&client, config).await.unwrap();
        assert_eq!(pool.transport(), "ssh");
        let r = pool.invoke(&PipelineSpec::script("Write-Output 'over ssh'; Write-Warning w")).await.unwrap();
        assert_eq!(strings(&r), ["over ssh"]);
        assert_eq!(r.warnings[0].message, "w");
        let r = pool.invoke(&PipelineSpec::script("Read-Host -Prompt 'name?'")).await.unwrap();
        assert_eq!(strings(&r), ["typed by the host"]);
        pool.exchange_key().await.unwrap();
        let r = pool
            .invoke(&PipelineSpec::script("ConvertTo-SecureString -String 's3cr3t' -AsPlainText -Force"))
            .await
            .unwrap();
        let Some(Value::SecureString(ct)) = r.output.first() else { panic!("{:?} {:?}", r.output, r.errors) };
        assert_eq!(pool.decrypt_secure_string(ct).unwrap().as_str(), "s3cr3t");
        let p = pool.start(&PipelineSpec::script("Invoke-Stall")).await.unwrap();
        p.stop().await.unwrap();
        assert_eq!(p.wait().await.unwrap().state, PipelineState::Stopped);
        assert_wsman_only(pool.disconnect().await, "disconnecting");
        pool.close().await.unwrap();

        // Copy and fetch, each on a pool (an SSH session) of its own.
        let src = dir.0.join("source.bin");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let remote = dir.0.join("remote.bin");
        client.copy(&src, path_str(&remote), &CopyOptions::default()).await.unwrap();
        let back = dir.0.join("back.bin");
        client.fetch(path_str(&remote), &back, &FetchOptions::default()).await.unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), data);
        assert_wsman_only(client.run_cmd("whoami", &[]).await, "cmd shell");
    });
}

/// A proxy carries WS-Man only: one set for another transport is refused (never a direct
/// connection where a proxy was asked for), and the environment's proxy variables (HTTP's) are
/// not read for it.
#[test]
fn a_proxy_is_refused_for_the_process_and_ssh_transports() {
    let server = Server::new(&[]);
    let mut config = ClientConfig::process(server.options());
    let env = |name: &str| (name.eq_ignore_ascii_case("all_proxy")).then(|| "http://127.0.0.1:9".to_owned());
    assert_eq!(config.resolve_proxy_with(&env).unwrap(), None);
    config.proxy = Some(psremote::proxy::Proxy::parse("http://127.0.0.1:9").unwrap());
    let e = config.validate().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("process transport"), "{e}");
}
