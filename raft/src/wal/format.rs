//! Byte layout of WAL segments: the segment header, record frames and record bodies.
//!
//! The specification is the "Files" section of the [`super`] module doc; this module only turns
//! it into bytes and back. Decoding never panics: every length is checked against the bytes that
//! are there, so a damaged or hostile file yields an error, never a crash or a huge allocation.

use std::ops::Range;

/// The first 8 bytes of every segment file.
pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"STRATAWL";
/// The format version written in every segment header.
pub(super) const FORMAT_VERSION: u32 = 1;
/// magic (8) + version (4) + segment id (8) + CRC (4).
pub(super) const SEGMENT_HEADER_LEN: usize = 24;
/// body length (4) + body CRC (4) + header CRC (4).
pub(super) const FRAME_HEADER_LEN: usize = 12;
/// kind (1) + group (8) + first index (8) + count (4).
pub(super) const ENTRIES_FIXED_LEN: usize = 21;
/// Per entry inside an Entries body: length (4) + CRC (4), then the payload.
pub(super) const ENTRY_HEADER_LEN: usize = 8;

/// Record kinds (the first byte of a body).
pub(super) mod kind {
    pub const HEAD: u8 = 1;
    pub const ENTRIES: u8 = 2;
    pub const VOTE: u8 = 3;
    pub const COMMITTED: u8 = 4;
    pub const TRUNCATE: u8 = 5;
    pub const PURGE: u8 = 6;
    pub const REMOVE_GROUP: u8 = 7;
}

/// Flags of one group snapshot inside a Head record: which optional fields follow.
const HAS_VOTE: u8 = 1;
const HAS_COMMITTED: u8 = 2;
const HAS_PURGED: u8 = 4;
const HAS_RANGE: u8 = 8;

// ---------------------------------------------------------------------------------------------
// Segment header

