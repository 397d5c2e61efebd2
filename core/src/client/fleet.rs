//! Fan-out: one script (or one cmd command) on many hosts from one process.
//!
//! [`Fleet::start`] takes the hosts, each with its own [`ClientConfig`] (shared options with
//! per-host overrides are the caller's to merge), and runs the work on at most
//! [`FleetOptions::throttle`] of them at once. Each host's connection, runspace pool (or cmd
//! shell) and pipeline are opened, used and closed in a task of its own, so a slow or dead host
//! holds only its own slot. Whatever happens on a host is that host's [`HostResult`]: an
//! unreachable host, a refused logon, a deadline or a failing script never stops the others.
//! Results come out of [`Fleet::next`] in completion order, through a channel as deep as the
//! throttle: a consumer that does not keep up holds the hosts that finished, not their memory
//! piling up. [`FleetCancel`] stops the run from anywhere: hosts not started are reported as
//! cancelled without being contacted, running ones are cut off (their pipelines stopped and
//! their pools and shells deleted by the usual drop-time cleanup).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::powershell::{PipelineResult, PoolConfig, RunspacePool};
use super::run_cmd::RunCmdOptions;
use super::{Client, ClientConfig, CmdOutput, CmdShellOptions, CommandOptions};
use crate::error::{Error, Result};
use crate::psrp::{PipelineSpec, PipelineState};

/// Hosts at once unless the caller says otherwise (`Invoke-Command`'s ThrottleLimit default).
pub const DEFAULT_THROTTLE: usize = 32;

/// File descriptors one host holds at most while it runs: its connections (the pool's and a
/// pipeline's Receive) and one spare for a reconnect.
const FDS_PER_HOST: u64 = 3;
/// Descriptors kept for everything else in the process (the caller's files, the runtime).
const FDS_RESERVED: u64 = 64;

/// One host of a fleet.
#[derive(Debug, Clone)]
pub struct FleetHost {
    /// The host as the caller named it: results carry it (`PSComputerName`).
    pub name: String,
    /// How to reach it.
    pub config: ClientConfig,
}

/// What runs on every host.
#[derive(Debug, Clone)]
pub enum FleetWork {
    /// A PowerShell script, in a runspace pool of its own on each host.
    PowerShell(String),
    /// A cmd command and its arguments, in a cmd shell of its own on each host.
    Cmd { command: String, arguments: Vec<String> },
}

/// How a fleet runs.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Hosts at once (at least 1).
    pub throttle: usize,
    /// Limit for one host, from its connection to its pool's close; `None` for none.
    pub timeout: Option<Duration>,
    /// Further attempts at a host whose connection could not be made (only then: a host that
    /// answered is never asked twice).
    pub connect_retries: u32,
    /// Wait before each further attempt.
    pub retry_delay: Duration,
    /// Output a cmd command may write (see [`RunCmdOptions::max_output`]).
    pub max_output: Option<u64>,
    /// The runspace pool each host opens for a script: session configuration (JEA endpoint),
    /// runspaces, host, open deadline.
    pub pool: PoolConfig,
    /// The cmd shell each host opens for a command (working directory, environment, code page...).
    pub shell: CmdShellOptions,
    /// How a cmd command is started.
    pub command: CommandOptions,
    /// Sent to a cmd command's stdin, which is then closed.
    pub stdin: Option<Vec<u8>>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            throttle: DEFAULT_THROTTLE,
            timeout: None,
            connect_retries: 0,
            retry_delay: Duration::from_secs(1),
            max_output: Some(super::DEFAULT_MAX_OUTPUT),
            pool: PoolConfig::default(),
            shell: CmdShellOptions::default(),
            command: CommandOptions::default(),
            stdin: None,
        }
    }
}

/// What one host produced.
#[derive(Debug, Clone)]
pub enum HostOutput {
    /// The pipeline's result (its final state may be Failed or Stopped).
    PowerShell(Box<PipelineResult>),
    /// The command's output and exit code.
    Cmd(CmdOutput),
}

/// How a host's run ended, as a fleet summary counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostStatus {
    /// The script completed (non-terminating errors allowed), or the command exited with 0.
    Succeeded,
    /// Anything else after the host was reached: logon refused, a failing script or a non-zero
    /// exit code, a deadline, a broken reply, a cancelled run.
    Failed,
    /// No connection could be made (after the retries).
    Unreachable,
}

/// One host's outcome.
#[derive(Debug)]
pub struct HostResult {
    /// The host's position in the list given to [`Fleet::start`].
    pub index: usize,
    /// The host as named.
    pub host: String,
    /// Its output, or why there is none.
    pub result: Result<HostOutput>,
    /// Time from the host's first connection attempt to its result.
    pub elapsed: Duration,
    /// Connection attempts made (0 when the run was cancelled before the host's turn).
    pub attempts: u32,
}

