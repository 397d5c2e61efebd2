//! psremote against recorded real-Windows conversations: the replay server
//! (`python -m psremote_testserver.replay`) answers each request with the response a Windows
//! server gave pypsrp for the equivalent request in `tests/data/windows-transcripts/*.yml`,
//! translating ids. Each test makes the psremote calls equivalent to what pypsrp did in the
//! recording, checks the recorded outcome, and checks that the server saw the recorded
//! conversation: no unexpected request, every recorded Create/Command/Send/Signal/Delete served,
//! the client's PSRP messages matching the recorded client's (commands, arguments, input, host
//! responses), and no mismatch in cmd-shell commands, environment or stdin.
//!
//! Scenarios psremote cannot replay (and why) are listed in [`NOT_APPLICABLE`]; a test checks the
//! list covers every `test_psrp_*`/`test_winrs_*` transcript without a test of its own.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::block_on;
use psremote::Error;
use psremote::auth::Mechanism;
use psremote::client::{
    Client, ClientConfig, CmdShellOptions, CommandOptions, CopyOptions, FetchOptions, Host, PipelineResult, PoolConfig,
    RunspacePool,
};
use psremote::clixml::{Container, PsObject, Value};
use psremote::psrp::session_key::ClientKeyPair;
use psremote::psrp::{
    Command, Event, HostCall, HostMethod, HostResponse, PipelineSpec, PipelineState, PoolState, ProtocolVersion,
};
use psremote::{FileErrorKind, FileSide};
use serde_json::Value as Json;

const USER: &str = "replay";
const PASSWORD: &str = "Replay-Passw0rd!";
/// Longest a scenario may take before it is reported as hung (the replay server holds a pool
/// Receive for at most 2 s).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// Scenarios without a test, with the reason.
const NOT_APPLICABLE: &[(&str, &str)] = &[];

/// Scenarios with a test here.
const REPLAYED: &[&str] = &[
    "test_winrs_bad_cmd_id.yml",
    "test_winrs_fail_poll_process.yml",
    "test_psrp_disconnect_runspaces.yml",
    "test_psrp_is_alive_http_error.yml",
    "test_psrp_is_alive_invalid_selectors.yml",
    "test_psrp_is_alive_other_wsman_error.yml",
    "test_psrp_receive_failure.yml",
    "test_psrp_clear_commands.yml",
    "test_psrp_error_failed.yml",
    "test_psrp_multiple_commands.yml",
    "test_psrp_multiple_invocations.yml",
    "test_psrp_no_profile.yml",
    "test_psrp_open_runspace.yml",
    "test_psrp_pshost_methods.yml",
    "test_psrp_pshost_ui_mocked_methods.yml",
    "test_psrp_reset_runspace_state.yml",
    "test_psrp_run_protocol_version_2.2.yml",
    "test_psrp_run_protocol_version_2.3.yml",
    "test_psrp_set_runspaces.yml",
    "test_psrp_stream_no_output_invocation.yml",
    "test_psrp_stream_output_invocation.yml",
    "test_psrp_with_history.yml",
    "test_psrp_with_input.yml",
    "test_psrp_with_jea_configuration.yml",
    "test_winrs_environment.yml",
    "test_winrs_no_cmd_shell.yml",
    "test_winrs_noprofile.yml",
    "test_winrs_open_already_opened.yml",
    "test_winrs_send.yml",
    "test_winrs_standard.yml",
];

// ---------------------------------------------------------------------------------------------
// The replay server

fn python() -> PathBuf {
    match std::env::var_os("PSREMOTE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => common::workspace_root().join(".venv/bin/python"),
    }
}

struct Replay {
    child: Child,
    url: String,
    port: u16,
    name: String,
}

impl Replay {
    /// Starts the server on `transcript`; `skip` lists recorded exchanges (by index) the
    /// psremote side deliberately does not make.
    fn start(transcript: &str, skip: &[usize]) -> Self {
        Self::start_with(transcript, skip, &[])
    }

    /// [`Replay::start`] with more replay-server options (e.g. `--ignore-script-text`).
    fn start_with(transcript: &str, skip: &[usize], extra: &[&str]) -> Self {
        let path = common::transcripts::dir().join(transcript);
        let skip: Vec<String> = skip.iter().map(usize::to_string).collect();
        let mut child = Process::new(python())
            .args(["-m", "psremote_testserver.replay", "--port", "0", "--transcript"])
            .arg(&path)
            .args(["--user", USER, "--password", PASSWORD, "--skip", &skip.join(",")])
            .args(extra)
            .current_dir(common::workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the replay server (run `make venv` first)");
        let url = common::first_line(&mut child, Duration::from_secs(30), "the replay server");
        assert!(url.starts_with("http://127.0.0.1:"), "unexpected replay server line {url:?}");
        let port = url["http://127.0.0.1:".len()..].split('/').next().unwrap().parse().unwrap();
        Replay { child, url, port, name: transcript.to_owned() }
    }

    fn state(&self) -> Json {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /_control/state HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("state {body:?}: {e}"))
    }

    /// The state once the client's background work (Signal Terminate after a pipeline, the
    /// last pool Receive) has reached the server: unchanged for half a second.
    fn settled(&self) -> Json {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.state();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.state();
            if (now["trace"] == last["trace"] && now["unexpected"] == last["unexpected"]) || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    fn client(&self) -> ClientConfig {
        let mut cfg =
            ClientConfig::new("x", USER, PASSWORD).with_url(&self.url).unwrap().with_mechanism(Mechanism::Basic);
        cfg.allow_unencrypted = true;
        cfg
    }

    /// Runs `scenario` with a connected client (reporting a hang with the server's state) and
    /// returns the server's state once the client's background requests have arrived.
    fn run<F, Fut>(&self, scenario: F) -> Json
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let cfg = self.client();
        let finished = block_on(async move {
            let client = Client::connect(cfg).await.expect("connect");
            tokio::time::timeout(SCENARIO_TIMEOUT, scenario(client)).await.is_ok()
        });
        if !finished {
            panic!("{}: the scenario hung; server state: {:#}", self.name, self.state());
        }
        self.settled()
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        common::stop_child(&mut self.child);
    }
}

fn list(st: &Json, key: &str) -> Vec<Json> {
    st[key].as_array().cloned().unwrap_or_default()
}

/// `[action, target]` pairs as strings.
fn pairs(st: &Json, key: &str) -> Vec<String> {
    list(st, key).iter().map(|p| format!("{} {}", p[0].as_str().unwrap_or("?"), p[1].as_str().unwrap_or("?"))).collect()
}

/// The server saw the recorded conversation: nothing unexpected, nothing recorded left unserved,
/// no mismatching content; `synthesized` lists the answers the server made up for requests the
/// recorded client did not make (e.g. `"Signal shell1/cmd1"`, psremote's Signal Terminate where
/// a 2018 recording has none).
fn assert_exact(r: &Replay, st: &Json, synthesized: &[&str]) {
    let mut brief = st.clone();
    if let Some(o) = brief.as_object_mut() {
        o.remove("client_messages");
    }
    let ctx = || format!("{}: {:#}", r.name, brief);
    assert_eq!(list(st, "unexpected"), Vec::<Json>::new(), "unexpected requests; {}", ctx());
    assert_eq!(pairs(st, "unused"), Vec::<String>::new(), "recorded exchanges never made; {}", ctx());
    assert_eq!(pairs(st, "incomplete"), Vec::<String>::new(), "recorded messages never sent; {}", ctx());
    assert_eq!(list(st, "mismatches"), Vec::<Json>::new(), "content differs from the recording; {}", ctx());
    assert_eq!(pairs(st, "synthesized"), synthesized, "{}", ctx());
}