/// The header of segment `id`.
pub(super) fn segment_header(id: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&header[..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Why a segment header was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeaderError {
    /// Short or CRC mismatch: what a torn write of a new segment leaves (rule R3 decides).
    Damaged(&'static str),
    /// The CRC matches but the header is not the one this file must have (rule R5): never torn.
    Mismatch(String),
}

/// Checks the header at the start of `data` against the id from the file name.
pub(super) fn check_segment_header(data: &[u8], id: u64) -> Result<(), HeaderError> {
    let Some(header) = data.get(..SEGMENT_HEADER_LEN) else {
        return Err(HeaderError::Damaged("segment header is incomplete"));
    };
    if crc32fast::hash(&header[..20]) != le_u32(&header[20..24]) {
        return Err(HeaderError::Damaged("segment header CRC mismatch"));
    }
    if header[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::Mismatch(
            "bad magic: not a strata WAL segment".into(),
        ));
    }
    let version = le_u32(&header[8..12]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::Mismatch(format!(
            "unsupported format version {version} (this build reads {FORMAT_VERSION})"
        )));
    }
    let found = le_u64(&header[12..20]);
    if found != id {
        return Err(HeaderError::Mismatch(format!(
            "the header names segment {found}, the file name segment {id}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Frames

/// Appends one frame holding `body` to `out`; returns the offset of the body within `out`.
pub(super) fn push_frame(out: &mut Vec<u8>, body: &[u8]) -> usize {
    let len = u32::try_from(body.len()).expect("record bodies are limited far below 4 GiB");
    let mut head = [0u8; 8];
    head[0..4].copy_from_slice(&len.to_le_bytes());
    head[4..8].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&crc32fast::hash(&head).to_le_bytes());
    let body_offset = out.len();
    out.extend_from_slice(body);
    body_offset
}

/// The size of the frame holding a body of `body_len` bytes.
pub(super) fn frame_len(body_len: usize) -> usize {
    FRAME_HEADER_LEN + body_len
}

/// What [`read_frame`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame {
    /// The offset is the end of the data: a clean end.
    End,
    /// A frame whose header CRC, bounds and body CRC all check out.
    Valid { body: Range<usize>, next: usize },
    /// Anything else; the reason is for error messages.
    Damaged(&'static str),
}

/// Reads the frame starting at `offset` (which must be `<= data.len()`).
pub(super) fn read_frame(data: &[u8], offset: usize) -> Frame {
    let rest = &data[offset..];
    if rest.is_empty() {
        return Frame::End;
    }
    if rest.len() < FRAME_HEADER_LEN {
        return Frame::Damaged("record header runs past the end of the file");
    }
    if crc32fast::hash(&rest[..8]) != le_u32(&rest[8..12]) {
        return Frame::Damaged("record header CRC mismatch");
    }
    // The header CRC matched, so the length is what the writer wrote.
    let len = le_u32(&rest[0..4]) as usize;
    if len == 0 {
        return Frame::Damaged("record body is empty");
    }
    if rest.len() - FRAME_HEADER_LEN < len {
        return Frame::Damaged("record runs past the end of the file");
    }
    let body = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
    if crc32fast::hash(body) != le_u32(&rest[4..8]) {
        return Frame::Damaged("record body CRC mismatch");
    }
    let start = offset + FRAME_HEADER_LEN;
    Frame::Valid {
        body: start..start + len,
        next: start + len,
    }
}

/// The first byte offset at or after `from` where a valid frame starts, if any (rule R3).
///
/// Linear in the bytes scanned: a candidate costs one CRC of 8 bytes, and the body CRC is
/// computed only when the header CRC matches (for garbage, about once in 2^32 offsets).
pub(super) fn find_valid_frame(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len()).find(|&offset| matches!(read_frame(data, offset), Frame::Valid { .. }))
}

// ---------------------------------------------------------------------------------------------
// Record bodies

/// The state of one group as a Head record stores it (owned, as decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GroupSnapshot {
    pub group: u64,
    pub vote: Option<Vec<u8>>,
    pub committed: Option<Vec<u8>>,
    pub purged: Option<(u64, Vec<u8>)>,
    /// First and last index of the live entries.
    pub range: Option<(u64, u64)>,
}

/// The state of one group as a Head record stores it (borrowed, for encoding).
pub(super) struct GroupSnapshotRef<'a> {
    pub group: u64,
    pub vote: Option<&'a [u8]>,
    pub committed: Option<&'a [u8]>,
    pub purged: Option<(u64, &'a [u8])>,
    pub range: Option<(u64, u64)>,
}

/// Where one entry payload sits inside an Entries body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EntrySpan {
    /// Offset of the payload from the start of the body.
    pub offset: usize,
    pub len: u32,
    pub crc: u32,
}

/// A decoded record body. Entry payloads are not copied: their spans point into the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record {
    Head(Vec<GroupSnapshot>),
    Entries {
        group: u64,
        first: u64,
        entries: Vec<EntrySpan>,
    },
    Vote {
        group: u64,
        vote: Vec<u8>,
    },
    Committed {
        group: u64,
        committed: Vec<u8>,
    },
    Truncate {
        group: u64,
        index: u64,
    },
    Purge {
        group: u64,
        index: u64,
        payload: Vec<u8>,
    },
    RemoveGroup {
        group: u64,
    },
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("payloads are limited far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The body of a Head record listing `groups` (in the order given).
pub(super) fn encode_head<'a>(
    groups: impl ExactSizeIterator<Item = GroupSnapshotRef<'a>>,
) -> Vec<u8> {
    let mut out = vec![kind::HEAD];
    let count = u32::try_from(groups.len()).expect("fewer than 2^32 groups");
    out.extend_from_slice(&count.to_le_bytes());
    for g in groups {
        out.extend_from_slice(&g.group.to_le_bytes());
        let mut flags = 0;
        if g.vote.is_some() {
            flags |= HAS_VOTE;
        }
        if g.committed.is_some() {
            flags |= HAS_COMMITTED;
        }
        if g.purged.is_some() {
            flags |= HAS_PURGED;
        }
        if g.range.is_some() {
            flags |= HAS_RANGE;
        }
        out.push(flags);
        if let Some(vote) = g.vote {
            put_bytes(&mut out, vote);
        }
        if let Some(committed) = g.committed {
            put_bytes(&mut out, committed);
        }
        if let Some((index, payload)) = g.purged {
            out.extend_from_slice(&index.to_le_bytes());
            put_bytes(&mut out, payload);
        }
        if let Some((first, last)) = g.range {
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&last.to_le_bytes());
        }
    }
    out
}

/// The size of the Entries body holding payloads of these lengths.
pub(super) fn entries_body_len(payload_lens: impl Iterator<Item = usize>) -> usize {
    ENTRIES_FIXED_LEN
        + payload_lens
            .map(|len| ENTRY_HEADER_LEN + len)
            .sum::<usize>()
}

/// The body of an Entries record (indexes `first`, `first + 1`, …) and where each payload is.
pub(super) fn encode_entries<B: AsRef<[u8]>>(
    group: u64,
    first: u64,
    payloads: &[B],
) -> (Vec<u8>, Vec<EntrySpan>) {
    let mut out = Vec::with_capacity(entries_body_len(payloads.iter().map(|p| p.as_ref().len())));
    out.push(kind::ENTRIES);
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&first.to_le_bytes());
    let count = u32::try_from(payloads.len()).expect("fewer than 2^32 entries per record");
    out.extend_from_slice(&count.to_le_bytes());
    let mut spans = Vec::with_capacity(payloads.len());
    for payload in payloads {
        let payload = payload.as_ref();
        let len = u32::try_from(payload.len()).expect("payloads are limited far below 4 GiB");
        let crc = crc32fast::hash(payload);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        spans.push(EntrySpan {
            offset: out.len(),
            len,
            crc,
        });
        out.extend_from_slice(payload);
    }
    (out, spans)
}

