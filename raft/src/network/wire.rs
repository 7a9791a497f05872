//! Our binary encoding of the openraft messages the gRPC transport carries as opaque payloads
//! (`strata.raft.v1.RaftRequest.payload`, `RaftReply.ok`, `SnapshotHeader.vote_meta`). Built on
//! the helpers of [`crate::codec`], so entries travel exactly as the WAL stores them.
//!
//! ```text
//! bool                     u8 0 | 1
//! append request           vote | option<log id> prev | entries u32, each: entry | option<log id> commit
//! append response          tag u8: 0 success, 1 partial (option<log id>), 2 conflict, 3 higher vote (vote)
//! vote request             vote | option<log id> last | bool leadership transfer
//! vote response            vote | bool granted | option<log id> last
//! transfer leader request  vote from leader | node u64 to | option<log id> last
//! transfer leader response tag u8: 0 ok, 1 vote changed (vote expected | vote actual),
//!                          2 log not flushed (option<log id> expected | option<log id> actual)
//! snapshot response        vote
//! snapshot vote + meta     vote | option<log id> last | stored membership
//! ```
//! Decoding never panics: bad or truncated input is `strata_shard::Error::Corrupt`.

use openraft::raft::TransferLeaderError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use strata_shard::Result;
use strata_shard::codec::{PutExt, Reader};

use crate::codec;
use crate::codec::{
    get_entry, get_log_id, get_option, get_stored_membership, get_vote, put_log_id, put_option,
    put_stored_membership, put_vote,
};
use crate::types::{Response, SnapshotMeta, TypeConfig, Vote, WriteOutcome};

/// The smallest encoded entry: a log id and a payload tag.
const ENTRY_BYTES_MIN: usize = 25;

fn put_bool(b: &mut Vec<u8>, v: bool) {
    b.put_u8(u8::from(v));
}

fn get_bool(r: &mut Reader<'_>) -> Result<bool> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(r.corrupt(format!("bool {other}"))),
    }
}

/// The head of an append request: everything but the entries and the commit position, so the
/// client can add entries one by one and stop at a size limit.
pub fn put_append_head(b: &mut Vec<u8>, rpc: &AppendEntriesRequest<TypeConfig>, entries: u32) {
    put_vote(b, &rpc.vote);
    put_option(b, rpc.prev_log_id.as_ref(), put_log_id);
    b.put_u32(entries);
}

/// The whole request; the client builds it with [`put_append_head`] instead, entry by entry.
#[cfg(test)]
pub fn put_append_request(b: &mut Vec<u8>, rpc: &AppendEntriesRequest<TypeConfig>) {
    put_append_head(b, rpc, rpc.entries.len() as u32);
    for e in &rpc.entries {
        crate::codec::put_entry(b, e);
    }
    put_option(b, rpc.leader_commit.as_ref(), put_log_id);
}

pub fn get_append_request(r: &mut Reader<'_>) -> Result<AppendEntriesRequest<TypeConfig>> {
    let vote = get_vote(r)?;
    let prev_log_id = get_option(r, get_log_id)?;
    let n = r.count(ENTRY_BYTES_MIN)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(get_entry(r)?);
    }
    let leader_commit = get_option(r, get_log_id)?;
    Ok(AppendEntriesRequest {
        vote,
        prev_log_id,
        entries,
        leader_commit,
    })
}

pub fn put_append_response(b: &mut Vec<u8>, resp: &AppendEntriesResponse<TypeConfig>) {
    match resp {
        AppendEntriesResponse::Success => b.put_u8(0),
        AppendEntriesResponse::PartialSuccess(id) => {
            b.put_u8(1);
            put_option(b, id.as_ref(), put_log_id);
        }
        AppendEntriesResponse::Conflict => b.put_u8(2),
        AppendEntriesResponse::HigherVote(v) => {
            b.put_u8(3);
            put_vote(b, v);
        }
    }
}

pub fn get_append_response(r: &mut Reader<'_>) -> Result<AppendEntriesResponse<TypeConfig>> {
    Ok(match r.u8()? {
        0 => AppendEntriesResponse::Success,
        1 => AppendEntriesResponse::PartialSuccess(get_option(r, get_log_id)?),
        2 => AppendEntriesResponse::Conflict,
        3 => AppendEntriesResponse::HigherVote(get_vote(r)?),
        tag => return Err(r.corrupt(format!("append response tag {tag}"))),
    })
}

