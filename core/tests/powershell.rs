//! PowerShell (PSRP) against the loopback endpoint, whose server side is psrpcore's
//! ServerRunspacePool/ServerPipeline; over NTLM with message encryption.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{DOMAIN_USER, Endpoint, PASSWORD, block_on};
use psremote::auth::Mechanism;
use psremote::client::{Client, ClientConfig, Host, PipelineResult, PoolConfig, RunspacePool};
use psremote::clixml::Value;
use psremote::psrp::{
    Command, Event, HostCall, HostMethod, HostResponse, PipelineSpec, PipelineState, ProtocolVersion,
};

async fn client(ep: &Endpoint) -> Client {
    let cfg = ClientConfig::new("x", DOMAIN_USER, PASSWORD)
        .with_url(&ep.url)
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(Mechanism::Ntlm);
    Client::connect(cfg).await.unwrap()
}

async fn pool(ep: &Endpoint) -> RunspacePool {
    RunspacePool::open(&client(ep).await, PoolConfig::default()).await.unwrap()
}

fn strings(r: &PipelineResult) -> Vec<String> {
    r.output.iter().map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}")).to_owned()).collect()
}

#[test]
fn runs_scripts_and_commands() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let pool = pool(&ep).await;
        assert_eq!(pool.protocol_version(), Some(ProtocolVersion::V2_3));
        let r = pool.invoke(&PipelineSpec::script("Write-Output hello")).await.unwrap();
        assert_eq!(strings(&r), ["hello"]);
        assert_eq!(r.state, PipelineState::Completed);
        assert!(!r.had_errors());

        let mut cmd = Command::new("Write-Output");
        cmd.parameters.push((Some("InputObject".into()), Value::Str("named".into())));
        let r = pool.invoke(&PipelineSpec::command(cmd)).await.unwrap();
        assert_eq!(strings(&r), ["named"]);

        let mut positional = Command::new("Write-Output");
        positional.parameters.push((None, Value::I32(42)));
        let spec = PipelineSpec {
            statements: vec![vec![positional], vec![Command::script("Write-Output second")]],
            ..PipelineSpec::default()
        };
        let r = pool.invoke(&spec).await.unwrap();
        assert_eq!(r.output, vec![Value::I32(42), Value::Str("second".into())]);

        let r = pool.invoke(&PipelineSpec::script("1+1")).await.unwrap();
        assert_eq!(r.output.len(), 1);
        assert_eq!(r.output[0].as_i64(), Some(2));
        pool.close().await.unwrap();
    });
    assert_eq!(ep.wait_counter("pools", 0), 0);
}

#[test]
fn every_stream_arrives() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let pool = pool(&ep).await;
        let script = "Write-Output out; Write-Error err; Write-Warning warn; Write-Verbose verb; Write-Debug dbg; \
                      Write-Information info; Write-Progress -Activity act -Status stat -PercentComplete 50";
        let r = pool.invoke(&PipelineSpec::script(script)).await.unwrap();
        assert_eq!(strings(&r), ["out"]);
        assert_eq!(r.errors.len(), 1);
        assert!(r.errors[0].message.contains("err"), "{:?}", r.errors[0]);
        assert_eq!(r.warnings[0].message, "warn");
        assert_eq!(r.verbose[0].message, "verb");
        assert_eq!(r.debug[0].message, "dbg");
        assert_eq!(r.information[0].text(), "info");
        assert_eq!(r.progress[0].activity, "act");
        assert_eq!(r.progress[0].percent_complete, 50);
        assert!(r.had_errors());
        assert_eq!(r.state, PipelineState::Completed);
        pool.close().await.unwrap();
    });
}

#[test]
fn output_streams_while_the_pipeline_runs() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let pool = pool(&ep).await;
        let mut p = pool.start(&PipelineSpec::script("Write-Output first; Start-Sleep -Seconds 30")).await.unwrap();
        match p.next_event().await.unwrap() {
            Some(Event::Output { value, .. }) => assert_eq!(value, Value::Str("first".into())),
            other => panic!("{other:?}"),
        }
        p.stop().await.unwrap();
        let r = p.wait().await.unwrap();
        assert_eq!(r.state, PipelineState::Stopped);
        pool.close().await.unwrap();
    });
}

