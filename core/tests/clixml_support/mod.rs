//! Helpers for the CLIXML tests: where the protocol test data lives, and the recorded corpus.
#![allow(dead_code)]

pub mod corpus;

use std::path::PathBuf;

/// The project's protocol test data (vectors.json, windows-transcripts/), kept in the repository.
pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("data")
}

pub fn transcripts_dir() -> PathBuf {
    shared_dir().join("windows-transcripts")
}

/// The decoded-CLIXML corpus: every non-empty message of the recorded transcripts.
pub fn clixml_corpus() -> Vec<corpus::Message> {
    let all = corpus::messages(&transcripts_dir());
    assert!(!all.is_empty(), "no PSRP messages found under {}", transcripts_dir().display());
    all.into_iter().filter(|m| !m.clixml().is_empty()).collect()
}