pub fn put_vote_request(b: &mut Vec<u8>, rpc: &VoteRequest<TypeConfig>) {
    put_vote(b, &rpc.vote);
    put_option(b, rpc.last_log_id.as_ref(), put_log_id);
    put_bool(b, rpc.leadership_transfer);
}

pub fn get_vote_request(r: &mut Reader<'_>) -> Result<VoteRequest<TypeConfig>> {
    let vote = get_vote(r)?;
    let last_log_id = get_option(r, get_log_id)?;
    let leadership_transfer = get_bool(r)?;
    Ok(VoteRequest {
        vote,
        last_log_id,
        leadership_transfer,
    })
}

pub fn put_vote_response(b: &mut Vec<u8>, resp: &VoteResponse<TypeConfig>) {
    put_vote(b, &resp.vote);
    put_bool(b, resp.vote_granted);
    put_option(b, resp.last_log_id.as_ref(), put_log_id);
}

pub fn get_vote_response(r: &mut Reader<'_>) -> Result<VoteResponse<TypeConfig>> {
    let vote = get_vote(r)?;
    let vote_granted = get_bool(r)?;
    let last_log_id = get_option(r, get_log_id)?;
    Ok(VoteResponse {
        vote,
        vote_granted,
        last_log_id,
    })
}

pub fn put_transfer_request(b: &mut Vec<u8>, rpc: &TransferLeaderRequest<TypeConfig>) {
    put_vote(b, rpc.from_leader());
    b.put_u64(*rpc.to_node_id());
    put_option(b, rpc.last_log_id(), put_log_id);
}

pub fn get_transfer_request(r: &mut Reader<'_>) -> Result<TransferLeaderRequest<TypeConfig>> {
    let from = get_vote(r)?;
    let to = r.u64()?;
    let last = get_option(r, get_log_id)?;
    Ok(TransferLeaderRequest::new(from, to, last))
}

pub fn put_transfer_response(b: &mut Vec<u8>, resp: &TransferLeaderResponse<TypeConfig>) {
    match resp {
        Ok(()) => b.put_u8(0),
        Err(TransferLeaderError::VoteChanged { expected, actual }) => {
            b.put_u8(1);
            put_vote(b, expected);
            put_vote(b, actual);
        }
        Err(TransferLeaderError::LogNotFlushed { expected, actual }) => {
            b.put_u8(2);
            put_option(b, expected.as_ref(), put_log_id);
            put_option(b, actual.as_ref(), put_log_id);
        }
    }
}

pub fn get_transfer_response(r: &mut Reader<'_>) -> Result<TransferLeaderResponse<TypeConfig>> {
    Ok(match r.u8()? {
        0 => Ok(()),
        1 => Err(TransferLeaderError::VoteChanged {
            expected: get_vote(r)?,
            actual: get_vote(r)?,
        }),
        2 => Err(TransferLeaderError::LogNotFlushed {
            expected: get_option(r, get_log_id)?,
            actual: get_option(r, get_log_id)?,
        }),
        tag => return Err(r.corrupt(format!("transfer leader response tag {tag}"))),
    })
}

pub fn put_snapshot_response(b: &mut Vec<u8>, resp: &SnapshotResponse<TypeConfig>) {
    put_vote(b, &resp.vote);
}

pub fn get_snapshot_response(r: &mut Reader<'_>) -> Result<SnapshotResponse<TypeConfig>> {
    Ok(SnapshotResponse::new(get_vote(r)?))
}

/// The sender's vote and the snapshot's metadata (`SnapshotHeader.vote_meta`).
pub fn put_vote_meta(b: &mut Vec<u8>, (vote, meta): &(Vote, SnapshotMeta)) {
    put_vote(b, vote);
    put_option(b, meta.last_log_id.as_ref(), put_log_id);
    put_stored_membership(b, &meta.last_membership);
}

pub fn get_vote_meta(r: &mut Reader<'_>) -> Result<(Vote, SnapshotMeta)> {
    let vote = get_vote(r)?;
    let last_log_id = get_option(r, get_log_id)?;
    let last_membership = get_stored_membership(r)?;
    Ok((
        vote,
        SnapshotMeta {
            last_log_id,
            last_membership,
        },
    ))
}

