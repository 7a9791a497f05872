//! Binary encoding of the openraft values Strata stores (WAL records, the engine's applied
//! position) and sends. Hand-written on `strata_shard::codec` so that the format is ours, stable
//! and versioned by the containers that hold it, not by a serde derive of a pre-release crate.
//!
//! ```text
//! log id       term u64 | node u64 | index u64
//! option       u8 0 (none) | u8 1 then the value
//! vote         term u64 | node u64 | committed u8
//! node info    addr (u32 len + UTF-8) | zone (u32 len + UTF-8)
//! membership   configs u32, each: ids u32 then node ids u64 | nodes u32, each: id u64 | node info
//! entry        log id | payload tag u8: 0 blank, 1 command, 2 membership | payload
//! command      tag u8: 0 write (series u32, each: key bytes | samples u32, each: ts i64 | bits u64),
//!              1 seal, 2 retention (now_ms i64), 3 compact, 4 meta (a meta command, see
//!              `crate::meta`)
//! ```
//! Decoding never panics; bad input is `strata_shard::Error::Corrupt` naming what was read.

use std::collections::{BTreeMap, BTreeSet};

use openraft::EntryPayload;
use openraft::vote::RaftLeaderId;
use strata_shard::codec::{PutExt, Reader};
use strata_shard::{Error, Result, WriteBatch};

use crate::types::{
    Command, Entry, LogId, Membership, NodeId, NodeInfo, StoredMembership, TypeConfig, Vote,
};

type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

pub fn put_log_id(b: &mut Vec<u8>, id: &LogId) {
    b.put_u64(id.leader_id.term);
    b.put_u64(id.leader_id.node_id);
    b.put_u64(id.index);
}

pub fn get_log_id(r: &mut Reader<'_>) -> Result<LogId> {
    let (term, node, index) = (r.u64()?, r.u64()?, r.u64()?);
    Ok(LogId::new(LeaderId::new(term, node), index))
}

pub fn put_option<T>(b: &mut Vec<u8>, v: Option<&T>, put: impl Fn(&mut Vec<u8>, &T)) {
    match v {
        None => b.put_u8(0),
        Some(v) => {
            b.put_u8(1);
            put(b, v);
        }
    }
}

pub fn get_option<T>(
    r: &mut Reader<'_>,
    get: impl Fn(&mut Reader<'_>) -> Result<T>,
) -> Result<Option<T>> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(get(r)?)),
        tag => Err(r.corrupt(format!("option tag {tag}"))),
    }
}

pub fn put_vote(b: &mut Vec<u8>, v: &Vote) {
    b.put_u64(v.leader_id.term);
    b.put_u64(v.leader_id.node_id);
    b.put_u8(u8::from(v.committed));
}

pub fn get_vote(r: &mut Reader<'_>) -> Result<Vote> {
    let (term, node) = (r.u64()?, r.u64()?);
    let committed = match r.u8()? {
        0 => false,
        1 => true,
        other => return Err(r.corrupt(format!("vote committed flag {other}"))),
    };
    Ok(Vote {
        leader_id: LeaderId::new(term, node),
        committed,
    })
}

pub fn put_str(b: &mut Vec<u8>, s: &str) {
    b.put_bytes(s.as_bytes());
}

pub fn get_str(r: &mut Reader<'_>) -> Result<String> {
    let bytes = r.bytes()?;
    String::from_utf8(bytes.to_vec()).map_err(|_| r.corrupt("string is not UTF-8"))
}

pub fn put_membership(b: &mut Vec<u8>, m: &Membership) {
    let configs = m.get_joint_config();
    b.put_u32(configs.len() as u32);
    for config in configs {
        b.put_u32(config.len() as u32);
        for id in config {
            b.put_u64(*id);
        }
    }
    let nodes: Vec<(&NodeId, &NodeInfo)> = m.nodes().collect();
    b.put_u32(nodes.len() as u32);
    for (id, node) in nodes {
        b.put_u64(*id);
        put_str(b, &node.addr);
        put_str(b, &node.zone);
    }
}

pub fn get_membership(r: &mut Reader<'_>) -> Result<Membership> {
    let n_configs = r.count(4)?;
    let mut configs = Vec::with_capacity(n_configs);
    for _ in 0..n_configs {
        let n = r.count(8)?;
        let mut ids = BTreeSet::new();
        for _ in 0..n {
            ids.insert(r.u64()?);
        }
        configs.push(ids);
    }
    let n_nodes = r.count(16)?;
    let mut nodes = BTreeMap::new();
    for _ in 0..n_nodes {
        let id = r.u64()?;
        let addr = get_str(r)?;
        let zone = get_str(r)?;
        nodes.insert(id, NodeInfo { addr, zone });
    }
    Membership::new(configs, nodes).map_err(|e| r.corrupt(format!("membership: {e}")))
}

pub fn put_stored_membership(b: &mut Vec<u8>, m: &StoredMembership) {
    put_option(b, m.log_id().as_ref(), put_log_id);
    put_membership(b, m.membership());
}