#[test]
fn input_is_streamed_to_the_pipeline() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let pool = pool(&ep).await;
        let input: Vec<Value> = (0..2000).map(Value::I32).collect();
        let r = pool.invoke_with_input(&PipelineSpec::script("Measure-Input"), input).await.unwrap();
        let m = r.output[0].as_object().unwrap();
        assert_eq!(m.property("Count").and_then(Value::as_i64), Some(2000));

        let r = pool
            .invoke_with_input(&PipelineSpec::script("Write-Output"), vec![Value::Str("a".into()), Value::I32(7)])
            .await
            .unwrap();
        assert_eq!(r.output, vec![Value::Str("a".into()), Value::I32(7)]);
        pool.close().await.unwrap();
    });
}

#[test]
fn stop_and_failure_end_the_pipeline_with_their_state() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let pool = pool(&ep).await;
        let p = pool.start(&PipelineSpec::script("Invoke-Stall")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        p.stop().await.unwrap();
        assert_eq!(p.wait().await.unwrap().state, PipelineState::Stopped);

        let r = pool.invoke(&PipelineSpec::script("Invoke-Failure -Message 'it broke'")).await.unwrap();
        assert_eq!(r.state, PipelineState::Failed);
        let e = r.terminating_error.clone().expect("a failed pipeline carries its error record");
        assert!(e.message.contains("it broke"), "{e:?}");
        assert!(r.had_errors());

        // The pool is still usable.
        let r = pool.invoke(&PipelineSpec::script("Write-Output still")).await.unwrap();
        assert_eq!(strings(&r), ["still"]);
        pool.close().await.unwrap();
    });
}

#[test]
fn securestrings_travel_both_ways_after_the_key_exchange() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let pool = pool(&ep).await;
        let r = pool
            .invoke(&PipelineSpec::script("ConvertTo-SecureString -String 's3cr3t' -AsPlainText -Force"))
            .await
            .unwrap();
        // ConvertTo-SecureString needs the session key; before the exchange the server fails it.
        let ciphertext = match r.output.first() {
            Some(Value::SecureString(ct)) => ct.clone(),
            _ => {
                pool.exchange_key().await.unwrap();
                let r = pool
                    .invoke(&PipelineSpec::script("ConvertTo-SecureString -String 's3cr3t' -AsPlainText -Force"))
                    .await
                    .unwrap();
                match r.output.first() {
                    Some(Value::SecureString(ct)) => ct.clone(),
                    other => panic!("expected a SecureString, got {other:?} ({:?})", r.errors),
                }
            }
        };
        // The server may have asked for our key itself; the key then arrives on the pool's own
        // Receive, so wait for it before decrypting.
        pool.exchange_key().await.unwrap();
        assert_eq!(pool.decrypt_secure_string(&ciphertext).unwrap().as_str(), "s3cr3t");

        let secret = pool.secure_string("from the client").await.unwrap();
        let mut cmd = Command::new("Write-Output");
        cmd.parameters.push((Some("InputObject".into()), secret));
        let r = pool.invoke(&PipelineSpec::command(cmd)).await.unwrap();
        let Some(Value::SecureString(back)) = r.output.first() else { panic!("{:?}", r.output) };
        assert_eq!(pool.decrypt_secure_string(back).unwrap().as_str(), "from the client");
        pool.close().await.unwrap();
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
fn host_calls_reach_the_user_host() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = client(&ep).await;
        let config = PoolConfig { host: Some(Arc::new(TestHost)), ..PoolConfig::default() };
        let pool = RunspacePool::open(&client, config).await.unwrap();
        let r = pool.invoke(&PipelineSpec::script("Read-Host -Prompt 'name?'")).await.unwrap();
        assert_eq!(strings(&r), ["typed by the host"]);
        let r = pool.invoke(&PipelineSpec::script("Get-Credential")).await.unwrap();
        let cred = r.output[0].as_object().unwrap_or_else(|| panic!("{:?} {:?}", r.output, r.errors));
        assert_eq!(cred.property("UserName").and_then(Value::as_str), Some("DOMAIN\\someone"));
        // The password went to the server encrypted, and psrpcore decrypted it with the same key
        // before sending the credential back.
        let Some(Value::SecureString(ct)) = cred.property("Password") else { panic!("{cred:?}") };
        assert_eq!(pool.decrypt_secure_string(ct).unwrap().as_str(), "cred-password");
        let r = pool.invoke(&PipelineSpec::script("Read-Host -AsSecureString")).await.unwrap();
        let Some(Value::SecureString(ct)) = r.output.first() else { panic!("{:?} {:?}", r.output, r.errors) };
        assert_eq!(pool.decrypt_secure_string(ct).unwrap().as_str(), "typed secret");
        pool.close().await.unwrap();
    });
}