impl HostResult {
    /// How the host's run ended.
    pub fn status(&self) -> HostStatus {
        match &self.result {
            Err(e) if e.is_connect_failure() => HostStatus::Unreachable,
            Err(_) => HostStatus::Failed,
            Ok(HostOutput::PowerShell(r)) if r.state == PipelineState::Completed => HostStatus::Succeeded,
            Ok(HostOutput::Cmd(o)) if o.exit_code == 0 => HostStatus::Succeeded,
            Ok(_) => HostStatus::Failed,
        }
    }
}

/// Stops a fleet's run from any thread or task; cheap to clone.
#[derive(Debug, Clone)]
pub struct FleetCancel(Arc<watch::Sender<bool>>);

impl FleetCancel {
    /// Stops the run: hosts not started yet are reported as cancelled, running ones are cut off.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }
}

/// A running fan-out; dropping it cancels what has not finished.
#[derive(Debug)]
pub struct Fleet {
    results: mpsc::Receiver<HostResult>,
    cancel: FleetCancel,
    total: usize,
    driver: JoinHandle<()>,
}

impl Fleet {
    /// Starts the work on the hosts; call it inside a tokio runtime (the hosts' tasks are
    /// spawned on it; the bindings use [`runtime`](super::runtime)). Fails at once (nothing contacted) on a throttle of 0, or
    /// when the process may not open the file descriptors the throttle needs (the soft limit
    /// is raised up to the hard one when it can be).
    pub fn start(hosts: Vec<FleetHost>, work: FleetWork, options: FleetOptions) -> Result<Self> {
        if options.throttle == 0 {
            return Err(Error::InvalidConfig("the throttle must be at least 1".into()));
        }
        let throttle = options.throttle.min(hosts.len().max(1));
        ensure_descriptors(throttle as u64 * FDS_PER_HOST + FDS_RESERVED)?;
        let total = hosts.len();
        let (tx, results) = mpsc::channel(throttle);
        let (cancel_tx, cancelled) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(throttle));
        let work = Arc::new(work);
        let options = Arc::new(options);
        let driver = tokio::spawn(async move {
            for (index, host) in hosts.into_iter().enumerate() {
                let permit = tokio::select! {
                    biased;
                    _ = wait_cancelled(cancelled.clone()) => None,
                    permit = slots.clone().acquire_owned() => permit.ok(),
                };
                let (tx, work, options, cancelled) = (tx.clone(), work.clone(), options.clone(), cancelled.clone());
                tokio::spawn(async move {
                    let result = match permit {
                        Some(_permit) => run_host(index, host, &work, &options, cancelled).await,
                        None => HostResult {
                            index,
                            host: host.name,
                            result: Err(Error::Closed("fleet run (cancelled)")),
                            elapsed: Duration::ZERO,
                            attempts: 0,
                        },
                    };
                    // The consumer may have gone; then nobody wants the result.
                    let _ = tx.send(result).await;
                });
            }
        });
        Ok(Self { results, cancel: FleetCancel(Arc::new(cancel_tx)), total, driver })
    }

    /// The next host to finish, or `None` once every host has its result.
    pub async fn next(&mut self) -> Option<HostResult> {
        self.results.recv().await
    }

    /// A handle that cancels the run.
    pub fn canceller(&self) -> FleetCancel {
        self.cancel.clone()
    }

    /// How many hosts the run has.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.cancel.cancel();
        // The driver only spawns; the host tasks see the cancellation and end on their own.
        let _ = &self.driver;
    }
}

