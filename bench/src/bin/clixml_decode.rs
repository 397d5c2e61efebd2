//! CLIXML decoding and encoding throughput (`make bench`).
//!
//! Decodes (1) every CLIXML message recorded from real Windows servers, repeated until at least
//! 100 MB have been read, and (2) a synthetic PIPELINE_OUTPUT-like message holding many objects of 20
//! properties each; then encodes the same values. Prints MB/s (10^6 bytes of CLIXML per second) of
//! wall-clock time, so a busy machine shows lower numbers. `ROWS=n` sets the number of synthetic
//! objects (default 10 000); `SKIP_CORPUS=1` runs the synthetic part only; `BENCH_BYTES=n` changes the
//! 100 MB target (the smoke run in `make test` uses a small one).
//!
//! For the side-by-side comparison (`bench/sidebyside.py`): `--dump DIR` writes the inputs for the
//! Python decoders and exits (`corpus.bin`: each corpus message as a little-endian u32 length and
//! its CLIXML, BOM included; `synthetic.xml`: the synthetic message), and `--json` decodes only and
//! prints one JSON line (`{"corpus": {"bytes", "seconds", "values"}, "synthetic": {...}}`). Both
//! leave out the few corpus messages holding SecureStrings (see `plain_corpus`).

#[allow(dead_code)]
#[path = "../../../core/tests/clixml_support/corpus.rs"]
mod corpus;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use psremote::clixml::{Container, Limits, PsObject, Value, from_bytes, from_str, to_string};

const TARGET_BYTES: usize = 100_000_000;

fn transcripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/windows-transcripts")
}