#[test]
fn host_calls_without_a_host_fail_instead_of_hanging() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let pool = pool(&ep).await;
        let r = pool.invoke(&PipelineSpec::script("Read-Host -Prompt 'name?'")).await.unwrap();
        assert!(r.had_errors(), "{r:?}");
        assert!(r.output.is_empty());
        pool.close().await.unwrap();
    });
}

#[test]
fn runspace_counts_and_reset() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let pool = pool(&ep).await;
        assert!(pool.set_max_runspaces(3).await.unwrap());
        assert!(pool.set_min_runspaces(2).await.unwrap());
        assert_eq!(pool.available_runspaces().await.unwrap(), 3);
        assert!(pool.reset_runspace_state().await.unwrap());
        pool.close().await.unwrap();
    });
}

#[test]
fn pipelines_run_concurrently_on_one_pool() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = client(&ep).await;
        let pool = RunspacePool::open(&client, PoolConfig { max_runspaces: 3, ..PoolConfig::default() }).await.unwrap();
        let a = pool.start(&PipelineSpec::script("Start-Sleep -Milliseconds 800; Write-Output a")).await.unwrap();
        let b = pool.start(&PipelineSpec::script("Start-Sleep -Milliseconds 800; Write-Output b")).await.unwrap();
        let c = pool.start(&PipelineSpec::script("Write-Output c")).await.unwrap();
        let (ra, rb, rc) = tokio::join!(a.wait(), b.wait(), c.wait());
        assert_eq!(strings(&ra.unwrap()), ["a"]);
        assert_eq!(strings(&rb.unwrap()), ["b"]);
        assert_eq!(strings(&rc.unwrap()), ["c"]);
        pool.close().await.unwrap();
    });
    assert_eq!(ep.wait_counter("pipelines", 0), 0);
}

#[test]
fn tiny_fragments_and_huge_objects_reassemble() {
    let ep = Endpoint::start(&["--psrp-fragment-size", "200"]);
    block_on(async {
        let pool = pool(&ep).await;
        let r = pool.invoke(&PipelineSpec::script("New-HugeObject -Size 300000")).await.unwrap();
        assert_eq!(r.output[0].as_str().map(str::len), Some(300_000));
        let r = pool.invoke(&PipelineSpec::script("New-TestObject -Count 50 -Properties 20 -Size 10")).await.unwrap();
        assert_eq!(r.output.len(), 50);
        assert_eq!(r.output[0].as_object().unwrap().extended.len(), 20);
        pool.close().await.unwrap();
    });
}

