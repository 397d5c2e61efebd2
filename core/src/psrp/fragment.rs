//! PSRP fragments (MS-PSRP 2.2.4): splitting messages into fragments that fit a WS-Man
//! envelope, and reassembling the server's fragments with limits.
//!
//! Fragment header, 21 bytes, big-endian: ObjectId u64 | FragmentId u64 | flags u8 (0x1 start,
//! 0x2 end) | BlobLength u32.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Size of the fragment header.
pub const HEADER_LEN: usize = 21;
const FLAG_START: u8 = 0x1;
const FLAG_END: u8 = 0x2;

/// Bytes of the SOAP envelope around a Send/Command payload, plus headroom, as subtracted from
/// MaxEnvelopeSize before base64 growth is counted.
pub const ENVELOPE_OVERHEAD: usize = 2048;

/// The largest raw payload (fragments, before base64) that fits one envelope of
/// `max_envelope_size` bytes: base64 turns 3 bytes into 4.
pub fn max_payload_for_envelope(max_envelope_size: usize) -> usize {
    max_envelope_size.saturating_sub(ENVELOPE_OVERHEAD) / 4 * 3
}

/// One parsed fragment, borrowing its blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// Message (object) id.
    pub object_id: u64,
    /// Position of this fragment in its message, from 0.
    pub fragment_id: u64,
    /// First fragment of the message.
    pub start: bool,
    /// Last fragment of the message.
    pub end: bool,
    /// The slice of the message bytes.
    pub blob: &'a [u8],
}

fn put_header(out: &mut Vec<u8>, object_id: u64, fragment_id: u64, start: bool, end: bool, len: usize) {
    out.extend_from_slice(&object_id.to_be_bytes());
    out.extend_from_slice(&fragment_id.to_be_bytes());
    out.push(if start { FLAG_START } else { 0 } | if end { FLAG_END } else { 0 });
    // INVARIANT: chunks are bounded by the envelope budget, far below u32::MAX.
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

/// Splits messages into transport chunks of at most `max_chunk` bytes. Each chunk is one WS-Man
/// payload (one `rsp:Stream` or `creationXml`) and may pack several fragments; a message that
/// does not fit the rest of a chunk starts there and continues in the next.
#[derive(Debug, Clone)]
pub struct Fragmenter {
    next_object_id: u64,
    max_chunk: usize,
}

impl Fragmenter {
    /// A fragmenter whose chunks hold at most `max_chunk` bytes (header included).
    pub fn new(max_chunk: usize) -> Self {
        Self { next_object_id: 1, max_chunk: max_chunk.max(HEADER_LEN + 1) }
    }

    /// Changes the chunk size, e.g. when the envelope size grows after negotiation.
    pub fn set_max_chunk(&mut self, max_chunk: usize) {
        self.max_chunk = max_chunk.max(HEADER_LEN + 1);
    }

    /// The chunk size in use.
    pub fn max_chunk(&self) -> usize {
        self.max_chunk
    }

    /// Fragments `messages` (encoded PSRP messages) into chunks.
    pub fn fragment<'a>(&mut self, messages: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
        let messages: Vec<&[u8]> = messages.into_iter().collect();
        let plan = self.plan(messages.iter().map(|m| m.len()));
        plan.iter()
            .map(|chunk| {
                let mut out = Vec::with_capacity(chunk.iter().map(|f| HEADER_LEN + f.range.len()).sum());
                for f in chunk {
                    out.extend_from_slice(&f.header);
                    out.extend_from_slice(&messages[f.message][f.range.clone()]);
                }
                out
            })
            .collect()
    }

    /// Cuts messages of the given lengths into chunks, as [`Fragmenter::fragment`] does, without
    /// touching their bytes: each chunk is the list of its fragments, each a header and the
    /// range of its message it carries. A sender writes the pieces out as they are.
    pub fn plan(&mut self, lengths: impl IntoIterator<Item = usize>) -> Vec<Vec<FragmentSpan>> {
        let mut chunks = Vec::new();
        let mut cur: Vec<FragmentSpan> = Vec::new();
        let mut cur_len = 0;
        for (message, len) in lengths.into_iter().enumerate() {
            let object_id = self.next_object_id;
            self.next_object_id += 1;
            let mut offset = 0;
            let mut fragment_id = 0u64;
            loop {
                let space = self.max_chunk.saturating_sub(cur_len + HEADER_LEN);
                if space == 0 {
                    chunks.push(std::mem::take(&mut cur));
                    cur_len = 0;
                    continue;
                }
                let take = space.min(len - offset);
                let end = offset + take == len;
                let mut header = Vec::with_capacity(HEADER_LEN);
                put_header(&mut header, object_id, fragment_id, fragment_id == 0, end, take);
                let header: [u8; HEADER_LEN] = header.try_into().unwrap_or([0; HEADER_LEN]);
                cur.push(FragmentSpan { header, message, range: offset..offset + take });
                cur_len += HEADER_LEN + take;
                offset += take;
                fragment_id += 1;
                if end {
                    break;
                }
                chunks.push(std::mem::take(&mut cur));
                cur_len = 0;
            }
        }
        if !cur.is_empty() {
            chunks.push(cur);
        }
        chunks
    }
}

