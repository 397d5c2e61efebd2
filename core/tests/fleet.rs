//! Fan-out against loopback endpoints: a mixed fleet (healthy hosts, a wrong password, a port
//! nobody listens on, a host whose Receives stall, a host whose replies break the protocol) gives
//! one result per host with the right error, the failures do not stop the others, retries touch
//! only connection failures, a cancelled run reports the hosts it never contacted, and nothing is
//! left open on any endpoint afterwards.

mod common;

use std::time::Duration;

use common::{Endpoint, block_on, ntlm_config};
use psremote::ErrorKind;
use psremote::client::{ClientConfig, Fleet, FleetHost, FleetOptions, FleetWork, HostOutput, HostResult, HostStatus};
use psremote::psrp::PipelineState;

fn host(name: &str, config: ClientConfig) -> FleetHost {
    FleetHost { name: name.into(), config }
}

/// A URL on 127.0.0.1 where nothing listens (a port just released).
fn dead_config() -> ClientConfig {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    ClientConfig::new("x", "DOMAIN\\user", "pw")
        .with_url(&format!("http://127.0.0.1:{port}/wsman"))
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(psremote::auth::Mechanism::Ntlm)
}

/// Runs a fleet to its end (inside a runtime: the fleet spawns its hosts' tasks on it).
fn collect(hosts: Vec<FleetHost>, work: FleetWork, options: FleetOptions) -> Vec<HostResult> {
    block_on(async move {
        let mut fleet = Fleet::start(hosts, work, options).unwrap();
        let mut out = Vec::new();
        while let Some(r) = fleet.next().await {
            out.push(r);
        }
        out
    })
}

fn by_name<'a>(results: &'a [HostResult], name: &str) -> &'a HostResult {
    let found: Vec<_> = results.iter().filter(|r| r.host == name).collect();
    assert_eq!(found.len(), 1, "one result for {name}: {results:?}");
    found[0]
}

fn assert_clean(ep: &Endpoint) {
    for key in ["pipelines", "pools", "shells", "commands"] {
        assert_eq!(ep.wait_counter(key, 0), 0, "{key} left on the endpoint: {}", ep.state());
    }
}

fn output_text(r: &HostResult) -> Vec<String> {
    match &r.result {
        Ok(HostOutput::PowerShell(p)) => p.output.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        other => panic!("{}: {other:?}", r.host),
    }
}

#[test]
fn a_mixed_fleet_gives_one_typed_result_per_host() {
    let (a, b) = (Endpoint::start(&[]), Endpoint::start(&[]));
    let stalled = Endpoint::start(&["--misbehave", "stalled-receives"]);
    let broken = Endpoint::start(&["--misbehave", "foreign-command-id"]);
    let wrong = ClientConfig::new("x", common::DOMAIN_USER, "not the password")
        .with_url(&a.url)
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(psremote::auth::Mechanism::Ntlm);
    let mut hosts = vec![
        host("good-a", ntlm_config(&a)),
        host("good-b", ntlm_config(&b)),
        host("wrong-password", wrong),
        host("unreachable", dead_config()),
        host("stalled", ntlm_config(&stalled)),
        host("broken", ntlm_config(&broken)),
    ];
    for i in 0..6 {
        hosts.push(host(&format!("more-{i}"), ntlm_config(if i % 2 == 0 { &a } else { &b })));
    }
    let options = FleetOptions {
        throttle: 4,
        timeout: Some(Duration::from_secs(3)),
        connect_retries: 1,
        retry_delay: Duration::from_millis(50),
        ..FleetOptions::default()
    };
    let work = FleetWork::PowerShell("Write-Output 'hello'".into());
    let results = collect(hosts, work, options);
    assert_eq!(results.len(), 12, "{results:?}");
    let mut indexes: Vec<_> = results.iter().map(|r| r.index).collect();
    indexes.sort();
    assert_eq!(indexes, (0..12).collect::<Vec<_>>());

    for name in ["good-a", "good-b", "more-0", "more-1", "more-2", "more-3", "more-4", "more-5"] {
        let r = by_name(&results, name);
        assert_eq!(r.status(), HostStatus::Succeeded, "{r:?}");
        assert_eq!(output_text(r), vec!["hello".to_owned()]);
        assert_eq!(r.attempts, 1);
    }
    let wrong = by_name(&results, "wrong-password");
    assert_eq!(wrong.status(), HostStatus::Failed);
    assert_eq!(wrong.result.as_ref().unwrap_err().kind(), ErrorKind::Authentication, "{wrong:?}");
    assert_eq!(wrong.attempts, 1, "a refused logon is not a connection failure: no retry");

    let dead = by_name(&results, "unreachable");
    assert_eq!(dead.status(), HostStatus::Unreachable);
    assert_eq!(dead.result.as_ref().unwrap_err().kind(), ErrorKind::Connect);
    assert_eq!(dead.attempts, 2, "one retry for a connection failure");

    let slow = by_name(&results, "stalled");
    assert_eq!(slow.status(), HostStatus::Failed);
    let err = slow.result.as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("the run on stalled did not finish within 3 s"), "{err}");

    let broken_result = by_name(&results, "broken");
    assert_eq!(broken_result.status(), HostStatus::Failed);
    assert_eq!(broken_result.result.as_ref().unwrap_err().kind(), ErrorKind::Protocol, "{broken_result:?}");

    for ep in [&a, &b, &stalled, &broken] {
        assert_clean(ep);
    }
}