#[test]
fn restricted_configuration_limits_commands() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = client(&ep).await;
        let config = PoolConfig { configuration_name: "Restricted".into(), ..PoolConfig::default() };
        let pool = RunspacePool::open(&client, config).await.unwrap();
        let r = pool.invoke(&PipelineSpec::command(Command::new("Get-Date"))).await.unwrap();
        assert_eq!(r.output.len(), 1);
        let r = pool.invoke(&PipelineSpec::command(Command::new("Get-Process"))).await.unwrap();
        assert!(r.had_errors());
        pool.close().await.unwrap();

        let bad =
            RunspacePool::open(&client, PoolConfig { configuration_name: "NoSuch".into(), ..PoolConfig::default() })
                .await
                .unwrap_err();
        assert!(bad.fault().is_some(), "{bad:?}");
    });
}

#[test]
fn dropped_pool_and_pipeline_are_released() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let pool = pool(&ep).await;
        let p = pool.start(&PipelineSpec::script("Invoke-Stall")).await.unwrap();
        drop(p);
        drop(pool);
    });
    assert_eq!(ep.wait_counter("pipelines", 0), 0);
    assert_eq!(ep.wait_counter("pools", 0), 0);
}

// ---------------------------------------------------------------------------------------------
// Compatibility with what Windows servers do

#[test]
fn ids_the_server_chose_are_adopted() {
    // PowerShell 2.0 servers ignore the ShellId and CommandId the client asks for.
    let ep = Endpoint::start(&["--server-ids"]);
    block_on(async {
        let pool = pool(&ep).await;
        let r = pool.invoke(&PipelineSpec::script("Write-Output hello")).await.unwrap();
        assert_eq!(strings(&r), ["hello"]);
        let spec = PipelineSpec { has_input: true, ..PipelineSpec::command(Command::new("Measure-Input")) };
        let r = pool.invoke_with_input(&spec, vec![Value::I32(1), Value::I32(2)]).await.unwrap();
        assert_eq!(r.state, PipelineState::Completed, "{:?}", r.errors);
        let p = pool.start(&PipelineSpec::script("Invoke-Stall")).await.unwrap();
        p.stop().await.unwrap();
        assert_eq!(p.wait().await.unwrap().state, PipelineState::Stopped);
        pool.close().await.unwrap();
    });
    assert_eq!(ep.wait_counter("pipelines", 0), 0);
    assert_eq!(ep.wait_counter("shells", 0), 0);
}

/// Records the void calls it handles, slowly.
struct SlowWriter(std::sync::Mutex<Vec<HostMethod>>);

impl Host for SlowWriter {
    fn call(&self, call: &HostCall) -> HostResponse {
        std::thread::sleep(Duration::from_millis(300));
        self.0.lock().unwrap().push(call.method);
        HostResponse::NotImplemented
    }
}

#[test]
fn void_host_calls_are_handled_before_the_result_is() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = client(&ep).await;
        let host = Arc::new(SlowWriter(std::sync::Mutex::new(Vec::new())));
        let config = PoolConfig { host: Some(host.clone()), ..PoolConfig::default() };
        let pool = RunspacePool::open(&client, config).await.unwrap();
        let r = pool.invoke(&PipelineSpec::script("Write-Host one; Write-Output two; Write-Host three")).await.unwrap();
        assert_eq!(strings(&r), ["two"]);
        // Nothing waited after invoke(): the host already saw both writes.
        let seen = host.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        pool.close().await.unwrap();
    });
}

struct RawUiHost(Option<psremote::psrp::HostDefaults>);

impl Host for RawUiHost {
    fn call(&self, _: &HostCall) -> HostResponse {
        HostResponse::NotImplemented
    }

    fn defaults(&self) -> Option<psremote::psrp::HostDefaults> {
        self.0.clone()
    }
}

/// `Get-Host`'s `UI` and `UI.RawUI` as the server (psrpcore reading HostInfo) sees them.
async fn remote_ui(ep: &Endpoint, host: Option<Arc<dyn Host>>) -> (Value, Value) {
    let client = client(ep).await;
    let pool = RunspacePool::open(&client, PoolConfig { host, ..PoolConfig::default() }).await.unwrap();
    let r = pool.invoke(&PipelineSpec::script("Get-Host")).await.unwrap();
    pool.close().await.unwrap();
    let ui = r.output[0].as_object().unwrap().property("UI").cloned().unwrap();
    let raw = ui.as_object().and_then(|o| o.property("RawUI").cloned()).unwrap_or(Value::Nil);
    (ui, raw)
}