/// The client's PSRP messages of one type, as the server decoded them.
fn client_messages(st: &Json, kind: &str) -> Vec<String> {
    list(st, "client_messages")
        .iter()
        .filter(|m| m["type"] == kind)
        .map(|m| m["data"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn strings(r: &PipelineResult) -> Vec<String> {
    r.output.iter().map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}")).to_owned()).collect()
}

fn prop<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.as_object().and_then(|o| o.property(name)).unwrap_or_else(|| panic!("no property {name} in {v:?}"))
}

fn object(type_names: &[&str], f: impl FnOnce(&mut PsObject)) -> Value {
    let mut o = PsObject {
        type_names: Some(type_names.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>().into()),
        ..PsObject::new()
    };
    f(&mut o);
    Value::Object(Arc::new(o))
}

fn array(items: Vec<Value>) -> Value {
    object(&["System.Object[]", "System.Array", "System.Object"], |o| o.container = Some(Container::List(items)))
}

fn hashtable(entries: Vec<(Value, Value)>) -> Value {
    object(&["System.Collections.Hashtable", "System.Object"], |o| o.container = Some(Container::Dictionary(entries)))
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

fn named(command: &str, params: Vec<(Option<&str>, Value)>) -> Command {
    let mut c = Command::new(command);
    c.parameters = params.into_iter().map(|(n, v)| (n.map(str::to_owned), v)).collect();
    c
}

/// A host that records every call and answers from a table.
struct ScriptedHost {
    calls: Mutex<Vec<HostCall>>,
    answer: Box<dyn Fn(&HostCall) -> HostResponse + Send + Sync>,
}

impl ScriptedHost {
    fn new(answer: impl Fn(&HostCall) -> HostResponse + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self { calls: Mutex::new(Vec::new()), answer: Box::new(answer) })
    }

    fn methods(&self) -> Vec<HostMethod> {
        self.calls.lock().unwrap().iter().map(|c| c.method).collect()
    }
}

impl Host for ScriptedHost {
    fn call(&self, call: &HostCall) -> HostResponse {
        self.calls.lock().unwrap().push(call.clone());
        (self.answer)(call)
    }
}

/// pypsrp's published test RSA key (vector psrp-key-exchange-real), which the key-exchange
/// recordings were made with.
fn pypsrp_test_key() -> ClientKeyPair {
    ClientKeyPair::from_primes(&unhex(PYPSRP_KEY_P), &unhex(PYPSRP_KEY_Q), 65537).unwrap()
}

const PYPSRP_KEY_P: &str = "f8417a30800b68c766c29f80991870f0912052a967755c307c2f99300c65e9c1493f8f49c4706ebe26bd82c4435de417f12ca13402a3419edc1b444e30cffb205dba8d828574022d13974b7d217a20107b6cbecaa529c13868f429d56d10973da7e773c4a056fa3d5b4cf96ba92c3b9c378bb9c3a9f2214ced38711025f39355";
const PYPSRP_KEY_Q: &str = "c9b3671a98095c024dbd29894c559301868edf49a1e87b3d8d37ee5d186319ddde827811c5e54a07e739644cec83b36e8972b4b50ac00577d80987a67cbf8967aa4c12fce69b9b2120f9ddaf2e90acc7399380e849f2f7def18dc7f81b012249337a4b1964c24d625260b8764014f29eb76e8fc5d57e6e4d5472fcd30e0eafb3";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

async fn open_pool(client: &Client) -> RunspacePool {
    RunspacePool::open(client, PoolConfig::default()).await.expect("open the runspace pool")
}

// ---------------------------------------------------------------------------------------------
// Coverage of the transcript directory

#[test]
fn every_psrp_and_winrs_transcript_is_replayed_or_explained() {
    let mut covered: Vec<&str> = REPLAYED.iter().copied().chain(NOT_APPLICABLE.iter().map(|(n, _)| *n)).collect();
    covered.sort_unstable();
    let all: Vec<String> = common::transcripts::names()
        .into_iter()
        .filter(|n| n.starts_with("test_psrp_") || n.starts_with("test_winrs_"))
        .collect();
    assert_eq!(covered, all);
}

// ---------------------------------------------------------------------------------------------
// WinRS cmd shells

/// The recordings' shells: pypsrp sent no WINRS_CODEPAGE, where psremote asks for UTF-8 by default.
fn as_recorded() -> CmdShellOptions {
    CmdShellOptions { codepage: None, ..CmdShellOptions::default() }
}

#[test]
fn winrs_standard() {
    let r = Replay::start("test_winrs_standard.yml", &[]);
    let st = r.run(|client| async move {
        let shell = client.open_cmd_shell(as_recorded()).await.unwrap();
        let out = shell.run("cmd.exe", &["/c", "echo", "hi"]).await.unwrap();
        assert_eq!(out.stdout, b"hi\r\n");
        assert_eq!(out.stderr, b"");
        assert_eq!(out.exit_code, 0);
        shell.close().await.unwrap();
    });
    // pypsrp's Signal was ctrl_c after the command finished; psremote's Terminate takes its place.
    assert_exact(&r, &st, &[]);
}

#[test]
fn winrs_bad_cmd_id() {
    // pypsrp polled a CommandId the server never created (its test injected one): through
    // psremote, attaching to a command by an id the shell does not know.
    let r = Replay::start("test_winrs_bad_cmd_id.yml", &[]);
    let st = r.run(|client| async move {
        let shell = client.open_cmd_shell(as_recorded()).await.unwrap();
        let real = shell.start("cmd.exe", &["/c", "echo", "hi"]).await.unwrap();
        let mut unknown = shell.attach(Some("87E77BEB-6761-4C48-9D70-A00266B8459A")).unwrap();
        let err = unknown.next_output().await.unwrap_err();
        assert_eq!(err.kind(), psremote::ErrorKind::NotFound, "{err}");
        assert_eq!(err.fault().and_then(|f| f.code), Some(2_150_858_843));
        drop(unknown);
        // pypsrp interrupted the real command (ctrl_c); psremote releases it with Terminate.
        real.terminate().await.unwrap();
        shell.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
}

#[test]
fn winrs_fail_poll_process() {
    // pypsrp polled a process it never started: a Receive without a CommandId, which is how
    // psremote reads a shell's own streams; a cmd shell refuses it with InvalidParameter.
    let r = Replay::start("test_winrs_fail_poll_process.yml", &[]);
    let st = r.run(|client| async move {
        let shell = client.open_cmd_shell(as_recorded()).await.unwrap();
        let mut own = shell.attach(None).unwrap();
        let err = own.next_output().await.unwrap_err();
        let fault = err.fault().unwrap_or_else(|| panic!("{err:?}"));
        assert_eq!(fault.code, Some(87));
        assert!(own.ctrl_c().await.is_err(), "the shell's own streams take no signal");
        drop(own);
        shell.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
}

#[test]
fn wsman_update_envelope_size() {
    // pypsrp's update_max_payload_size: a Get of winrm/config, then requests sized to it.
    for (transcript, size) in
        [("test_wsman_update_envelope_size_150.yml", 153_600), ("test_wsman_update_envelope_size_500.yml", 512_000)]
    {
        let r = Replay::start(transcript, &[]);
        let st = r.run(|client| async move {
            assert_eq!(client.fit_envelope_to_server().await.unwrap(), size);
            assert_eq!(client.envelope_size(), size);
        });
        assert_exact(&r, &st, &[]);
    }
}

#[test]
fn winrs_environment() {
    let r = Replay::start("test_winrs_environment.yml", &[]);
    let special = r#"_-(){}[]<>*+-/\?"!@#$^&|;:i,.`~0"#;
    let st = r.run(|client| async move {
        let options = CmdShellOptions {
            environment: vec![
                ("env1".into(), "var1".into()),
                ("1234".into(), "5678".into()),
                (special.into(), special.into()),
            ],
            ..as_recorded()
        };
        let shell = client.open_cmd_shell(options).await.unwrap();
        let out = shell.run("cmd.exe", &["/c", "set"]).await.unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert!(lines.contains(&"env1=var1"), "{text}");
        assert!(lines.contains(&"1234=5678"), "{text}");
        assert!(lines.contains(&format!("{special}={special}").as_str()), "{text}");
        assert_eq!(out.exit_code, 0);
        shell.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
}

#[test]
fn winrs_noprofile() {
    let r = Replay::start("test_winrs_noprofile.yml", &[]);
    let st = r.run(|client| async move {
        let shell = client.open_cmd_shell(CmdShellOptions { no_profile: true, ..as_recorded() }).await.unwrap();
        let out = shell.run("cmd.exe", &["/c", "set"]).await.unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("USERPROFILE=C:\\Users\\Default\r\n"), "{text}");
        assert_eq!(out.exit_code, 0);
        shell.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
}

#[test]
fn winrs_send() {
    let r = Replay::start("test_winrs_send.yml", &[]);
    let st = r.run(|client| async move {
        let shell = client.open_cmd_shell(as_recorded()).await.unwrap();
        let p = shell.start("powershell.exe", &["-"]).await.unwrap();
        p.send_stdin(b"Write-Host \"output 1\";", false).await.unwrap();
        p.send_stdin(b"Write-Host \"output 2\";", true).await.unwrap();
        let out = p.wait().await.unwrap();
        assert_eq!(out.stdout, b"output 1\noutput 2\n");
        assert_eq!(out.exit_code, 0);
        shell.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
}

#[test]
fn winrs_open_already_opened() {
    // pypsrp opened the same WinRS object twice; only the first open reaches the server.
    let r = Replay::start("test_winrs_open_already_opened.yml", &[]);
    let st = r.run(|client| async move {
        let shell = client.open_cmd_shell(as_recorded()).await.unwrap();
        assert_eq!(shell.id(), "ED7FD87E-E041-4BC2-A22F-B58FF7833094");
        shell.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
}

/// Commands started without cmd.exe (WINRS_SKIP_CMD_SHELL): the first names an executable the
/// server cannot find, and its fault reaches the caller with its code.
#[test]
fn winrs_no_cmd_shell() {
    let r = Replay::start("test_winrs_no_cmd_shell.yml", &[]);
    let st = r.run(|client| async move {
        let shell = client.open_cmd_shell(as_recorded()).await.unwrap();
        let direct = CommandOptions { skip_cmd_shell: true, ..CommandOptions::default() };
        match shell.start_with("powershell.exe", &["Write-Host", "hi"], direct).await {
            Err(Error::Fault(f)) => {
                assert_eq!(f.code, Some(2147942402), "{f:?}");
                assert!(f.to_string().contains("The system cannot find the file specified"), "{f}");
            }
            other => panic!("expected the recorded fault, got {other:?}"),
        }
        let out = shell
            .start_with(r"C:\Windows\system32\WindowsPowerShell\v1.0\powershell.exe", &["Write-Host", "hi"], direct)
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(out.stdout, b"hi\n");
        shell.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
}

// ---------------------------------------------------------------------------------------------
// PowerShell runspace pools

#[test]
fn psrp_open_runspace() {
    let r = Replay::start("test_psrp_open_runspace.yml", &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        assert_eq!(pool.state(), PoolState::Opened);
        assert_eq!(pool.protocol_version(), Some(ProtocolVersion::V2_3));
        let data = pool.application_private_data().expect("application private data");
        let table = data.as_object().expect("a PSPrimitiveDictionary");
        let Some(Container::Dictionary(entries)) = &table.container else { panic!("{data:?}") };
        let (_, versions) = entries.iter().find(|(k, _)| k.as_str() == Some("PSVersionTable")).expect("PSVersionTable");
        let Some(Container::Dictionary(versions)) = &versions.as_object().unwrap().container else { panic!() };
        let ps = versions.iter().find(|(k, _)| k.as_str() == Some("PSVersion")).map(|(_, v)| v.clone());
        assert!(matches!(&ps, Some(Value::Version(v)) if v.starts_with("5.1.")), "{ps:?}");
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
}

#[test]
fn psrp_no_profile() {
    let r = Replay::start("test_psrp_no_profile.yml", &[]);
    let st = r.run(|client| async move {
        let pool = RunspacePool::open(&client, PoolConfig { no_profile: true, ..PoolConfig::default() }).await.unwrap();
        let res = pool.invoke(&PipelineSpec::script("$env:USERPROFILE.ToUpperInvariant()")).await.unwrap();
        assert_eq!(strings(&res), [r"C:\WINDOWS\SYSTEM32\CONFIG\SYSTEMPROFILE"]);
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &["Signal shell1/cmd1"]);
}

#[test]
fn psrp_multiple_invocations() {
    let r = Replay::start("test_psrp_multiple_invocations.yml", &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        for _ in 0..2 {
            let res = pool.invoke(&PipelineSpec::script("1+1")).await.unwrap();
            assert_eq!(res.output, vec![Value::I32(2)]);
            assert_eq!(res.state, PipelineState::Completed);
            assert!(!res.had_errors());
        }
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
    assert_eq!(client_messages(&st, "CREATE_PIPELINE").len(), 2);
}

#[test]
fn psrp_clear_commands() {
    // pypsrp added "echo hi", cleared the commands and added "echo new": one script is sent.
    let r = Replay::start("test_psrp_clear_commands.yml", &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        let res = pool.invoke(&PipelineSpec::script("echo new")).await.unwrap();
        assert_eq!(strings(&res), ["new"]);
        assert_eq!(res.progress.len(), 1);
        assert_eq!(res.progress[0].activity, "Preparing modules for first use.");
        assert!(res.progress[0].completed);
        pool.close().await.unwrap();
    });
    // The 2018 recording has no Signal Terminate after the pipeline; psremote sends one.
    assert_exact(&r, &st, &["Signal shell1/cmd1"]);
}

#[test]
fn psrp_error_failed() {
    let r = Replay::start("test_psrp_error_failed.yml", &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        let script = "$ErrorActionPreference = 'Stop'; Write-Output before; Write-Error error; Write-Output after";
        let res = pool.invoke(&PipelineSpec::script(script)).await.unwrap();
        assert_eq!(strings(&res), ["before"]);
        assert_eq!(res.state, PipelineState::Failed);
        let e = res.terminating_error.clone().expect("the failure's error record");
        assert_eq!(e.message, "error");
        assert!(res.had_errors());
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &["Signal shell1/cmd1"]);
}

#[test]
fn psrp_multiple_commands() {
    // The whole conversation, key exchange included: with pypsrp's test key the recorded session
    // key decrypts, and psremote's SecureString for "Hello World" is the recorded ciphertext.
    let r = Replay::start("test_psrp_multiple_commands.yml", &[]);
    let st = r.run(|client| async move {
        let config = PoolConfig { key_pair: Some(pypsrp_test_key()), ..PoolConfig::default() };
        let pool = RunspacePool::open(&client, config).await.unwrap();
        pool.exchange_key().await.unwrap();
        let hello = pool.secure_string("Hello World").await.unwrap();
        assert_eq!(hello, Value::SecureString(b64("GXD6gSYvWjfp54Vgl3jLpuNMBhNdfWFRbM1QdeUNYFU=")));
        let unicode = "こんにちは - actual_x000A_string\nnewline: \u{10437}";
        let statements = vec![
            named(
                "Set-Variable",
                vec![
                    (Some("Name"), s("sec_string")),
                    (Some("Value"), hello),
                ],
            ),
            Command::script(
                "[System.Runtime.InteropServices.marshal]::PtrToStringAuto([System.Runtime.InteropServices.marshal]::SecureStringToBSTR($sec_string))",
            ),
            named(
                "ConvertTo-SecureString",
                vec![(Some("String"), s("abc")), (Some("AsPlainText"), Value::Nil), (Some("Force"), Value::Nil)],
            ),
            named("Set-Variable", vec![(Some("Name"), s("unicode_string")), (Some("Value"), s(unicode))]),
            Command::script("$unicode_string"),
            named("cmd.exe", vec![(None, s("/c echo hi"))]),
            Command::new("whoami.exe"),
            named("Set-Variable", vec![(Some("Name"), s("integer")), (Some("Value"), Value::I32(123))]),
            Command::script("$integer"),
            named("Get-Service", vec![(Some("Name"), s("winrm"))]),
        ];
        let spec = PipelineSpec { statements: statements.into_iter().map(|c| vec![c]).collect(), ..PipelineSpec::default() };
        let res = pool.invoke(&spec).await.unwrap();
        assert_eq!(res.state, PipelineState::Completed, "{:?}", res.errors);
        assert_eq!(res.output.len(), 7, "{:?}", res.output);
        assert_eq!(res.output[0], s("Hello World"));
        assert_eq!(res.output[1], Value::SecureString(b64("rTm4n3bxaFOIgdjhDDV5OA==")));
        let Value::SecureString(abc) = &res.output[1] else { unreachable!() };
        assert_eq!(pool.decrypt_secure_string(abc).unwrap().as_str(), "abc");
        assert_eq!(res.output[2], s(unicode));
        assert_eq!(res.output[3], s("hi\""));
        assert_eq!(res.output[4], s("win-nnmu24vvkj0\\vagrant"));
        assert_eq!(res.output[5], Value::I32(123));
        let service = &res.output[6];
        assert_eq!(service.as_object().unwrap().to_string.as_deref(), Some("winrm"));
        assert_eq!(prop(service, "DisplayName"), &s("Windows Remote Management (WS-Management)"));
        assert_eq!(service.as_object().unwrap().type_names()[0], "System.ServiceProcess.ServiceController");
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &["Signal shell1/cmd1"]);
}

/// A session key encrypted for another key pair: psremote (with its own generated RSA-2048 key)
/// sends a well-formed PUBLIC_KEY and, given the recorded ENCRYPTED_SESSION_KEY made for pypsrp's
/// test key, fails the exchange with a clear error instead of hanging.
#[test]
fn psrp_multiple_commands_key_exchange() {
    let r = Replay::start("test_psrp_multiple_commands.yml", &[5, 6]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        let err = pool.exchange_key().await.expect_err("the recorded session key is not for psremote's key");
        assert!(err.to_string().contains("cannot decrypt the session key"), "{err}");
        assert_eq!(pool.state(), PoolState::Broken);
        let _ = pool.close().await;
    });
    let keys = client_messages(&st, "PUBLIC_KEY");
    assert_eq!(keys.len(), 1, "{st:#}");
    let blob_b64 = keys[0].split("<S N=\"PublicKey\">").nth(1).and_then(|x| x.split("</S>").next()).unwrap();
    let blob = b64(blob_b64);
    assert_eq!(blob.len(), 276);
    assert_eq!(&blob[..16], &[6, 2, 0, 0, 0, 0xa4, 0, 0, b'R', b'S', b'A', b'1', 0, 8, 0, 0]);
    assert_eq!(&blob[16..20], &65537u32.to_le_bytes());
    assert_eq!(list(&st, "unexpected"), Vec::<Json>::new(), "{st:#}");
    assert_eq!(list(&st, "mismatches"), Vec::<Json>::new(), "{st:#}");
}

#[test]
fn psrp_pshost_methods() {
    let r = Replay::start("test_psrp_pshost_methods.yml", &[]);
    let host = ScriptedHost::new(|_| HostResponse::NotImplemented);
    let h = host.clone();
    let st = r.run(|client| async move {
        let config = PoolConfig { host: Some(h), ..PoolConfig::default() };
        let pool = RunspacePool::open(&client, config).await.unwrap();
        let res = pool.invoke(&PipelineSpec::script("$host.CurrentCulture; $host.SetShouldExit(1)")).await.unwrap();
        assert_eq!(res.state, PipelineState::Completed);
        assert_eq!(res.output.len(), 1);
        let culture = &res.output[0];
        assert_eq!(culture.as_object().unwrap().to_string.as_deref(), Some("en-US"));
        assert_eq!(prop(culture, "LCID"), &Value::I32(1033));
        pool.close().await.unwrap();
    });
    let calls = host.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, HostMethod::SetShouldExit);
    assert_eq!(calls[0].parameters, vec![Value::I32(1)]);
    assert_exact(&r, &st, &["Signal shell1/cmd1"]);
}

#[test]
fn psrp_pshost_ui_mocked_methods() {
    // The whole conversation with pypsrp's test key: the host answers secrets in plain text and
    // psremote encrypts them into exactly the ciphertexts pypsrp sent.
    let r = Replay::start("test_psrp_pshost_ui_mocked_methods.yml", &[]);
    let host = ScriptedHost::new(|call| match call.method {
        HostMethod::ReadLine => HostResponse::Value(s("ReadLine response")),
        HostMethod::ReadLineAsSecureString => {
            HostResponse::SecureString("ReadLineAsSecureString response".to_owned().into())
        }
        HostMethod::Prompt => HostResponse::Value(hashtable(vec![(s("prompt field"), s("prompt response"))])),
        HostMethod::PromptForCredential2 => {
            HostResponse::Credential { username: "username".into(), password: "password".to_owned().into() }
        }
        HostMethod::PromptForChoice => HostResponse::Value(Value::I32(1)),
        _ => HostResponse::NotImplemented,
    });
    let h = host.clone();
    let script = "$host.UI.ReadLine()\n$host.UI.ReadLineAsSecureString()\n$host.UI.Write(\"Write1\")\n$host.UI.Write([System.ConsoleColor]::Blue, [System.ConsoleColor]::White, \"Write2\")\n$host.UI.WriteLine()\n$host.UI.WriteLine(\"WriteLine2\")\n$host.UI.WriteLine([System.ConsoleColor]::Gray, [System.ConsoleColor]::Green, \"WriteLine3\")\n$host.UI.WriteErrorLine(\"WriteErrorLine\")\n$host.UI.WriteDebugLine(\"WriteDebugLine\")\n$host.UI.WriteProgress(1, (New-Object -TypeName System.Management.Automation.ProgressRecord -ArgumentList 2, \"activity\", \"description\"))\n$host.UI.WriteVerboseLine(\"WriteVerboseLine\")\n$host.UI.WriteWarningLine(\"WriteWarningLine\")\n\n$prompt_field = New-Object -TypeName System.Management.Automation.Host.FieldDescription -ArgumentList @(\"prompt field\")\n$prompt_field.Label = \"PromptLabel\"\n$host.UI.Prompt(\"Prompt caption\", \"Prompt message\", $prompt_field)\n\n$host.UI.PromptForCredential(\"PromptForCredential caption\", \"PromptForCredential message\", \"PromptForCredential user\", \"PromptForCredential target\")\n\n$choice_field1 = New-Object -TypeName System.Management.Automation.Host.ChoiceDescription -ArgumentList \"Prompt1 label\", \"Prompt1 help\"\n$choice_field2 = New-Object -TypeName System.Management.Automation.Host.ChoiceDescription -ArgumentList \"Prompt2 label\", \"Prompt2 help\"\n$host.UI.PromptForChoice(\"PromptForChoice caption\", \"PromptForChoice message\", @($choice_field1, $choice_field2), 0)";
    let void_calls = Arc::new(Mutex::new(Vec::new()));
    let seen = void_calls.clone();
    let st = r.run(|client| async move {
        let config = PoolConfig { host: Some(h), key_pair: Some(pypsrp_test_key()), ..PoolConfig::default() };
        let pool = RunspacePool::open(&client, config).await.unwrap();
        pool.exchange_key().await.unwrap();
        let mut p = pool.start(&PipelineSpec::script(script)).await.unwrap();
        let mut res = PipelineResult::default();
        while let Some(ev) = p.next_event().await.unwrap() {
            match ev {
                Event::HostCall { call, .. } => seen.lock().unwrap().push(call.method),
                Event::Output { value, .. } => res.output.push(value),
                Event::Debug { record, .. } => res.debug.push(record),
                Event::Verbose { record, .. } => res.verbose.push(record),
                Event::Warning { record, .. } => res.warnings.push(record),
                Event::Progress { record, .. } => res.progress.push(record),
                Event::Error { record, .. } => res.errors.push(record),
                Event::PipelineState { state, .. } => res.state = state,
                _ => {}
            }
        }
        assert_eq!(res.state, PipelineState::Completed, "{:?}", res.errors);
        assert_eq!(res.output.len(), 5, "{:?}", res.output);
        assert_eq!(res.output[0], s("ReadLine response"));
        assert_eq!(
            res.output[1],
            Value::SecureString(b64(
                "xTIlte2IE7q6bM0/U/PTtjmnmBO4+KhQ3NBK7A+uB3sqxukLSeI7lBLn5aHskOCliWqEdgEGRaAAQo5q9L4g2g=="
            ))
        );
        let Some(Container::Dictionary(d)) = &res.output[2].as_object().unwrap().container else {
            panic!("{:?}", res.output[2])
        };
        assert_eq!(d, &vec![(s("prompt field"), s("prompt response"))]);
        assert_eq!(prop(&res.output[3], "UserName"), &s("username"));
        assert_eq!(res.output[4], Value::I32(1));
        assert_eq!(res.debug.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(), ["WriteDebugLine"]);
        assert_eq!(res.verbose.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(), ["WriteVerboseLine"]);
        assert_eq!(res.warnings.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(), ["WriteWarningLine"]);
        assert_eq!(
            res.progress.iter().map(|p| p.activity.as_str()).collect::<Vec<_>>(),
            ["Preparing modules for first use.", "activity"]
        );
        pool.close().await.unwrap();
    });
    use HostMethod::*;
    let recorded = vec![
        ReadLine,
        ReadLineAsSecureString,
        Write1,
        Write2,
        WriteLine1,
        WriteLine2,
        WriteLine3,
        WriteErrorLine,
        WriteDebugLine,
        WriteProgress,
        WriteProgress,
        WriteVerboseLine,
        WriteWarningLine,
        Prompt,
        PromptForCredential2,
        PromptForChoice,
    ];
    // The pipeline's event stream carries the void calls in the recorded order.
    let void: Vec<HostMethod> = recorded.iter().copied().filter(|m| m.is_void()).collect();
    assert_eq!(*void_calls.lock().unwrap(), void);
    // The host sees every call in the order the server made them.
    assert_eq!(host.methods(), recorded);
    let calls = host.calls.lock().unwrap().clone();
    let write2 = calls.iter().find(|c| c.method == Write2).unwrap();
    assert_eq!(write2.parameters, vec![Value::I32(9), Value::I32(15), s("Write2")]);
    assert_eq!(client_messages(&st, "PIPELINE_HOST_RESPONSE").len(), 5);
    assert_exact(&r, &st, &["Signal shell1/cmd1"]);
}

#[test]
fn psrp_reset_runspace_state() {
    let r = Replay::start("test_psrp_reset_runspace_state.yml", &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        let spec = PipelineSpec { add_to_history: true, ..PipelineSpec::script("echo hi") };
        assert_eq!(strings(&pool.invoke(&spec).await.unwrap()), ["hi"]);
        assert!(pool.reset_runspace_state().await.unwrap());
        let res = pool.invoke(&PipelineSpec::command(Command::new("Get-History"))).await.unwrap();
        assert_eq!(res.output, Vec::<Value>::new(), "the history is gone");
        assert_eq!(res.state, PipelineState::Completed);
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &["Signal shell1/cmd1", "Signal shell1/cmd2"]);
}

fn run_with_merged_errors(transcript: &str) {
    let r = Replay::start(transcript, &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        let script = "begin {\n    $DebugPreference = 'Continue'\n    Write-Debug \"Start Block\"\n    Write-Error \"error\"\n}\nprocess {\n    $input\n}\nend {\n    Write-Debug \"End Block\"\n}";
        let mut cmd = Command::script(script);
        cmd.merge.error = true;
        let input = vec![s("message 1"), Value::I32(2), array(vec![s("3"), Value::I32(3)])];
        let res = pool.invoke_with_input(&PipelineSpec::command(cmd), input).await.unwrap();
        assert_eq!(res.state, PipelineState::Completed);
        assert_eq!(res.output.len(), 4, "{:?}", res.output);
        let err = res.output[0].as_object().unwrap();
        assert_eq!(err.type_names()[0], "System.Management.Automation.ErrorRecord");
        assert_eq!(err.to_string.as_deref(), Some("error"));
        assert_eq!(res.output[1], s("message 1"));
        assert_eq!(res.output[2], Value::I32(2));
        let Some(Container::List(items)) = &res.output[3].as_object().unwrap().container else { panic!() };
        assert_eq!(items, &vec![s("3"), Value::I32(3)]);
        assert!(res.errors.is_empty(), "the error was merged into output");
        assert_eq!(res.debug.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(), ["Start Block", "End Block"]);
        pool.close().await.unwrap();
    });
    // psremote sends END_OF_PIPELINE_INPUT in a Send of its own (see psrp_with_input).
    assert_exact(&r, &st, &["Send shell1/cmd1", "Signal shell1/cmd1"]);
    let inputs = client_messages(&st, "PIPELINE_INPUT");
    assert_eq!(inputs.len(), 3);
    assert_eq!(client_messages(&st, "END_OF_PIPELINE_INPUT").len(), 1);
}

#[test]
fn psrp_run_protocol_version_2_2() {
    // pypsrp forced its side to 2.2 (MergeError without MergeInformation); the server still
    // answered 2.3, so psremote's 2.3 CREATE_PIPELINE is the equivalent request.
    run_with_merged_errors("test_psrp_run_protocol_version_2.2.yml");
}

#[test]
fn psrp_run_protocol_version_2_3() {
    run_with_merged_errors("test_psrp_run_protocol_version_2.3.yml");
}

#[test]
fn psrp_set_runspaces() {
    let r = Replay::start("test_psrp_set_runspaces.yml", &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        assert_eq!(pool.available_runspaces().await.unwrap(), 1);
        assert!(pool.set_max_runspaces(5).await.unwrap());
        assert_eq!(pool.available_runspaces().await.unwrap(), 5);
        assert!(pool.set_min_runspaces(2).await.unwrap());
        assert!(!pool.set_min_runspaces(-1).await.unwrap());
        assert!(!pool.set_max_runspaces(-1).await.unwrap());
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
}

fn run_streams(transcript: &str, invocation_info: bool) {
    let r = Replay::start(transcript, &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        let script = "$DebugPreference = 'Continue'\n            $VerbosePreference = 'Continue'\n            Write-Debug 'debug stream'\n            Write-Verbose 'verbose stream'\n            Write-Error 'error stream'\n            Write-Output 'output stream'\n            Write-Warning 'warning stream'\n            Write-Information 'information stream'\n            ";
        let spec = PipelineSpec { invocation_info, ..PipelineSpec::script(script) };
        let res = pool.invoke(&spec).await.unwrap();
        assert_eq!(res.state, PipelineState::Completed);
        assert_eq!(strings(&res), ["output stream"]);
        assert_eq!(res.errors.len(), 1);
        assert_eq!(res.errors[0].message, "error stream");
        assert_eq!(res.debug.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(), ["debug stream"]);
        assert_eq!(res.verbose.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(), ["verbose stream"]);
        assert_eq!(res.warnings.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(), ["warning stream"]);
        assert_eq!(res.information.iter().map(|i| i.text()).collect::<Vec<_>>(), ["information stream"]);
        assert_eq!(res.information[0].source.as_deref(), Some("Write-Information"));
        assert_eq!(res.progress.len(), 1);
        let with_info = prop(&res.debug[0].raw, "InformationalRecord_SerializeInvocationInfo");
        assert_eq!(with_info, &Value::Bool(invocation_info));
        assert!(res.had_errors());
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &["Signal shell1/cmd1"]);
}

#[test]
fn psrp_stream_output_invocation() {
    run_streams("test_psrp_stream_output_invocation.yml", true);
}

#[test]
fn psrp_stream_no_output_invocation() {
    run_streams("test_psrp_stream_no_output_invocation.yml", false);
}

#[test]
fn psrp_with_history() {
    let r = Replay::start("test_psrp_with_history.yml", &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        let spec = PipelineSpec { add_to_history: true, ..PipelineSpec::script("Write-Output 1; Write-Output 2") };
        assert_eq!(pool.invoke(&spec).await.unwrap().output, vec![Value::I32(1), Value::I32(2)]);
        let res = pool.invoke(&PipelineSpec::script("Get-History")).await.unwrap();
        assert_eq!(res.output.len(), 1);
        let entry = &res.output[0];
        assert_eq!(entry.as_object().unwrap().type_names()[0], "Microsoft.PowerShell.Commands.HistoryInfo");
        assert_eq!(prop(entry, "CommandLine"), &s("Write-Output 1; Write-Output 2"));
        assert_eq!(prop(entry, "ExecutionStatus"), &s("Completed"));
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &["Signal shell1/cmd1", "Signal shell1/cmd2"]);
}

#[test]
fn psrp_with_input() {
    let r = Replay::start("test_psrp_with_input.yml", &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        let script = "begin {\n                $DebugPreference = 'Continue'\n                Write-Debug \"Start Block\"\n            }\n            process {\n                $input\n            }\n            end {\n                Write-Debug \"End Block\"\n            }";
        let input = vec![s("1"), Value::I32(2), hashtable(vec![(s("a"), s("b"))]), array(vec![s("a"), s("b")])];
        let res = pool.invoke_with_input(&PipelineSpec::script(script), input).await.unwrap();
        assert_eq!(res.state, PipelineState::Completed);
        assert_eq!(res.output.len(), 4, "{:?}", res.output);
        assert_eq!(res.output[0], s("1"));
        assert_eq!(res.output[1], Value::I32(2));
        let table = res.output[2].as_object().unwrap();
        assert_eq!(table.type_names()[0], "Deserialized.System.Collections.Hashtable");
        assert_eq!(table.container, Some(Container::Dictionary(vec![(s("a"), s("b"))])));
        assert_eq!(res.output[3].as_object().unwrap().container, Some(Container::List(vec![s("a"), s("b")])));
        assert_eq!(res.debug.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(), ["Start Block", "End Block"]);
        pool.close().await.unwrap();
    });
    // pypsrp sent the input and its end in one Send; psremote sends END_OF_PIPELINE_INPUT in a
    // second one, which the server answers as a continuation.
    assert_exact(&r, &st, &["Send shell1/cmd1", "Signal shell1/cmd1"]);
}

#[test]
fn psrp_with_jea_configuration() {
    let r = Replay::start("test_psrp_with_jea_configuration.yml", &[]);
    let st = r.run(|client| async move {
        let config = PoolConfig { configuration_name: "JEARole".into(), ..PoolConfig::default() };
        let pool = RunspacePool::open(&client, config).await.unwrap();
        let get = || named("Get-Item", vec![(Some("Path"), s(r"WSMan:\localhost\Service\AllowUnencrypted"))]);
        let res = pool.invoke(&PipelineSpec::command(get())).await.unwrap();
        assert_eq!(res.state, PipelineState::Completed);
        assert_eq!(res.output.len(), 1);
        let leaf = res.output[0].as_object().unwrap();
        assert_eq!(leaf.type_names()[0], "Microsoft.WSMan.Management.WSManConfigLeafElement");

        // Two statements: the endpoint has no FileSystem provider, and its no-language mode
        // refuses the script.
        let spec = PipelineSpec {
            statements: vec![
                vec![named("Get-Item", vec![(Some("Path"), s(r"C:\Windows"))])],
                vec![Command::script(r"Set-Item -Path WSMan:\localhost\Service\AllowUnencrypted -Value $false")],
            ],
            ..PipelineSpec::default()
        };
        let res = pool.invoke(&spec).await.unwrap();
        assert_eq!(res.state, PipelineState::Failed);
        assert_eq!(res.errors.len(), 1);
        assert_eq!(res.errors[0].message, "Cannot find a provider with the name 'FileSystem'.");
        let e = res.terminating_error.clone().unwrap();
        assert!(e.message.starts_with("The syntax is not supported by this runspace."), "{e:?}");
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &["Signal shell1/cmd1", "Signal shell1/cmd2"]);
}

// ---------------------------------------------------------------------------------------------
// Files: copy and fetch. The recorded client ran pypsrp's scripts and psremote runs its own, so
// the replay server leaves script text out of the comparison (arguments, input, NoInput and the
// other flags still must match); the answers are Windows' answers to pypsrp's scripts, which
// keep to the contract of psremote's (data chunks, then the hash; the path as the last output).

/// The copy/fetch recordings, each with a test here.
const FILE_TRANSCRIPTS: &[&str] = &[
    "test_client_copy_file.yml",
    "test_client_copy_file_empty.yml",
    "test_client_copy_file_failure.yml",
    "test_client_copy_file_really_large.yml",
    "test_client_fetch_file.yml",
    "test_client_fetch_file_expand_vars.yml",
    "test_client_fetch_file_fail_dir.yml",
    "test_client_fetch_file_fail_missing.yml",
];

#[test]
fn every_copy_and_fetch_transcript_is_replayed() {
    let mut all: Vec<String> = common::transcripts::names()
        .into_iter()
        .filter(|n| n.starts_with("test_client_copy_") || n.starts_with("test_client_fetch_"))
        .collect();
    all.sort_unstable();
    assert_eq!(all, FILE_TRANSCRIPTS);
}

const SCRIPTS_DIFFER: &[&str] = &["--ignore-script-text"];

/// A local source file with `data`, in a fresh temporary folder.
fn source_file(name: &str, data: &[u8]) -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new(name);
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    (dir, path)
}

/// Files left in `dir` (a failed fetch must leave neither the destination nor a `.part` file).
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

mod tempdir {
    use std::path::{Path, PathBuf};

    /// A temporary folder removed on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("psremote-replay-{tag}-{}-{:x}", std::process::id(), rand_u64()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn rand_u64() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
        h.finish()
    }
}

fn as_recorded_copy() -> CopyOptions {
    CopyOptions { expand_variables: false, ..CopyOptions::default() }
}

fn as_recorded_fetch() -> FetchOptions {
    FetchOptions { expand_variables: false, ..FetchOptions::default() }
}

const AZ: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const DOMAIN_DEST: &str = r"C:\Users\vagrant-domain\Documents\test_file";

/// The recordings' checks that the copied file is there, through cmd shells as pypsrp's test did.
async fn check_through_cmd(client: &Client, expected_stdout: &[u8]) {
    let shell = client.open_cmd_shell(as_recorded()).await.unwrap();
    let out = shell.run(&format!("powershell.exe Get-Content {DOMAIN_DEST}"), &[]).await.unwrap();
    assert_eq!(out.stdout, expected_stdout);
    shell.close().await.unwrap();
    let shell = client.open_cmd_shell(as_recorded()).await.unwrap();
    let out = shell.run(&format!("powershell Remove-Item -Path '{DOMAIN_DEST}'"), &[]).await.unwrap();
    assert_eq!(out.exit_code, 0);
    shell.close().await.unwrap();
}

#[test]
fn client_copy_file() {
    let r = Replay::start_with("test_client_copy_file.yml", &[], SCRIPTS_DIFFER);
    let (_dir, src) = source_file("copy_file", AZ);
    let st = r.run(|client| async move {
        let first = client.copy(&src, "test_file", &as_recorded_copy()).await.unwrap();
        assert_eq!(first.remote_path, DOMAIN_DEST);
        assert_eq!(first.bytes, 26);
        assert_eq!(first.sha1, "32d10c7b8cf96570ca04ce37f2a19d84240d3a89");
        // pypsrp's test copied again to the path the first copy returned.
        let second = client.copy(&src, &first.remote_path, &as_recorded_copy()).await.unwrap();
        assert_eq!(second.remote_path, DOMAIN_DEST);
        check_through_cmd(&client, b"abcdefghijklmnopqrstuvwxyz\r\n").await;
    });
    // psremote ends the input in a Send of its own and releases each pipeline with Signal
    // Terminate; the recorded client did neither.
    assert_exact(&r, &st, &["Send shell1/cmd1", "Signal shell1/cmd1", "Send shell2/cmd1", "Signal shell2/cmd1"]);
}

#[test]
fn client_copy_file_empty() {
    let r = Replay::start_with("test_client_copy_file_empty.yml", &[], SCRIPTS_DIFFER);
    let (_dir, src) = source_file("copy_empty", b"");
    let st = r.run(|client| async move {
        let out = client.copy(&src, "test_file", &as_recorded_copy()).await.unwrap();
        assert_eq!(out.remote_path, DOMAIN_DEST);
        assert_eq!((out.bytes, out.sha1.as_str()), (0, "da39a3ee5e6b4b0d3255bfef95601890afd80709"));
        check_through_cmd(&client, b"").await;
    });
    assert_exact(&r, &st, &["Send shell1/cmd1", "Signal shell1/cmd1"]);
}

#[test]
fn client_copy_file_really_large() {
    let r = Replay::start_with("test_client_copy_file_really_large.yml", &[], SCRIPTS_DIFFER);
    let data = AZ.repeat(20_000);
    let (_dir, src) = source_file("copy_large", &data);
    let chunks = Arc::new(Mutex::new(Vec::new()));
    let seen = chunks.clone();
    let st = r.run(|client| async move {
        // The recording's chunk size (pypsrp with its payload size mocked to 113955 bytes).
        let options = CopyOptions {
            chunk_size: Some(85_404),
            progress: Some(Arc::new(move |done, total| seen.lock().unwrap().push((done, total)))),
            ..as_recorded_copy()
        };
        let out = client.copy(&src, "test_file", &options).await.unwrap();
        assert_eq!(out.remote_path, r"C:\Users\vagrant\Documents\test_file");
        assert_eq!(out.bytes, 520_000);
        assert_eq!(out.sha1, "9019309673c06b632baeb9c84c1cc64b8de74f70");
    });
    let progress = chunks.lock().unwrap().clone();
    let expected: Vec<(u64, Option<u64>)> =
        (1..=6).map(|i| (i * 85_404, Some(520_000))).chain([(520_000, Some(520_000))]).collect();
    assert_eq!(progress, expected);
    assert_exact(&r, &st, &["Send shell1/cmd1", "Signal shell1/cmd1"]);
}

/// Windows refused the copy: the recorded client had a mocked hash, so Windows' answer is a hash
/// mismatch; psremote sends the true hash and still gets (and types) the recorded failure.
#[test]
fn client_copy_file_failure() {
    let r = Replay::start_with("test_client_copy_file_failure.yml", &[], SCRIPTS_DIFFER);
    let (_dir, src) = source_file("copy_failure", AZ);
    let st = r.run(|client| async move {
        let e = client.copy(&src, "test_file", &as_recorded_copy()).await.unwrap_err();
        let f = e.file().unwrap_or_else(|| panic!("not a file error: {e:?}"));
        assert_eq!((f.kind, f.side), (FileErrorKind::HashMismatch, FileSide::Remote), "{f:?}");
        assert_eq!(f.actual_sha1.as_deref(), Some("32d10c7b8cf96570ca04ce37f2a19d84240d3a89"));
        assert_eq!(f.expected_sha1.as_deref(), Some("c3499c2729730a7f807efb8676a92dcb6f8a3f8f"));
        assert_eq!(f.path, "test_file");
        let record = f.record.as_ref().unwrap();
        assert_eq!(record.category, 14);
        assert!(record.message.starts_with("Transport failure, hash mismatch\r\nActual: "), "{record:?}");
    });
    // The only difference from the recording: the hash input (the true one, where pypsrp's test
    // had mocked a wrong one).
    let true_hash = B64.encode("32d10c7b8cf96570ca04ce37f2a19d84240d3a89");
    let mocked_hash = B64.encode("c3499c2729730a7f807efb8676a92dcb6f8a3f8f");
    let mismatches = list(&st, "mismatches");
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    let m = mismatches[0].as_str().unwrap();
    assert!(m.contains("PIPELINE_INPUT") && m.contains(&true_hash) && m.contains(&mocked_hash), "{m}");
    let mut st = st;
    st["mismatches"] = Json::Array(Vec::new());
    assert_exact(&r, &st, &["Send shell1/cmd1", "Signal shell1/cmd1"]);
}

#[test]
fn client_fetch_file() {
    let r = Replay::start_with("test_client_fetch_file.yml", &[], SCRIPTS_DIFFER);
    let dir = tempdir::Dir::new("fetch_file");
    let dest = dir.path().join("file.txt");
    let local = dest.clone();
    let st = r.run(|client| async move {
        let out = client.fetch(r"C:\temp\file.txt", &local, &as_recorded_fetch()).await.unwrap();
        assert_eq!(out.local_path, local);
        assert_eq!(out.bytes, 250_002);
        assert_eq!(out.sha1, "70e3bea8cdb0d0c883bccff5228933d933b88a80");
    });
    let mut expected = b"abc\r\n".repeat(50_000);
    expected.extend_from_slice(b"\r\n");
    assert_eq!(std::fs::read(&dest).unwrap(), expected);
    assert_eq!(files_in(dir.path()), ["file.txt"]);
    assert_exact(&r, &st, &["Signal shell1/cmd1"]);
}

#[test]
fn client_fetch_file_expand_vars() {
    let r = Replay::start_with("test_client_fetch_file_expand_vars.yml", &[], SCRIPTS_DIFFER);
    let dir = tempdir::Dir::new("fetch_expand");
    let dest = dir.path().join("file.txt");
    let local = dest.clone();
    let st = r.run(|client| async move {
        // The path travels unexpanded; the server expands it.
        let out = client.fetch(r"%TEMP%\file.txt", &local, &FetchOptions::default()).await.unwrap();
        assert_eq!(out.sha1, "22c1a78ec5ada1cd2f3665b58b30499e51a3b029");
    });
    assert_eq!(std::fs::read(&dest).unwrap(), b"abc\r\n\r\n");
    assert_exact(&r, &st, &["Signal shell1/cmd1"]);
}

fn fetch_failure(transcript: &str, src: &'static str, kind: FileErrorKind, message: &'static str) {
    let r = Replay::start_with(transcript, &[], SCRIPTS_DIFFER);
    let dir = tempdir::Dir::new("fetch_fail");
    let local = dir.path().join("file.txt");
    let st = r.run(|client| async move {
        let e = client.fetch(src, &local, &as_recorded_fetch()).await.unwrap_err();
        let f = e.file().unwrap_or_else(|| panic!("not a file error: {e:?}"));
        assert_eq!((f.kind, f.side, f.path.as_str()), (kind, FileSide::Remote, src), "{f:?}");
        assert_eq!(f.message, message);
        assert_eq!(f.record.as_ref().unwrap().fully_qualified_error_id.as_deref(), Some(message));
    });
    assert_eq!(files_in(dir.path()), Vec::<String>::new(), "nothing written locally");
    assert_exact(&r, &st, &["Signal shell1/cmd1"]);
}

#[test]
fn client_fetch_file_fail_dir() {
    fetch_failure(
        "test_client_fetch_file_fail_dir.yml",
        r"C:\Windows",
        FileErrorKind::IsADirectory,
        r"The path at 'C:\Windows' is a directory, src must be a file",
    );
}

#[test]
fn client_fetch_file_fail_missing() {
    fetch_failure(
        "test_client_fetch_file_fail_missing.yml",
        r"C:\fakefile.txt",
        FileErrorKind::NotFound,
        r"The path at 'C:\fakefile.txt' does not exist",
    );
}

// ---------------------------------------------------------------------------------------------
// Sessions that outlive the client: disconnect, reconnect, enumerate, connect, is_alive

/// pypsrp's test: two pools opened and disconnected (the first reconnected and disconnected
/// again); a second client (a new WS-Man session) lists them and connects to each, then closes
/// them. The pool objects of the first client are dropped while disconnected: the pools stay.
#[test]
fn psrp_disconnect_runspaces() {
    let r = Replay::start("test_psrp_disconnect_runspaces.yml", &[]);
    let second = r.client();
    let st = r.run(|client| async move {
        let pool1 = open_pool(&client).await;
        pool1.disconnect().await.unwrap();
        assert_eq!(pool1.state(), PoolState::Disconnected);
        let refused = pool1.invoke(&PipelineSpec::script("1")).await.unwrap_err();
        assert_eq!(refused.kind(), psremote::ErrorKind::Disconnected, "{refused}");
        assert_eq!(pool1.disconnect().await.unwrap_err().kind(), psremote::ErrorKind::Disconnected);
        pool1.reconnect().await.unwrap();
        assert_eq!(pool1.state(), PoolState::Opened);
        pool1.disconnect().await.unwrap();
        let pool2 = open_pool(&client).await;
        pool2.disconnect().await.unwrap();
        let ids = [pool1.id().to_owned(), pool2.id().to_owned()];
        drop((pool1, pool2));

        let client2 = Client::connect(second).await.expect("a second client");
        let pools = client2.list_pools().await.unwrap();
        assert_eq!(pools.iter().map(|p| p.id().to_owned()).collect::<Vec<_>>(), ids);
        for p in &pools {
            assert!(p.is_disconnected(), "{p:?}");
            assert_eq!(p.configuration_name, "Microsoft.PowerShell");
            assert_eq!(p.shell.owner, "WIN-NNMU24VVKJ0\\vagrant");
            assert_eq!(p.shell.idle_timeout, Some(Duration::from_secs(7200)));
            assert_eq!(p.shell.buffer_mode, Some(psremote::client::BufferMode::Block));
            assert_eq!(p.pipelines, Vec::<String>::new(), "Windows listed no commands");
        }
        let mut connected = Vec::new();
        for info in &pools {
            let pool = RunspacePool::connect_to(&client2, info, PoolConfig::default()).await.unwrap();
            assert_eq!(pool.state(), PoolState::Opened);
            assert_eq!(pool.protocol_version(), Some(ProtocolVersion::V2_3));
            assert_eq!(pool.id(), info.id());
            connected.push(pool);
        }
        for pool in connected {
            pool.close().await.unwrap();
        }
    });
    assert_exact(&r, &st, &[]);
}

/// is_alive on a live pool, then on one deleted behind the client's back (InvalidSelectors):
/// false, and the pool counts as closed (no Delete follows, as in the recording).
#[test]
fn psrp_is_alive_invalid_selectors() {
    let r = Replay::start("test_psrp_is_alive_invalid_selectors.yml", &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        assert!(pool.is_alive().await.unwrap());
        assert!(!pool.is_alive().await.unwrap());
        assert!(!pool.is_alive().await.unwrap(), "known gone: no further request");
        assert_eq!(pool.invoke(&PipelineSpec::script("1")).await.unwrap_err().kind(), psremote::ErrorKind::Closed);
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
}

/// Any other fault of the Get (the recorded client provoked InvalidMessageInformationHeader)
/// is an error, not a verdict; the pool is still closed normally.
#[test]
fn psrp_is_alive_other_wsman_error() {
    let r = Replay::start("test_psrp_is_alive_other_wsman_error.yml", &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        let err = pool.is_alive().await.unwrap_err();
        assert_eq!(err.fault().and_then(|f| f.code), Some(2150858767), "{err}");
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
}

/// A Get whose connection drops (pypsrp injected a ConnectionError) is sent once more on a new
/// connection (a Get may run twice). The recorded client stopped there, so the replay has no
/// answer for the second Get (a fault), nor for psremote's Delete at close.
#[test]
fn psrp_is_alive_http_error() {
    let r = Replay::start("test_psrp_is_alive_http_error.yml", &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        assert!(pool.is_alive().await.unwrap());
        let err = pool.is_alive().await.unwrap_err();
        assert!(err.to_string().contains("unexpected Get"), "{err}");
        let _ = pool.close().await;
    });
    assert_eq!(list(&st, "unexpected"), vec![Json::from("Get"), Json::from("Delete")], "{st:#}");
    assert_eq!(pairs(&st, "unused"), Vec::<String>::new(), "{st:#}");
    assert_eq!(list(&st, "mismatches"), Vec::<Json>::new(), "{st:#}");
}

/// The recorded client received for a CommandId the server never had: psremote's way there is
/// attaching to a pipeline by id, whose Receive gets Windows' InvalidSelectors fault, reported
/// as NotFound (and no Signal follows for a command the server does not know).
#[test]
fn psrp_receive_failure() {
    let r = Replay::start("test_psrp_receive_failure.yml", &[]);
    let st = r.run(|client| async move {
        let pool = open_pool(&client).await;
        let pipeline = pool.attach_pipeline("D1BF48DA-B26C-4F4A-BE52-B382AC20DD1F").await.unwrap();
        let err = pipeline.wait().await.unwrap_err();
        assert_eq!(err.kind(), psremote::ErrorKind::NotFound, "{err}");
        assert_eq!(err.fault().and_then(|f| f.code), Some(2150858843));
        pool.close().await.unwrap();
    });
    assert_exact(&r, &st, &[]);
}