/// One fragment of a planned chunk ([`Fragmenter::plan`]): its header, and the range of its
/// message (by index) that is its blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentSpan {
    /// The fragment header.
    pub header: [u8; HEADER_LEN],
    /// Which message the blob comes from.
    pub message: usize,
    /// The blob's bytes within that message.
    pub range: std::ops::Range<usize>,
}

/// Splits a chunk into its fragments' raw bytes (header included), checking only the framing,
/// so a reader can decode and hand over one message at a time.
pub fn split_fragments(mut data: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < HEADER_LEN {
            return Err(Error::protocol(format!(
                "{} trailing bytes are too short for a PSRP fragment header",
                data.len()
            )));
        }
        let len = u32::from_be_bytes(data[17..21].try_into().unwrap_or_default()) as usize;
        let total = HEADER_LEN.checked_add(len).filter(|t| *t <= data.len()).ok_or_else(|| {
            Error::protocol(format!("a PSRP fragment announces {len} bytes but {} remain", data.len() - HEADER_LEN))
        })?;
        let (fragment, rest) = data.split_at(total);
        out.push(fragment);
        data = rest;
    }
    Ok(out)
}

/// Parses every fragment in a chunk.
pub fn parse_fragments(mut data: &[u8]) -> Result<Vec<Fragment<'_>>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < HEADER_LEN {
            return Err(Error::protocol(format!(
                "{} trailing bytes are too short for a PSRP fragment header",
                data.len()
            )));
        }
        let object_id = u64::from_be_bytes(data[0..8].try_into().unwrap_or_default());
        let fragment_id = u64::from_be_bytes(data[8..16].try_into().unwrap_or_default());
        let flags = data[16];
        let len = u32::from_be_bytes(data[17..21].try_into().unwrap_or_default()) as usize;
        let rest = &data[HEADER_LEN..];
        if len > rest.len() {
            return Err(Error::protocol(format!(
                "PSRP fragment {object_id}/{fragment_id} announces {len} bytes but {} remain",
                rest.len()
            )));
        }
        out.push(Fragment {
            object_id,
            fragment_id,
            start: flags & FLAG_START != 0,
            end: flags & FLAG_END != 0,
            blob: &rest[..len],
        });
        data = &rest[len..];
    }
    Ok(out)
}

/// Limits that bound the memory a peer can make the defragmenter hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefragLimits {
    /// Largest reassembled message.
    pub max_message: usize,
    /// Most messages in flight (started, not ended) at once.
    pub max_pending: usize,
}

impl Default for DefragLimits {
    fn default() -> Self {
        Self { max_message: 64 * 1024 * 1024, max_pending: 64 }
    }
}

/// Reassembles fragments into whole messages. Fragments of different objects may interleave;
/// within one object they must arrive in order.
#[derive(Debug, Default)]
pub struct Defragmenter {
    pending: HashMap<u64, (u64, Vec<u8>)>,
    limits: DefragLimits,
}

impl Defragmenter {
    /// A defragmenter with the given limits.
    pub fn new(limits: DefragLimits) -> Self {
        Self { pending: HashMap::new(), limits }
    }