#[test]
fn a_host_with_defaults_offers_a_raw_ui() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let defaults = psremote::psrp::HostDefaults {
            foreground_color: 14,
            buffer_size: (132, 9001),
            window_title: "agent console".into(),
            ..Default::default()
        };
        let (_, raw) = remote_ui(&ep, Some(Arc::new(RawUiHost(Some(defaults))))).await;
        let raw = raw.as_object().unwrap_or_else(|| panic!("no raw UI: {raw:?}"));
        assert_eq!(raw.property("ForegroundColor").and_then(Value::as_str), Some("Yellow"));
        assert_eq!(raw.property("BufferSize").and_then(Value::as_str), Some("132,9001"));
        assert_eq!(raw.property("WindowTitle").and_then(Value::as_str), Some("agent console"));

        let (ui, raw) = remote_ui(&ep, Some(Arc::new(RawUiHost(None)))).await;
        assert!(ui.as_object().is_some(), "{ui:?}");
        assert_eq!(raw, Value::Nil);
        let (ui, _) = remote_ui(&ep, None).await;
        assert_eq!(ui, Value::Nil);
    });
}

#[test]
fn an_envelope_size_the_user_set_is_kept() {
    // A server whose MaxEnvelopeSizekb is 150 refuses 500 KB requests: psremote must not raise
    // a size the user set to match it, even though the server speaks protocol 2.3.
    let ep = Endpoint::start(&["--max-envelope-kb", "150"]);
    block_on(async {
        let cfg = ClientConfig::new("x", DOMAIN_USER, PASSWORD)
            .with_url(&ep.url)
            .unwrap()
            .with_trusted_hosts(["127.0.0.1"])
            .with_mechanism(Mechanism::Ntlm);
        let mut cfg = cfg;
        cfg.max_envelope_size = Some(150 * 1024);
        let client = Client::connect(cfg).await.unwrap();
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        assert_eq!(pool.max_envelope_size(), 150 * 1024);
        let spec = PipelineSpec { has_input: true, ..PipelineSpec::command(Command::new("Measure-Input")) };
        let big = Value::Str("x".repeat(400_000));
        let r = pool.invoke_with_input(&spec, vec![big]).await.unwrap();
        assert_eq!(r.state, PipelineState::Completed, "{:?}", r.errors);
        pool.close().await.unwrap();

        // Without a size set, psremote raises it for a protocol 2.3 server.
        let auto = pool_default_envelope(&ep).await;
        assert_eq!(auto, 512_000);
    });
}

async fn pool_default_envelope(ep: &Endpoint) -> u32 {
    let pool = pool(ep).await;
    let size = pool.max_envelope_size();
    pool.close().await.unwrap();
    size
}

// ---------------------------------------------------------------------------------------------
// The rest of PSRP

#[test]
fn command_metadata_lists_the_servers_commands() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let pool = pool(&ep).await;
        let query = psremote::psrp::CommandMetadataQuery { names: vec!["Write-*".into()], ..Default::default() };
        let found = pool.command_metadata(&query).await.unwrap();
        let mut names: Vec<&str> = found
            .iter()
            .map(|m| {
                m.as_object()
                    .and_then(|o| o.property("Name"))
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("{m:?}"))
            })
            .collect();
        names.sort_unstable();
        assert!(names.contains(&"Write-Output") && names.contains(&"Write-Error"), "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("Write-")), "{names:?}");
        let none = pool
            .command_metadata(&psremote::psrp::CommandMetadataQuery {
                names: vec!["No-SuchCommand".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty());
        pool.close().await.unwrap();
    });
    assert_eq!(ep.wait_counter("pipelines", 0), 0);
}