fn group_bytes(kind: u8, group: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + bytes.len());
    out.push(kind);
    out.extend_from_slice(&group.to_le_bytes());
    put_bytes(&mut out, bytes);
    out
}

pub(super) fn encode_vote(group: u64, vote: &[u8]) -> Vec<u8> {
    group_bytes(kind::VOTE, group, vote)
}

pub(super) fn encode_committed(group: u64, committed: &[u8]) -> Vec<u8> {
    group_bytes(kind::COMMITTED, group, committed)
}

pub(super) fn encode_truncate(group: u64, index: u64) -> Vec<u8> {
    let mut out = vec![kind::TRUNCATE];
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out
}

pub(super) fn encode_purge(group: u64, index: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind::PURGE];
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    put_bytes(&mut out, payload);
    out
}

pub(super) fn encode_remove_group(group: u64) -> Vec<u8> {
    let mut out = vec![kind::REMOVE_GROUP];
    out.extend_from_slice(&group.to_le_bytes());
    out
}

/// A bounds-checked reader over a body.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| format!("record body ends early (field at body offset {})", self.pos))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(le_u32(self.take(4)?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(le_u64(self.take(8)?))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }

    fn finish(self) -> Result<(), String> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes after the record",
                self.data.len() - self.pos
            ))
        }
    }
}