    /// Feeds one chunk; returns the messages it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut done = Vec::new();
        for f in parse_fragments(chunk)? {
            if let Some(m) = self.push_fragment(f)? {
                done.push(m);
            }
        }
        Ok(done)
    }

    fn push_fragment(&mut self, f: Fragment<'_>) -> Result<Option<Vec<u8>>> {
        let oid = f.object_id;
        if f.start {
            if f.fragment_id != 0 {
                return Err(Error::protocol(format!("PSRP object {oid} starts with fragment id {}", f.fragment_id)));
            }
            if self.pending.contains_key(&oid) {
                return Err(Error::protocol(format!("PSRP object {oid} started twice")));
            }
            if f.blob.len() > self.limits.max_message {
                return Err(self.too_large(oid));
            }
            if f.end {
                return Ok(Some(f.blob.to_vec()));
            }
            if self.pending.len() >= self.limits.max_pending {
                return Err(Error::protocol(format!(
                    "more than {} PSRP messages in flight at once",
                    self.limits.max_pending
                )));
            }
            self.pending.insert(oid, (0, f.blob.to_vec()));
            return Ok(None);
        }
        let Some((last, buf)) = self.pending.get_mut(&oid) else {
            return Err(Error::protocol(format!(
                "PSRP fragment {} of object {oid} arrived without its start",
                f.fragment_id
            )));
        };
        if f.fragment_id != *last + 1 {
            return Err(Error::protocol(format!(
                "PSRP object {oid}: fragment {} arrived after fragment {last} (out of order or duplicated)",
                f.fragment_id
            )));
        }
        if buf.len() + f.blob.len() > self.limits.max_message {
            self.pending.remove(&oid);
            return Err(self.too_large(oid));
        }
        *last = f.fragment_id;
        buf.extend_from_slice(f.blob);
        if f.end {
            return Ok(self.pending.remove(&oid).map(|(_, b)| b));
        }
        Ok(None)
    }

    fn too_large(&self, oid: u64) -> Error {
        Error::protocol(format!("PSRP object {oid} exceeds the {}-byte message limit", self.limits.max_message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psrp::message::{Destination, Message, MessageType};

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn input(data: &str) -> Vec<u8> {
        Message::new(Destination::Server, MessageType::PipelineInput, uuid::Uuid::nil(), None, data.as_bytes().to_vec())
            .encode()
    }

    #[test]
    fn split_fragments_keeps_each_fragment_whole_and_checks_the_framing() {
        let a = input("<S>first</S>");
        let b = input("<S>second one</S>");
        let chunks = Fragmenter::new(60).fragment([a.as_slice(), b.as_slice()]);
        let joined: Vec<u8> = chunks.concat();
        let parts = split_fragments(&joined).unwrap();
        assert!(parts.len() > 2, "the messages were cut into several fragments");
        assert_eq!(parts.concat(), joined);
        let mut d = Defragmenter::new(DefragLimits::default());
        let mut messages = Vec::new();
        for p in &parts {
            assert_eq!(parse_fragments(p).unwrap().len(), 1);
            messages.extend(d.push(p).unwrap());
        }
        assert_eq!(messages, vec![a, b]);
        assert!(split_fragments(&joined[..joined.len() - 1]).is_err());
        assert!(split_fragments(&joined[..HEADER_LEN - 1]).is_err());
        let mut huge = joined[..HEADER_LEN].to_vec();
        huge[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(split_fragments(&huge).is_err());
    }

    // Vectors psrp-fragment-one-one-fragment, -one-multiple-fragments and -multiple (pypsrp tests).
    #[test]
    fn matches_the_recorded_fragment_bytes() {
        let m = input("<S>12</S>");
        assert_eq!(
            Fragmenter::new(70).fragment([m.as_slice()]),
            vec![unhex(
                "000000000000000100000000000000000300000031020000000210040000000000000000000000000000000000000000000000000000000000000000003c533e31323c2f533e"
            )]
        );
        let m = input("<S>1234</S>");
        assert_eq!(
            Fragmenter::new(70).fragment([m.as_slice()]),
            vec![
                unhex(
                    "000000000000000100000000000000000100000031020000000210040000000000000000000000000000000000000000000000000000000000000000003c533e313233343c2f"
                ),
                unhex("000000000000000100000000000000010200000002533e"),
            ]
        );
        let msgs: Vec<Vec<u8>> =
            ["<S>12</S>", "<S>34</S>", "<S>567</S>", "<S>890</S>"].into_iter().map(input).collect();
        let chunks = Fragmenter::new(140).fragment(msgs.iter().map(Vec::as_slice));
        assert_eq!(
            chunks,
            vec![
                unhex(
                    "000000000000000100000000000000000300000031020000000210040000000000000000000000000000000000000000000000000000000000000000003c533e31323c2f533e000000000000000200000000000000000300000031020000000210040000000000000000000000000000000000000000000000000000000000000000003c533e33343c2f533e"
                ),
                unhex(
                    "000000000000000300000000000000000300000032020000000210040000000000000000000000000000000000000000000000000000000000000000003c533e3536373c2f533e000000000000000400000000000000000100000030020000000210040000000000000000000000000000000000000000000000000000000000000000003c533e3839303c2f"
                ),
                unhex("000000000000000400000000000000010200000002533e"),
            ]
        );
        let mut d = Defragmenter::default();
        let mut out = Vec::new();
        for c in &chunks {
            out.extend(d.push(c).unwrap());
        }
        assert_eq!(out, msgs);
    }

    #[test]
    fn reassembles_interleaved_objects() {
        let a = vec![b'a'; 100];
        let b = vec![b'b'; 100];
        let ca = Fragmenter::new(60).fragment([a.as_slice()]);
        let mut f2 = Fragmenter::new(60);
        f2.next_object_id = 2;
        let cb = f2.fragment([b.as_slice()]);
        let mut d = Defragmenter::default();
        let mut got = Vec::new();
        for (x, y) in ca.iter().zip(cb.iter()) {
            got.extend(d.push(x).unwrap());
            got.extend(d.push(y).unwrap());
        }
        assert_eq!(got, vec![a, b]);
    }

    #[test]
    fn bad_sequences_are_protocol_errors() {
        let msg = vec![7u8; 100];
        let chunks = Fragmenter::new(50).fragment([msg.as_slice()]);
        assert!(chunks.len() >= 3);
        // Out of order.
        let mut d = Defragmenter::default();
        d.push(&chunks[0]).unwrap();
        assert!(d.push(&chunks[2]).is_err());
        // Duplicated.
        let mut d = Defragmenter::default();
        d.push(&chunks[0]).unwrap();
        d.push(&chunks[1]).unwrap();
        assert!(d.push(&chunks[1]).is_err());
        // Continuation without a start.
        assert!(Defragmenter::default().push(&chunks[1]).is_err());
        // Started twice.
        let mut d = Defragmenter::default();
        d.push(&chunks[0]).unwrap();
        assert!(d.push(&chunks[0]).is_err());
        // Truncated header and a blob longer than the chunk.
        assert!(parse_fragments(&chunks[0][..10]).is_err());
        let mut long = chunks[0].clone();
        long.truncate(long.len() - 1);
        assert!(parse_fragments(&long).is_err());
        // Oversized.
        let mut d = Defragmenter::new(DefragLimits { max_message: 40, max_pending: 4 });
        d.push(&chunks[0]).unwrap();
        assert!(d.push(&chunks[1]).is_err());
        // Too many in flight.
        let mut d = Defragmenter::new(DefragLimits { max_message: 1000, max_pending: 1 });
        let mut f = Fragmenter::new(50);
        let c1 = f.fragment([msg.as_slice()]);
        let c2 = f.fragment([msg.as_slice()]);
        d.push(&c1[0]).unwrap();
        assert!(d.push(&c2[0]).is_err());
    }

    #[test]
    fn payload_budget_counts_base64_growth() {
        assert_eq!(max_payload_for_envelope(153_600), (153_600 - ENVELOPE_OVERHEAD) / 4 * 3);
        // Within pypsrp's measured range for 153600 and 512000 bytes, minus our larger headroom.
        assert!((112_000..=113_952).contains(&max_payload_for_envelope(153_600)));
        assert!((380_000..=382_752).contains(&max_payload_for_envelope(512_000)));
    }
}