#[test]
fn application_arguments_reach_the_server_as_a_primitive_dictionary() {
    use psremote::clixml::{Container, PsObject};
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = client(&ep).await;
        let args = Value::Object(Arc::new(PsObject {
            container: Some(Container::Dictionary(vec![
                (Value::Str("tenant".into()), Value::Str("blue".into())),
                (Value::Str("run".into()), Value::I32(7)),
            ])),
            ..PsObject::new()
        }));
        let config = PoolConfig { application_arguments: Some(args), ..PoolConfig::default() };
        let pool = RunspacePool::open(&client, config).await.unwrap();
        let r = pool.invoke(&PipelineSpec::script("Get-PSSenderInfo")).await.unwrap();
        let got = r.output[0].as_object().unwrap().property("ApplicationArguments").cloned().unwrap();
        let got = got.as_object().unwrap_or_else(|| panic!("{got:?}"));
        assert_eq!(
            got.type_names.as_deref().and_then(|t| t.first()).map(String::as_str),
            Some("System.Management.Automation.PSPrimitiveDictionary")
        );
        let Some(Container::Dictionary(entries)) = &got.container else { panic!("{got:?}") };
        assert!(entries.contains(&(Value::Str("tenant".into()), Value::Str("blue".into()))), "{entries:?}");
        assert!(entries.contains(&(Value::Str("run".into()), Value::I32(7))), "{entries:?}");
        pool.close().await.unwrap();
    });
}

#[test]
fn key_exchange_with_a_deadline() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let pool = pool(&ep).await;
        pool.exchange_key_within(Duration::from_secs(60)).await.unwrap();
        assert!(pool.has_session_key());
        pool.close().await.unwrap();
    });
}

#[test]
fn the_signal_after_a_pipeline_is_off_the_callers_path() {
    // The endpoint holds every Signal for a minute: invocations that waited for the Signal
    // Terminate psremote sends after each pipeline would take minutes, not moments.
    let ep = Endpoint::start(&["--psrp-signal-delay-ms", "60000"]);
    block_on(async {
        let pool = pool(&ep).await;
        let three = async {
            for i in 0..3 {
                let r = pool.invoke(&PipelineSpec::script(format!("Write-Output {i}"))).await.unwrap();
                assert_eq!(r.state, PipelineState::Completed);
            }
        };
        // A hang guard, far above what three invocations take and far below three Signals.
        tokio::time::timeout(Duration::from_secs(30), three).await.expect("an invocation waited for its Signal");
        pool.close().await.unwrap();
    });
}

#[test]
fn a_pool_that_fails_to_open_leaves_no_shell_behind() {
    // The first Receive of the pool's opening handshake comes back broken in each way; the
    // shell the Create made is deleted before the error is returned.
    for mode in ["truncated-xml", "bad-base64", "bad-seal", "unsealed", "wrong-relates-to"] {
        let ep = Endpoint::start(&["--misbehave", mode]);
        block_on(async {
            let client = client(&ep).await;
            let err = RunspacePool::open(&client, PoolConfig::default()).await.unwrap_err();
            assert!(
                matches!(err.kind(), psremote::ErrorKind::Protocol | psremote::ErrorKind::Transport),
                "{mode}: {err:?}"
            );
        });
        assert_eq!(ep.wait_counter("shells", 0), 0, "{mode}: a shell was left on the server");
    }
}

#[test]
fn closing_a_pool_ends_its_pipelines_receive_loops() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let pool = pool(&ep).await;
        let mut p = pool.start(&PipelineSpec::script("Invoke-Stall")).await.unwrap();
        pool.clone().close().await.unwrap();
        // The reader learns the pool is closed instead of waiting for a pipeline that is gone.
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match p.next_event().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(e) => return Some(e),
                }
            }
        })
        .await
        .expect("the pipeline's reader hung after close");
        assert!(matches!(ended, Some(psremote::Error::Closed(_))), "{ended:?}");
        // Nothing polls the deleted shell any more.
        let before = ep.counter("requests");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(ep.counter("requests"), before, "requests after the pool was closed");
    });
    assert_eq!(ep.wait_counter("shells", 0), 0);
}