/// Decodes a body whose frame CRCs matched. An error here is corruption, never a torn write.
pub(super) fn decode(body: &[u8]) -> Result<Record, String> {
    let mut r = Reader { data: body, pos: 0 };
    let record = match r.u8()? {
        kind::HEAD => {
            let count = r.u32()?;
            // Every snapshot takes at least 9 bytes, which bounds the allocation.
            if count as usize > body.len() / 9 {
                return Err(format!(
                    "head lists {count} groups, more than its bytes hold"
                ));
            }
            let mut groups = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let group = r.u64()?;
                let flags = r.u8()?;
                if flags & !(HAS_VOTE | HAS_COMMITTED | HAS_PURGED | HAS_RANGE) != 0 {
                    return Err(format!("unknown flags {flags:#x} for group {group}"));
                }
                let vote = (flags & HAS_VOTE != 0).then(|| r.bytes()).transpose()?;
                let committed = (flags & HAS_COMMITTED != 0)
                    .then(|| r.bytes())
                    .transpose()?;
                let purged = (flags & HAS_PURGED != 0)
                    .then(|| -> Result<_, String> { Ok((r.u64()?, r.bytes()?)) })
                    .transpose()?;
                let range = (flags & HAS_RANGE != 0)
                    .then(|| -> Result<_, String> { Ok((r.u64()?, r.u64()?)) })
                    .transpose()?;
                if let Some((first, last)) = range
                    && first > last
                {
                    return Err(format!(
                        "group {group}: entry range {first}..={last} is empty"
                    ));
                }
                groups.push(GroupSnapshot {
                    group,
                    vote,
                    committed,
                    purged,
                    range,
                });
            }
            Record::Head(groups)
        }
        kind::ENTRIES => {
            let group = r.u64()?;
            let first = r.u64()?;
            let count = r.u32()?;
            if count == 0 || count as usize > body.len() / ENTRY_HEADER_LEN {
                return Err(format!("entries record with a bad count {count}"));
            }
            let mut entries = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let len = r.u32()?;
                let crc = r.u32()?;
                let offset = r.pos;
                r.take(len as usize)?;
                entries.push(EntrySpan { offset, len, crc });
            }
            Record::Entries {
                group,
                first,
                entries,
            }
        }
        kind::VOTE => Record::Vote {
            group: r.u64()?,
            vote: r.bytes()?,
        },
        kind::COMMITTED => Record::Committed {
            group: r.u64()?,
            committed: r.bytes()?,
        },
        kind::TRUNCATE => Record::Truncate {
            group: r.u64()?,
            index: r.u64()?,
        },
        kind::PURGE => Record::Purge {
            group: r.u64()?,
            index: r.u64()?,
            payload: r.bytes()?,
        },
        kind::REMOVE_GROUP => Record::RemoveGroup { group: r.u64()? },
        other => return Err(format!("unknown record kind {other}")),
    };
    r.finish()?;
    Ok(record)
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("callers pass exactly 4 bytes"))
}

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("callers pass exactly 8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_frame(&mut out, body);
        out
    }

    #[test]
    fn records_round_trip() {
        let head = encode_head(
            [
                GroupSnapshotRef {
                    group: 0,
                    vote: Some(b"v"),
                    committed: None,
                    purged: Some((4, b"p")),
                    range: Some((5, 9)),
                },
                GroupSnapshotRef {
                    group: 7,
                    vote: None,
                    committed: Some(b""),
                    purged: None,
                    range: None,
                },
            ]
            .into_iter(),
        );
        assert_eq!(
            decode(&head).unwrap(),
            Record::Head(vec![
                GroupSnapshot {
                    group: 0,
                    vote: Some(b"v".to_vec()),
                    committed: None,
                    purged: Some((4, b"p".to_vec())),
                    range: Some((5, 9)),
                },
                GroupSnapshot {
                    group: 7,
                    vote: None,
                    committed: Some(Vec::new()),
                    purged: None,
                    range: None,
                },
            ])
        );
        let (body, spans) = encode_entries(3, 10, &[&b"ab"[..], b"", b"xyz"]);
        assert_eq!(body.len(), entries_body_len([2, 0, 3].into_iter()));
        let Record::Entries {
            group,
            first,
            entries,
        } = decode(&body).unwrap()
        else {
            panic!("not an entries record");
        };
        assert_eq!((group, first, &entries), (3, 10, &spans));
        let payloads: Vec<&[u8]> = spans
            .iter()
            .map(|s| &body[s.offset..s.offset + s.len as usize])
            .collect();
        assert_eq!(payloads, [&b"ab"[..], b"", b"xyz"]);
        assert!(
            spans
                .iter()
                .all(|s| s.crc == crc32fast::hash(&body[s.offset..s.offset + s.len as usize]))
        );
        let simple = [
            (
                encode_vote(1, b"vote"),
                Record::Vote {
                    group: 1,
                    vote: b"vote".to_vec(),
                },
            ),
            (
                encode_committed(2, b"c"),
                Record::Committed {
                    group: 2,
                    committed: b"c".to_vec(),
                },
            ),
            (
                encode_truncate(3, 17),
                Record::Truncate {
                    group: 3,
                    index: 17,
                },
            ),
            (
                encode_purge(4, 8, b"id"),
                Record::Purge {
                    group: 4,
                    index: 8,
                    payload: b"id".to_vec(),
                },
            ),
            (encode_remove_group(5), Record::RemoveGroup { group: 5 }),
        ];
        for (body, record) in simple {
            assert_eq!(decode(&body).unwrap(), record);
        }
    }

    #[test]
    fn decode_refuses_garbage_without_panicking() {
        assert!(decode(&[99]).is_err());
        assert!(decode(&[kind::VOTE, 1, 2]).is_err());
        let mut vote = encode_vote(1, b"v");
        vote.push(0);
        assert!(decode(&vote).is_err(), "trailing bytes");
        let (mut entries, _) = encode_entries(1, 1, &[b"abc"]);
        entries.truncate(entries.len() - 1);
        assert!(decode(&entries).is_err(), "payload cut short");
        // A huge count must not allocate.
        let mut head = vec![kind::HEAD];
        head.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&head).is_err());
    }

    #[test]
    fn frames_detect_damage() {
        let data = framed(b"\x03hello");
        assert_eq!(
            read_frame(&data, 0),
            Frame::Valid {
                body: 12..18,
                next: 18
            }
        );
        assert_eq!(read_frame(&data, data.len()), Frame::End);
        assert!(matches!(read_frame(&data[..5], 0), Frame::Damaged(_)));
        assert!(matches!(read_frame(&data[..15], 0), Frame::Damaged(_)));
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x40;
            assert!(
                matches!(read_frame(&bad, 0), Frame::Damaged(_)),
                "flipping byte {i} must be detected"
            );
        }
        let zeros = [0u8; 64];
        assert!(matches!(read_frame(&zeros, 0), Frame::Damaged(_)));
        assert_eq!(find_valid_frame(&zeros, 0), None);
        let mut garbage_then_frame = vec![0xAB; 37];
        garbage_then_frame.extend_from_slice(&data);
        assert_eq!(find_valid_frame(&garbage_then_frame, 1), Some(37));
    }

    #[test]
    fn segment_headers() {
        let header = segment_header(42);
        assert_eq!(check_segment_header(&header, 42), Ok(()));
        assert!(matches!(
            check_segment_header(&header, 41),
            Err(HeaderError::Mismatch(_))
        ));
        assert!(matches!(
            check_segment_header(&header[..10], 42),
            Err(HeaderError::Damaged(_))
        ));
        let mut bad = header;
        bad[13] ^= 1;
        assert!(matches!(
            check_segment_header(&bad, 42),
            Err(HeaderError::Damaged(_))
        ));
    }
}