async fn wait_cancelled(mut cancelled: watch::Receiver<bool>) {
    // A sender dropped without cancelling (it cannot be: the Fleet holds it) waits forever.
    if cancelled.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn run_host(
    index: usize,
    host: FleetHost,
    work: &FleetWork,
    options: &FleetOptions,
    cancelled: watch::Receiver<bool>,
) -> HostResult {
    let started = Instant::now();
    let mut attempts = 0u32;
    let name = host.name.clone();
    let what = || format!("the run on {name}");
    let job = super::within(options.timeout, what, run_on(host.config, work, options, &mut attempts));
    let result = tokio::select! {
        biased;
        _ = wait_cancelled(cancelled) => Err(Error::Closed("fleet run (cancelled)")),
        r = job => r,
    };
    HostResult { index, host: host.name, result, elapsed: started.elapsed(), attempts }
}

async fn run_on(
    config: ClientConfig,
    work: &FleetWork,
    options: &FleetOptions,
    attempts: &mut u32,
) -> Result<HostOutput> {
    let client = loop {
        *attempts += 1;
        match Client::connect(config.clone()).await {
            Ok(c) => break c,
            Err(e) if e.is_connect_failure() && *attempts <= options.connect_retries => {
                tracing::debug!(attempt = *attempts, error = %e, "fleet: connection failed, trying again");
                tokio::time::sleep(options.retry_delay).await;
            }
            Err(e) => return Err(e),
        }
    };
    match work {
        FleetWork::PowerShell(script) => {
            let pool = RunspacePool::open(&client, options.pool.clone()).await?;
            let result = pool.invoke(&PipelineSpec::script(script.clone())).await;
            let closed = pool.close().await;
            let result = result?;
            // The result is the host's answer; a failed Delete after it is only logged.
            if let Err(e) = closed {
                tracing::warn!(error = %e, "fleet: could not close the runspace pool");
            }
            Ok(HostOutput::PowerShell(Box::new(result)))
        }
        FleetWork::Cmd { command, arguments } => {
            let args: Vec<&str> = arguments.iter().map(String::as_str).collect();
            let run = RunCmdOptions {
                shell: options.shell.clone(),
                command: options.command,
                stdin: options.stdin.clone(),
                timeout: None,
                max_output: options.max_output,
            };
            Ok(HostOutput::Cmd(client.run_cmd_with(command, &args, &run).await?))
        }
    }
}

/// Makes sure the process may open `needed` file descriptors: raises the soft limit (up to
/// the hard one) when it is lower, and fails naming both limits when even the hard one is.
fn ensure_descriptors(needed: u64) -> Result<()> {
    let Some((soft, hard)) = nofile::get() else { return Ok(()) }; // Unknown: connections report it.
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(Error::InvalidConfig(format!(
            "the throttle needs about {needed} open files, over this process's limit (RLIMIT_NOFILE: soft {soft}, \
             hard {hard}); lower the throttle or raise the limit (ulimit -n)"
        )));
    }
    if !nofile::set_soft(needed, hard) {
        return Err(Error::InvalidConfig(format!(
            "the throttle needs about {needed} open files, over this process's soft limit ({soft}), which could not \
             be raised; lower the throttle or raise the limit (ulimit -n)"
        )));
    }
    tracing::debug!(from = soft, to = needed, "raised the open-file limit for a fleet run");
    Ok(())
}

/// RLIMIT_NOFILE, read and raised (`u64::MAX` stands for no limit).
#[cfg(unix)]
#[allow(unsafe_code)]
mod nofile {
    // rlim_t is u64 on the Linux and BSD targets psremote builds for.
    #[allow(clippy::unnecessary_cast)]
    fn widen(v: libc::rlim_t) -> u64 {
        if v == libc::RLIM_INFINITY { u64::MAX } else { v as u64 }
    }

    pub fn get() -> Option<(u64, u64)> {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct it is given; RLIMIT_NOFILE is a valid resource.
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0)
            .then(|| (widen(limit.rlim_cur), widen(limit.rlim_max)))
    }

    pub fn set_soft(soft: u64, hard: u64) -> bool {
        let max = if hard == u64::MAX { libc::RLIM_INFINITY } else { hard as libc::rlim_t };
        let limit = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: max };
        // SAFETY: setrlimit reads the struct it is given; the soft limit is within the hard one.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 }
    }
}

#[cfg(not(unix))]
mod nofile {
    pub fn get() -> Option<(u64, u64)> {
        None
    }

    pub fn set_soft(_soft: u64, _hard: u64) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_outcome() {
        let r = |result| HostResult { index: 0, host: "h".into(), result, elapsed: Duration::ZERO, attempts: 1 };
        let connect = Error::Connect {
            address: "h:5985".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(r(Err(connect)).status(), HostStatus::Unreachable);
        assert_eq!(r(Err(Error::Timeout("slow".into()))).status(), HostStatus::Failed);
        let completed = PipelineResult { state: PipelineState::Completed, ..PipelineResult::default() };
        assert_eq!(r(Ok(HostOutput::PowerShell(Box::new(completed)))).status(), HostStatus::Succeeded);
        let failed = PipelineResult { state: PipelineState::Failed, ..PipelineResult::default() };
        assert_eq!(r(Ok(HostOutput::PowerShell(Box::new(failed)))).status(), HostStatus::Failed);
    }

    #[test]
    fn a_throttle_over_the_hard_limit_is_refused_by_name() {
        let (_, hard) = nofile::get().expect("RLIMIT_NOFILE");
        assert_ne!(hard, u64::MAX, "this test needs a finite hard limit on open files");
        let err = ensure_descriptors(hard + 1).unwrap_err();
        assert!(err.to_string().contains("RLIMIT_NOFILE"), "{err}");
        // Within the hard limit it is fine (raising the soft limit when needed).
        ensure_descriptors(64).unwrap();
    }
}
