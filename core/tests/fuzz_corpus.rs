//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`, seeds from the Windows recordings
//! and every input a fuzzer found crashing) through the same functions the cargo-fuzz targets
//! call, on stable and without libFuzzer: no input may panic, and each target's corpus must
//! finish well inside a generous hang guard. Inputs listed in `fuzz/known-crashes.txt` (a
//! target/file and the reason, one a line) are the only ones left out.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use psremote::clixml::{self, Limits};
use psremote::fuzzing::TARGETS;
use psremote::psrp::message::Message;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn known_crashes() -> Vec<String> {
    let text = std::fs::read_to_string(fuzz_dir().join("known-crashes.txt")).expect("fuzz/known-crashes.txt");
    text.lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (format!("{target}/{}", p.file_name().unwrap().to_string_lossy()), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_corpus_and_a_fuzz_target() {
    for (name, _) in TARGETS {
        assert!(corpus(name).len() >= 3, "fuzz/corpus/{name} holds too few seeds");
        let target = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
    }
}

#[test]
fn corpus_replays_without_panic_or_hang() {
    let skip = known_crashes();
    for (name, run) in TARGETS {
        let inputs: Vec<(String, Vec<u8>)> = corpus(name).into_iter().filter(|(id, _)| !skip.contains(id)).collect();
        let count = inputs.len();
        let (tx, rx) = mpsc::channel();
        let run = *run;
        let worker = std::thread::spawn(move || {
            for (id, data) in inputs {
                let outcome = std::panic::catch_unwind(|| run(&data));
                if outcome.is_err() {
                    let _ = tx.send(Err(id));
                    return;
                }
            }
            let _ = tx.send(Ok(()));
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            Ok(Err(id)) => panic!("fuzz/corpus/{id} panics: a crash to fix (or list in fuzz/known-crashes.txt)"),
            Err(_) => panic!("{name}: {count} corpus inputs did not finish within the hang guard"),
        }
        worker.join().unwrap();
    }
}

/// The seeds are real protocol data, so the fuzzer starts deep inside each parser: most of them
/// parse cleanly (a corpus of garbage would replay without panic and prove nothing).
#[test]
fn seeds_reach_the_parsers() {
    let seeds = |target: &str| -> Vec<Vec<u8>> {
        corpus(target).into_iter().filter(|(id, _)| id.contains("/seed-")).map(|(_, d)| d).collect()
    };
    let share = |ok: usize, all: usize| ok * 10 >= all * 8;

    let clixml_seeds = seeds("clixml");
    let ok = clixml_seeds.iter().filter(|d| clixml::from_bytes(d, &Limits::default()).is_ok()).count();
    assert!(share(ok, clixml_seeds.len()), "{ok} of {} CLIXML seeds parse", clixml_seeds.len());

    let messages = seeds("psrp_message");
    let ok = messages.iter().filter(|d| Message::decode(d).is_ok()).count();
    assert!(share(ok, messages.len()), "{ok} of {} PSRP message seeds decode", messages.len());

    let replies = seeds("wsman_reply");
    let ok = replies.iter().filter(|d| psremote::wsman::xml::parse(d).is_ok()).count();
    assert_eq!(ok, replies.len(), "every recorded reply is well-formed XML");

    let chunks: Vec<Vec<u8>> = seeds("psrp_defrag");
    let ok = chunks
        .iter()
        .filter(|d| {
            let records = psremote::fuzzing::records(d);
            records.iter().all(|(_, c)| psremote::psrp::fragment::parse_fragments(c).is_ok())
        })
        .count();
    assert!(share(ok, chunks.len()), "{ok} of {} fragment seeds split into fragments", chunks.len());
}