pub fn get_stored_membership(r: &mut Reader<'_>) -> Result<StoredMembership> {
    let log_id = get_option(r, get_log_id)?;
    Ok(StoredMembership::new(log_id, get_membership(r)?))
}

pub fn put_command(b: &mut Vec<u8>, c: &Command) {
    match c {
        Command::Write(batch) => {
            b.put_u8(0);
            b.extend_from_slice(batch.as_bytes());
        }
        Command::Seal => b.put_u8(1),
        Command::Retention { now_ms } => {
            b.put_u8(2);
            b.put_i64(*now_ms);
        }
        Command::Compact => b.put_u8(3),
        Command::Meta(m) => {
            b.put_u8(4);
            crate::meta::put_meta_command(b, m);
        }
    }
}

pub fn get_command(r: &mut Reader<'_>) -> Result<Command> {
    Ok(match r.u8()? {
        0 => Command::Write(WriteBatch::read(r)?),
        1 => Command::Seal,
        2 => Command::Retention { now_ms: r.i64()? },
        3 => Command::Compact,
        4 => Command::Meta(crate::meta::get_meta_command(r)?),
        tag => return Err(r.corrupt(format!("command tag {tag}"))),
    })
}

pub fn put_entry(b: &mut Vec<u8>, e: &Entry) {
    put_log_id(b, &e.log_id);
    match &e.payload {
        EntryPayload::Blank => b.put_u8(0),
        EntryPayload::Normal(c) => {
            b.put_u8(1);
            put_command(b, c);
        }
        EntryPayload::Membership(m) => {
            b.put_u8(2);
            put_membership(b, m);
        }
    }
}

pub fn get_entry(r: &mut Reader<'_>) -> Result<Entry> {
    let log_id = get_log_id(r)?;
    let payload = match r.u8()? {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Normal(get_command(r)?),
        2 => EntryPayload::Membership(get_membership(r)?),
        tag => return Err(r.corrupt(format!("entry payload tag {tag}"))),
    };
    Ok(Entry { log_id, payload })
}

/// Encodes one value with `put`.
pub fn encode<T: ?Sized>(v: &T, put: impl Fn(&mut Vec<u8>, &T)) -> Vec<u8> {
    let mut b = Vec::new();
    put(&mut b, v);
    b
}

/// Decodes one value that must fill `bytes` exactly.
pub fn decode<T>(
    bytes: &[u8],
    what: &str,
    get: impl Fn(&mut Reader<'_>) -> Result<T>,
) -> Result<T> {
    let mut r = Reader::new(bytes, what);
    let v = get(&mut r)?;
    if !r.is_empty() {
        return Err(r.corrupt("trailing bytes"));
    }
    Ok(v)
}

/// Maps a storage-format error to the `io::Error` openraft's storage traits return.
pub fn to_io(e: Error) -> std::io::Error {
    std::io::Error::other(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_shard::{Labels, Sample, SeriesKey, Tenant};

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(LeaderId::new(term, node), index)
    }

    #[test]
    fn entries_votes_and_memberships_round_trip_and_truncations_are_errors() {
        let key = SeriesKey::new(
            Tenant::new("t").unwrap(),
            Labels::from_pairs(&[("__name__", "up")]).unwrap(),
        );
        let nodes: BTreeMap<NodeId, NodeInfo> = (1..=3)
            .map(|i| {
                let info = NodeInfo {
                    addr: format!("10.0.0.{i}:7000"),
                    zone: format!("z{i}"),
                };
                (i, info)
            })
            .collect();
        let membership = Membership::new(vec![[1, 2].into(), [1, 2, 3].into()], nodes).unwrap();
        let entries = [
            Entry {
                log_id: log_id(1, 1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2, 3, 7),
                payload: EntryPayload::Normal(Command::Write(
                    vec![(
                        key,
                        vec![Sample::new(-5, f64::from_bits(0x7ff0_0000_0000_0002))],
                    )]
                    .into(),
                )),
            },
            Entry {
                log_id: log_id(2, 3, 8),
                payload: EntryPayload::Normal(Command::Retention { now_ms: 99 }),
            },
            Entry {
                log_id: log_id(3, 2, 9),
                payload: EntryPayload::Membership(membership.clone()),
            },
        ];
        for e in &entries {
            let bytes = encode(e, put_entry);
            let back = decode(&bytes, "entry", get_entry).unwrap();
            assert_eq!(&back, e);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut], "entry", get_entry).is_err());
            }
        }
        let vote = Vote {
            leader_id: LeaderId::new(5, 2),
            committed: true,
        };
        assert_eq!(
            decode(&encode(&vote, put_vote), "vote", get_vote).unwrap(),
            vote
        );
        let stored = StoredMembership::new(Some(log_id(3, 2, 9)), membership);
        let back = decode(
            &encode(&stored, put_stored_membership),
            "membership",
            get_stored_membership,
        )
        .unwrap();
        assert_eq!(back, stored);
    }
}