fn target_bytes() -> usize {
    std::env::var("BENCH_BYTES").ok().and_then(|b| b.parse().ok()).unwrap_or(TARGET_BYTES)
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

/// One object of 20 properties, the shape of a `Get-Process | Select-Object` row.
fn row(i: usize, type_names: &Arc<[String]>) -> Value {
    let state = PsObject {
        type_names: Some(Arc::from(vec![
            "System.Diagnostics.ProcessPriorityClass".to_owned(),
            "System.Enum".to_owned(),
            "System.ValueType".to_owned(),
            "System.Object".to_owned(),
        ])),
        to_string: Some("Normal".into()),
        value: Some(Value::I32(32)),
        ..PsObject::new()
    };
    let props = vec![
        ("Name".to_owned(), Value::Str(format!("process-{i}"))),
        ("Id".to_owned(), Value::I32(i as i32)),
        ("Handles".to_owned(), Value::I32(250 + i as i32)),
        ("WorkingSet64".to_owned(), Value::I64(12_345_678 + i as i64)),
        ("PagedMemorySize64".to_owned(), Value::I64(4_567_890)),
        ("CPU".to_owned(), Value::Double(1.25 * i as f64)),
        ("Responding".to_owned(), Value::Bool(true)),
        ("StartTime".to_owned(), Value::DateTime("2024-05-01T10:42:32.2731993+02:00".into())),
        ("TotalProcessorTime".to_owned(), Value::Duration("PT9.0269026S".into())),
        ("Path".to_owned(), Value::Str(format!("C:\\Windows\\System32\\proc{i}.exe"))),
        ("Company".to_owned(), Value::Str("Microsoft Corporation".into())),
        ("Description".to_owned(), Value::Str("Host Process & <Service>\nsecond line".into())),
        ("Product".to_owned(), Value::Nil),
        ("SessionId".to_owned(), Value::U32(1)),
        ("PriorityClass".to_owned(), Value::from(state)),
        ("Threads".to_owned(), Value::I32(12)),
        ("HandleCount".to_owned(), Value::I32(400)),
        ("InstanceId".to_owned(), Value::Guid(uuid::Uuid::from_u128(i as u128 * 7919))),
        ("MachineName".to_owned(), Value::Str(".".into())),
        ("FileVersion".to_owned(), Value::Version("10.0.26100.1".into())),
    ];
    Value::from(PsObject {
        type_names: Some(Arc::clone(type_names)),
        to_string: Some(format!("@{{Name=process-{i}}}")),
        extended: props,
        ..PsObject::new()
    })
}

fn synthetic(rows: usize) -> String {
    let type_names: Arc<[String]> = Arc::from(vec![
        "Selected.System.Diagnostics.Process".to_owned(),
        "System.Management.Automation.PSCustomObject".to_owned(),
        "System.Object".to_owned(),
    ]);
    let list: Vec<Value> = (0..rows).map(|i| row(i, &type_names)).collect();
    let outer = PsObject {
        type_names: Some(Arc::from(vec!["System.Object[]".to_owned(), "System.Array".to_owned()])),
        container: Some(Container::List(list)),
        ..PsObject::new()
    };
    to_string(&Value::from(outer))
}

/// The corpus messages that hold CLIXML, as recorded (a UTF-8 BOM may lead).
fn corpus_messages() -> Vec<Vec<u8>> {
    corpus::messages(&transcripts_dir()).into_iter().filter(|m| !m.clixml().is_empty()).map(|m| m.data).collect()
}

/// The corpus without the messages holding SecureStrings: psremote's Python values need the pool's
/// session key for those, so the side-by-side comparison leaves them out for every decoder.
fn plain_corpus() -> Vec<Vec<u8>> {
    corpus_messages().into_iter().filter(|m| !m.windows(4).any(|w| w == b"<SS>" || w == b"<SS ")).collect()
}

fn corpus_bench(limits: &Limits) {
    let messages = corpus_messages();
    let corpus_bytes: usize = messages.iter().map(Vec::len).sum();
    let rounds = target_bytes().div_ceil(corpus_bytes);
    // Warm up once, and keep the values for the encoding run.
    let values: Vec<Value> = messages.iter().map(|m| from_bytes(m, limits).expect("corpus decodes")).collect();
    let start = Instant::now();
    let mut decoded = 0usize;
    for _ in 0..rounds {
        for m in &messages {
            let v = from_bytes(m, limits).expect("corpus decodes");
            decoded += usize::from(!matches!(v, Value::Nil));
        }
    }
    let elapsed = start.elapsed();
    println!(
        "corpus decode: {} messages, {} bytes, x{} = {:.1} MB in {:.2?}: {:.0} MB/s ({} values)",
        messages.len(),
        corpus_bytes,
        rounds,
        (corpus_bytes * rounds) as f64 / 1e6,
        elapsed,
        mb_per_s(corpus_bytes * rounds, elapsed),
        decoded
    );
    let start = Instant::now();
    let mut written = 0usize;
    for _ in 0..rounds {
        for v in &values {
            written += to_string(v).len();
        }
    }
    let elapsed = start.elapsed();
    println!(
        "corpus encode: {:.1} MB in {:.2?}: {:.0} MB/s",
        written as f64 / 1e6,
        elapsed,
        mb_per_s(written, elapsed)
    );
}

/// Writes the decoders' inputs for `bench/sidebyside.py`.
fn dump(dir: &str, rows: usize) -> std::io::Result<()> {
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for m in plain_corpus() {
        let len = u32::try_from(m.len()).expect("a corpus message fits in 4 GB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&m);
    }
    std::fs::write(dir.join("corpus.bin"), out)?;
    std::fs::write(dir.join("synthetic.xml"), synthetic(rows))
}

/// Decodes `inputs` (repeated until `target_bytes()`) and returns one JSON object of bytes, seconds
/// and values decoded (`per_input` values per input).
fn timed_decode(inputs: &[Vec<u8>], per_input: usize, limits: &Limits) -> String {
    let total: usize = inputs.iter().map(Vec::len).sum();
    let rounds = target_bytes().div_ceil(total.max(1));
    for m in inputs {
        std::hint::black_box(from_bytes(m, limits).expect("decodes"));
    }
    let start = Instant::now();
    for _ in 0..rounds {
        for m in inputs {
            std::hint::black_box(from_bytes(m, limits).expect("decodes"));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    format!(r#"{{"bytes": {}, "seconds": {seconds}, "values": {}}}"#, total * rounds, inputs.len() * per_input * rounds)
}

fn json(rows: usize, limits: &Limits) {
    let mut parts = Vec::new();
    if std::env::var_os("SKIP_CORPUS").is_none() {
        parts.push(format!(r#""corpus": {}"#, timed_decode(&plain_corpus(), 1, limits)));
    }
    parts.push(format!(r#""synthetic": {}"#, timed_decode(&[synthetic(rows).into_bytes()], rows, limits)));
    println!("{{{}}}", parts.join(", "));
}

fn main() {
    let limits = Limits::default();
    let rows: usize = std::env::var("ROWS").ok().and_then(|r| r.parse().ok()).unwrap_or(10_000);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => {}
        ["--dump", dir] => {
            dump(dir, rows).unwrap_or_else(|e| panic!("cannot write {dir}: {e}"));
            return;
        }
        ["--json"] => return json(rows, &limits),
        _ => {
            eprintln!("usage: clixml-decode [--dump DIR | --json]");
            std::process::exit(2);
        }
    }

    if std::env::var_os("SKIP_CORPUS").is_none() {
        corpus_bench(&limits);
    }

    let xml = synthetic(rows);
    let rounds = target_bytes().div_ceil(xml.len());
    let value = from_str(&xml, &limits).expect("synthetic decodes");
    assert_eq!(from_str(&to_string(&value), &limits).expect("round trip"), value);
    let start = Instant::now();
    for _ in 0..rounds {
        let v = from_str(&xml, &limits).expect("synthetic decodes");
        std::hint::black_box(&v);
    }
    let elapsed = start.elapsed();
    println!(
        "synthetic decode: {} objects x 20 properties, {} bytes, x{} = {:.1} MB in {:.2?}: {:.0} MB/s \
         ({:.0} objects/s)",
        rows,
        xml.len(),
        rounds,
        (xml.len() * rounds) as f64 / 1e6,
        elapsed,
        mb_per_s(xml.len() * rounds, elapsed),
        (rows * rounds) as f64 / elapsed.as_secs_f64(),
    );
    let start = Instant::now();
    let mut written = 0usize;
    for _ in 0..rounds {
        written += to_string(&value).len();
    }
    let elapsed = start.elapsed();
    println!(
        "synthetic encode: {:.1} MB in {:.2?}: {:.0} MB/s",
        written as f64 / 1e6,
        elapsed,
        mb_per_s(written, elapsed)
    );
}