/// What applying an entry did (`types::Response`), for forwarded proposals.
///
/// ```text
/// response  tag u8: 0 done | 1 write: appended u64, duplicates u64, rejected u32 × (reason str,
///           count u64), errors u32 × str | 2 meta: meta response | 3 refused: str
/// ```
pub fn put_response(b: &mut Vec<u8>, r: &Response) {
    match r {
        Response::Done => b.put_u8(0),
        Response::Write(w) => {
            b.put_u8(1);
            b.put_u64(w.appended);
            b.put_u64(w.duplicates);
            b.put_u32(w.rejected.len() as u32);
            for (reason, n) in &w.rejected {
                codec::put_str(b, reason);
                b.put_u64(*n);
            }
            b.put_u32(w.errors.len() as u32);
            for e in &w.errors {
                codec::put_str(b, e);
            }
        }
        Response::Meta(m) => {
            b.put_u8(2);
            crate::meta::put_meta_response(b, m);
        }
        Response::Refused(why) => {
            b.put_u8(3);
            codec::put_str(b, why);
        }
    }
}

pub fn get_response(r: &mut Reader<'_>) -> Result<Response> {
    Ok(match r.u8()? {
        0 => Response::Done,
        1 => {
            let appended = r.u64()?;
            let duplicates = r.u64()?;
            let mut rejected = std::collections::BTreeMap::new();
            for _ in 0..r.count(12)? {
                let reason = codec::get_str(r)?;
                rejected.insert(reason, r.u64()?);
            }
            let mut errors = Vec::new();
            for _ in 0..r.count(4)? {
                errors.push(codec::get_str(r)?);
            }
            Response::Write(WriteOutcome {
                appended,
                duplicates,
                rejected,
                errors,
            })
        }
        2 => Response::Meta(crate::meta::get_meta_response(r)?),
        3 => Response::Refused(codec::get_str(r)?),
        tag => return Err(r.corrupt(format!("response tag {tag}"))),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Debug;

    use openraft::EntryPayload;
    use openraft::vote::RaftLeaderId;
    use strata_shard::{Labels, Sample, SeriesKey, Tenant};

    use super::*;
    use crate::codec::{decode, encode};
    use crate::types::{Command, Entry, LogId, Membership, NodeId, NodeInfo, StoredMembership};

    type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(LeaderId::new(term, node), index)
    }

    fn vote(term: u64, node: u64, committed: bool) -> Vote {
        Vote {
            leader_id: LeaderId::new(term, node),
            committed,
        }
    }

    fn membership() -> Membership {
        let nodes: BTreeMap<NodeId, NodeInfo> = (1..=3)
            .map(|i| {
                let info = NodeInfo {
                    addr: format!("127.0.0.1:{}", 7000 + i),
                    zone: format!("z{i}"),
                };
                (i, info)
            })
            .collect();
        Membership::new(vec![[1, 2, 3].into()], nodes).unwrap()
    }

    /// Round-trips `v` through `put`/`get` with `eq`, and checks that every truncation and a
    /// trailing byte are errors, not panics.
    fn check<T: Debug>(
        v: &T,
        put: impl Fn(&mut Vec<u8>, &T),
        get: impl Fn(&mut Reader<'_>) -> Result<T> + Copy,
        eq: impl Fn(&T, &T) -> bool,
    ) {
        let bytes = encode(v, put);
        let back = decode(&bytes, "wire", get).unwrap();
        assert!(eq(v, &back), "{v:?} came back as {back:?}");
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], "wire", get).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, "wire", get).is_err());
    }

    fn dbg_eq<T: Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn append_entries_round_trip_and_truncations_are_errors() {
        let key = SeriesKey::new(
            Tenant::new("t").unwrap(),
            Labels::from_pairs(&[("__name__", "up"), ("job", "a")]).unwrap(),
        );
        let entries: Vec<Entry> = vec![
            Entry {
                log_id: log_id(2, 1, 5),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2, 1, 6),
                payload: EntryPayload::Normal(Command::Write(
                    vec![(key, vec![Sample::new(1_000, 1.5), Sample::new(2_000, -0.0)])].into(),
                )),
            },
            Entry {
                log_id: log_id(2, 1, 7),
                payload: EntryPayload::Membership(membership()),
            },
        ];
        for (prev, entries, commit) in [
            (None, vec![], None),
            (
                Some(log_id(1, 2, 4)),
                entries.clone(),
                Some(log_id(2, 1, 5)),
            ),
        ] {
            let rpc = AppendEntriesRequest::<TypeConfig> {
                vote: vote(2, 1, true),
                prev_log_id: prev,
                entries,
                leader_commit: commit,
            };
            check(&rpc, put_append_request, get_append_request, dbg_eq);
        }
        for resp in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::PartialSuccess(Some(log_id(3, 2, 9))),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(vote(4, 3, false)),
        ] {
            check(
                &resp,
                put_append_response,
                get_append_response,
                PartialEq::eq,
            );
        }
    }

    #[test]
    fn votes_transfers_and_snapshot_messages_round_trip() {
        for rpc in [
            VoteRequest::<TypeConfig>::new(vote(3, 2, false), None),
            VoteRequest {
                vote: vote(3, 2, false),
                last_log_id: Some(log_id(2, 1, 7)),
                leadership_transfer: true,
            },
        ] {
            check(&rpc, put_vote_request, get_vote_request, PartialEq::eq);
        }
        for resp in [
            VoteResponse::<TypeConfig>::new(vote(3, 2, false), None, false),
            VoteResponse::new(vote(3, 2, true), Some(log_id(2, 1, 7)), true),
        ] {
            check(&resp, put_vote_response, get_vote_response, PartialEq::eq);
        }
        let rpc =
            TransferLeaderRequest::<TypeConfig>::new(vote(5, 1, true), 3, Some(log_id(5, 1, 20)));
        check(
            &rpc,
            put_transfer_request,
            get_transfer_request,
            PartialEq::eq,
        );
        for resp in [
            Ok(()),
            Err(TransferLeaderError::VoteChanged {
                expected: vote(5, 1, true),
                actual: vote(6, 2, false),
            }),
            Err(TransferLeaderError::LogNotFlushed {
                expected: Some(log_id(5, 1, 20)),
                actual: None,
            }),
        ] {
            check(
                &resp,
                put_transfer_response,
                get_transfer_response,
                PartialEq::eq,
            );
        }
        check(
            &SnapshotResponse::<TypeConfig>::new(vote(7, 3, true)),
            put_snapshot_response,
            get_snapshot_response,
            dbg_eq,
        );
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(7, 3, 100)),
            last_membership: StoredMembership::new(Some(log_id(7, 3, 90)), membership()),
        };
        check(
            &(vote(7, 3, true), meta),
            put_vote_meta,
            get_vote_meta,
            dbg_eq,
        );
        check(
            &(vote(0, 0, false), SnapshotMeta::default()),
            put_vote_meta,
            get_vote_meta,
            dbg_eq,
        );
    }

    #[test]
    fn bad_tags_are_errors() {
        assert!(decode(&[9], "append response", get_append_response).is_err());
        assert!(decode(&[3], "transfer response", get_transfer_response).is_err());
        let mut b = encode(&vote(1, 1, false), put_vote);
        b.push(0); // no last log id
        b.push(2); // not a bool
        assert!(decode(&b, "vote request", get_vote_request).is_err());
    }

    #[test]
    fn responses_of_forwarded_proposals_round_trip_and_truncations_are_errors() {
        let write = WriteOutcome {
            appended: 7,
            duplicates: 2,
            rejected: [("out_of_order".to_string(), 3)].into_iter().collect(),
            errors: vec!["series up{job=\"a\"}: sample at 5 is out of order".into()],
        };
        let cases = [
            Response::Done,
            Response::Write(write),
            Response::Meta(crate::meta::MetaResponse::RingEpoch(4)),
            Response::Refused("not for this group".into()),
        ];
        for r in &cases {
            let bytes = codec::encode(r, put_response);
            assert_eq!(&codec::decode(&bytes, "response", get_response).unwrap(), r);
            for cut in 0..bytes.len() {
                assert!(codec::decode(&bytes[..cut], "response", get_response).is_err());
            }
        }
    }
}
