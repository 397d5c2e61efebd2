//! Runs one command in a cmd shell over NTLM with message encryption and prints its output.
//!
//! Reads `PSREMOTE_URL`, `PSREMOTE_USER` and `PSREMOTE_PASSWORD`; `make demo` sets them for the
//! bundled loopback endpoint.

use psremote::auth::Mechanism;
use psremote::client::{Client, ClientConfig, CmdShellOptions, OutputChunk};
use std::io::Write;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("set {name}");
        std::process::exit(2)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, r)) => (c.clone(), r.to_vec()),
        None => ("uname".to_owned(), vec!["-a".to_owned()]),
    };
    let config =
        ClientConfig::new("", env("PSREMOTE_USER"), env("PSREMOTE_PASSWORD")).with_url(&env("PSREMOTE_URL")).map(|c| {
            let trusted = std::env::var("PSREMOTE_TRUSTED_HOSTS").unwrap_or_default();
            c.with_mechanism(Mechanism::Ntlm).with_trusted_hosts(trusted.split(',').filter(|h| !h.is_empty()))
        });
    let result = psremote::client::runtime().block_on(async move {
        let client = Client::connect(config?).await?;
        println!("connected to {} with NTLM, message encryption on", client.url());
        let shell = client.open_cmd_shell(CmdShellOptions::default()).await?;
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        println!("$ {command} {}", rest.join(" "));
        let mut process = shell.start(&command, &rest).await?;
        let streamed = async {
            while let Some(chunk) = process.next_output().await? {
                match chunk {
                    OutputChunk::Stdout(d) => std::io::stdout().write_all(&d).ok(),
                    OutputChunk::Stderr(d) => std::io::stderr().write_all(&d).ok(),
                };
            }
            Ok::<_, psremote::Error>(process.exit_code().unwrap_or_default())
        }
        .await;
        shell.close().await?;
        streamed
    });
    match result {
        Ok(code) => {
            println!("exit code {code}");
            std::process::exit(i32::try_from(code).unwrap_or(1));
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