#[test]
fn a_failing_script_and_a_failing_command_are_failures_with_their_records() {
    let ep = Endpoint::start(&[]);
    let hosts = vec![host("one", ntlm_config(&ep)), host("two", ntlm_config(&ep))];
    let results =
        collect(hosts, FleetWork::PowerShell("Invoke-Failure -Message 'no disk'".into()), FleetOptions::default());
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.status(), HostStatus::Failed, "{r:?}");
        let Ok(HostOutput::PowerShell(p)) = &r.result else { panic!("{r:?}") };
        assert_eq!(p.state, PipelineState::Failed);
        let record = p.terminating_error.as_ref().expect("the terminating error");
        assert!(record.message.contains("no disk"), "{record:?}");
    }

    let cmd = |command: &str, args: &[&str]| FleetWork::Cmd {
        command: command.into(),
        arguments: args.iter().map(|s| s.to_string()).collect(),
    };
    let hosts = vec![host("echo", ntlm_config(&ep))];
    let ok = collect(hosts, cmd("echo", &["fleet"]), FleetOptions::default());
    let Ok(HostOutput::Cmd(out)) = &ok[0].result else { panic!("{ok:?}") };
    assert_eq!((out.stdout.as_slice(), out.exit_code, ok[0].status()), (&b"fleet\n"[..], 0, HostStatus::Succeeded));

    let hosts = vec![host("exit", ntlm_config(&ep))];
    let failed = collect(hosts, cmd("exit", &["3"]), FleetOptions::default());
    let Ok(HostOutput::Cmd(out)) = &failed[0].result else { panic!("{failed:?}") };
    assert_eq!((out.exit_code, failed[0].status()), (3, HostStatus::Failed));
    assert_clean(&ep);
}

#[test]
fn a_cancelled_run_reports_the_hosts_it_never_contacted() {
    let stalled = Endpoint::start(&["--misbehave", "stalled-receives"]);
    let hosts: Vec<_> = (0..10).map(|i| host(&format!("h{i}"), ntlm_config(&stalled))).collect();
    let options = FleetOptions { throttle: 2, ..FleetOptions::default() };
    let results = block_on(async move {
        let mut fleet = Fleet::start(hosts, FleetWork::PowerShell("Write-Output 'x'".into()), options).unwrap();
        assert_eq!(fleet.total(), 10);
        let cancel = fleet.canceller();
        // Both running hosts wait on their stalled Receives; cancel once both pipelines run.
        let watcher = std::thread::spawn(move || {
            let _ = stalled.wait_counter("pipelines", 2);
            cancel.cancel();
            stalled
        });
        let mut out = Vec::new();
        while let Some(r) = fleet.next().await {
            out.push(r);
        }
        (out, watcher)
    });
    let (results, watcher) = results;
    let stalled = watcher.join().unwrap();
    assert_eq!(results.len(), 10, "{results:?}");
    for r in &results {
        assert_eq!(r.result.as_ref().unwrap_err().kind(), ErrorKind::Closed, "{r:?}");
    }
    let contacted = results.iter().filter(|r| r.attempts > 0).count();
    assert_eq!(contacted, 2, "only the two running hosts were contacted: {results:?}");
    assert_clean(&stalled);
}

#[test]
fn a_throttle_of_zero_is_refused_before_anything_is_contacted() {
    let err = Fleet::start(
        vec![host("h", dead_config())],
        FleetWork::PowerShell("1".into()),
        FleetOptions { throttle: 0, ..FleetOptions::default() },
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}
