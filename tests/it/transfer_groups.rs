//! Transfer version 2: a source whose chunks recompression gathered into
//! group records sends a group whole when one request asks for every
//! member of it (and never a group that holds anything else), its
//! members one by one otherwise; the receiver checks every member and
//! keeps the group as it came.

use std::collections::HashSet;

use imgstore::error::Result;
use imgstore::format::{self, ChunkList, Codec, Stored};
use imgstore::store::StoreOptions;
use imgstore::transfer::{ChunkSource, Expect, LocalSource, Progress, receive_file};
use imgstore::{ChunkId, FileId, Store};

use crate::common::*;
use crate::transfer::opts;

const P: [u8; 16] = [9; 16];

/// A store holding `data`, recompressed into groups.
fn grouped(dir: &std::path::Path, data: &[u8]) -> (Store, FileId) {
    let s = open_small(dir);
    let id = put(&s, data);
    s.recompress(9).unwrap();
    assert!(s.stats().unwrap().grouped_chunks > 0);
    (s, id)
}

/// What a fetch of `ids` sent: for each record, whether it was a group
/// and the chunks it held (each checked against its id).
fn fetched(source: &dyn ChunkSource, ids: &[ChunkId]) -> Vec<(bool, Vec<ChunkId>)> {
    let mut dctx = zstd::bulk::Decompressor::new().unwrap();
    let mut got = Vec::new();
    source
        .fetch(ids, &mut |rec| {
            let mut out = Vec::new();
            match format::decode_stored(rec).unwrap() {
                (Stored::One(h), payload) => {
                    assert!(!h.settled, "a member made for the trip is not settled");
                    format::decode_and_verify(&h, payload, &mut dctx, &mut out).unwrap();
                    got.push((false, vec![h.chunk_id]));
                }
                (Stored::Group(g), payload) => {
                    format::decode_and_verify_group(&g, payload, &mut dctx, &mut out).unwrap();
                    got.push((true, g.members.iter().map(|m| m.id).collect()));
                }
            }
            Ok(())
        })
        .unwrap();
    got
}

/// A copy of `source`'s file into `dst` under transfer id `p`.
fn copy(dst: &Store, source: &dyn ChunkSource, p: &[u8; 16]) {
    receive_file(
        dst,
        source,
        p,
        &Expect::default(),
        &Progress::default(),
        &opts(),
    )
    .unwrap();
}

fn ids_of(list: &ChunkList) -> Vec<ChunkId> {
    let mut seen = HashSet::new();
    list.entries
        .iter()
        .map(|e| e.id)
        .filter(|id| seen.insert(*id))
        .collect()
}

#[test]
fn whole_groups_travel_when_a_request_asks_for_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let data = text(2_000_000, 43);
    let (src, id) = grouped(dir.path(), &data);
    let source = LocalSource::new(src.clone(), id).unwrap();
    let list = source.chunk_list().unwrap();
    let runs = list.runs.clone().expect("a list of version 2");
    let in_runs: u32 = runs.iter().map(|r| r.count).sum();
    assert!(
        in_runs as usize * 10 >= list.entries.len() * 9,
        "{in_runs} of {} entries in runs",
        list.entries.len()
    );
    let ids = ids_of(&list);

    // Every id asked for: each run comes as one group record, in order,
    // and every chunk exactly once.
    let got = fetched(&source, &ids);
    let sent: Vec<ChunkId> = got.iter().flat_map(|(_, m)| m.clone()).collect();
    assert_eq!(sent, ids);
    let groups: Vec<_> = got.iter().filter(|(g, _)| *g).collect();
    assert_eq!(groups.len(), runs.len());
    for (run, (_, members)) in runs.iter().zip(&groups) {
        let first = run.first as usize;
        let listed: Vec<ChunkId> = list.entries[first..first + run.count as usize]
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(&listed, members);
    }

    // All but one member of a group asked for: records of their own.
    let run = runs[0];
    let some: Vec<ChunkId> = list.entries[run.first as usize..][..run.count as usize - 1]
        .iter()
        .map(|e| e.id)
        .collect();
    let got = fetched(&source, &some);
    assert!(got.iter().all(|(g, _)| !g), "{got:?}");
    assert_eq!(
        got.into_iter().flat_map(|(_, m)| m).collect::<Vec<_>>(),
        some
    );

    // A receiver of version 1: a list without runs, records only.
    let v1 = LocalSource::new(src.clone(), id).unwrap().without_groups();
    assert_eq!(v1.chunk_list().unwrap().runs, None);
    assert!(fetched(&v1, &ids).iter().all(|(g, _)| !g));

    // A full copy keeps the groups as they came, every member checked.
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = open_small(dst_dir.path());
    let progress = Progress::default();
    receive_file(&dst, &source, &P, &Expect::default(), &progress, &opts()).unwrap();
    assert_eq!(read_all(&dst, &id), data);
    let p = progress.report();
    let grouped_bytes: u64 = runs.iter().map(|r| u64::from(r.record_len)).sum();
    assert!(p.wire_bytes >= grouped_bytes, "{p:?}");
    assert_eq!(
        dst.stats().unwrap().grouped_chunks,
        u64::from(in_runs),
        "the groups were kept as they came"
    );
    assert_clean(&dst);
    // And they read back after a restart.
    drop(dst);
    let dst = open_small(dst_dir.path());
    assert_eq!(read_all(&dst, &id), data);
    assert_clean(&dst);
}

#[test]
fn a_group_that_holds_another_files_chunk_never_travels_whole() {
    let dir = tempfile::tempdir().unwrap();
    // Segments large enough that both files' chunks share one group.
    let opts_big = StoreOptions {
        segment_bytes: 8 << 20,
        ..small_options()
    };
    let src = Store::open_with(dir.path(), opts_big).unwrap();
    let mine = text(150_000, 51);
    let theirs = text(150_000, 52);
    let id = put(&src, &mine);
    let other = put(&src, &theirs);
    src.recompress(9).unwrap();
    let source = LocalSource::new(src.clone(), id).unwrap();
    let list = source.chunk_list().unwrap();
    assert_eq!(list.runs, Some(vec![]), "no group is this file's alone");
    let got = fetched(&source, &ids_of(&list));
    assert!(
        got.iter().all(|(g, _)| !g),
        "a group with another file's chunks was sent"
    );
    let other_chunks: HashSet<ChunkId> = ids_of(&src.chunk_list(&other).unwrap())
        .into_iter()
        .collect();
    assert!(
        got.iter()
            .flat_map(|(_, m)| m)
            .all(|c| !other_chunks.contains(c))
    );

    let dst_dir = tempfile::tempdir().unwrap();
    let dst = open_small(dst_dir.path());
    copy(&dst, &source, &P);
    assert_eq!(read_all(&dst, &id), mine);
    assert_clean(&dst);
}

#[test]
fn an_update_takes_whole_groups_and_the_missing_members_of_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let old = text(1_500_000, 61);
    let mut new = old.clone();
    // Change a stretch in the middle and append some more.
    for b in &mut new[700_000..760_000] {
        *b = b.wrapping_add(1);
    }
    new.extend_from_slice(&text(300_000, 62));
    let (src, old_id) = grouped(dir.path(), &old);
    let new_id = put(&src, &new);
    src.recompress(9).unwrap();

    let dst_dir = tempfile::tempdir().unwrap();
    let dst = open_small(dst_dir.path());
    let first = LocalSource::new(src.clone(), old_id).unwrap();
    copy(&dst, &first, &P);
    let update = LocalSource::new(src.clone(), new_id).unwrap();
    let progress = Progress::default();
    let p2 = [10; 16];
    receive_file(&dst, &update, &p2, &Expect::default(), &progress, &opts()).unwrap();
    let p = progress.report();
    assert!(p.chunks_local > 0 && p.chunks_fetched > 0, "{p:?}");
    assert_eq!(read_all(&dst, &new_id), new);
    assert_eq!(read_all(&dst, &old_id), old);
    assert_clean(&dst);
}

/// Sends each group with one member's bytes changed, every CRC right:
/// only the members' BLAKE3 can tell.
struct ForgedGroups(LocalSource);
impl ChunkSource for ForgedGroups {
    fn chunk_list(&self) -> Result<ChunkList> {
        self.0.chunk_list()
    }
    fn fetch(&self, ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut dctx = zstd::bulk::Decompressor::new().unwrap();
        self.0.fetch(ids, &mut |rec| {
            let (Stored::Group(g), payload) = format::decode_stored(rec).unwrap() else {
                return out(rec);
            };
            let mut raw = Vec::new();
            format::decode_group_payload(&g.header, payload, &mut dctx, &mut raw).unwrap();
            let mid = raw.len() / 2;
            raw[mid] ^= 1;
            let members: Vec<(ChunkId, u32)> =
                g.members.iter().map(|m| (m.id, m.raw_len)).collect();
            let mut forged = format::encode_group_head(Codec::Raw, 0, &members, &raw);
            forged.extend_from_slice(&raw);
            out(&forged)
        })
    }
}

/// Answers each request with the records of the whole file: groups with
/// members nobody asked for.
struct Greedy(LocalSource, Vec<ChunkId>);
impl ChunkSource for Greedy {
    fn chunk_list(&self) -> Result<ChunkList> {
        self.0.chunk_list()
    }
    fn fetch(&self, _ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.0.fetch(&self.1, out)
    }
}

#[test]
fn a_forged_group_or_one_with_members_not_asked_for_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = text(1_000_000, 71);
    let (src, id) = grouped(dir.path(), &data);
    let all = ids_of(
        &LocalSource::new(src.clone(), id)
            .unwrap()
            .chunk_list()
            .unwrap(),
    );
    let liars: Vec<Box<dyn ChunkSource>> = vec![
        Box::new(ForgedGroups(LocalSource::new(src.clone(), id).unwrap())),
        Box::new(Greedy(LocalSource::new(src.clone(), id).unwrap(), all)),
    ];
    for liar in liars {
        let dst_dir = tempfile::tempdir().unwrap();
        let dst = open_small(dst_dir.path());
        let got = receive_file(
            &dst,
            liar.as_ref(),
            &P,
            &Expect::default(),
            &Progress::default(),
            &opts(),
        );
        let err = got.expect_err("a lying source was believed");
        assert!(format!("{err}").contains("source sent"), "{err}");
        assert!(dst.stat(&id).is_err(), "nothing is committed");
        assert_clean(&dst);
    }
}

/// Between two daemons over HTTP: a receiver of this version asks for
/// groups and gets them whole; a request without `groups=true` (a
/// receiver of version 1) gets a list of version 1 and records only.
#[test]
fn two_daemons_move_whole_groups_and_a_version_1_receiver_still_gets_records() {
    use crate::daemon::{ALICE, sj};
    use serde_json::json;
    let (_s, src) = crate::xdc::source();
    let data = text(3_000_000, 81);
    let uuid = src.image(ALICE, "grouped", json!({}), &data, true);
    src.state.api.store().recompress(9).unwrap();
    assert!(src.state.api.store().stats().unwrap().grouped_chunks > 0);

    // The wire, as each version of receiver asks.
    let http = reqwest::blocking::Client::new();
    let chunks = format!("{}/images/{uuid}/file/chunks?account={ALICE}", src.url);
    let list_of = |url: &str| {
        let body = http.get(url).send().unwrap().bytes().unwrap();
        format::decode_chunk_list(&body).unwrap()
    };
    let v1 = list_of(&chunks);
    assert_eq!(v1.runs, None);
    let v2 = list_of(&format!("{chunks}&groups=true"));
    assert!(v2.runs.as_ref().is_some_and(|r| !r.is_empty()));
    let ids = ids_of(&v2);
    let kinds_of = |url: &str| {
        let body = http
            .post(url)
            .body(format::encode_id_list(&ids))
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        let mut groups = 0;
        let mut chunks = 0;
        imgstore::transfer::split_records(&body[..], &mut |rec| {
            match format::decode_stored(rec).unwrap().0 {
                Stored::Group(g) => {
                    groups += 1;
                    chunks += g.members.len();
                }
                Stored::One(_) => chunks += 1,
            }
            Ok(())
        })
        .unwrap();
        (groups, chunks)
    };
    assert_eq!(kinds_of(&chunks), (0, ids.len()));
    let (groups, n) = kinds_of(&format!("{chunks}&groups=true"));
    assert!(groups > 0);
    assert_eq!(n, ids.len());

    // A copy job through the daemons keeps the groups.
    let (_d, dst) = crate::xdc::dest(&src.url);
    let (job, _) = crate::xdc::import(&dst, &uuid, ALICE);
    assert_eq!(job["execution"], "succeeded", "{job}");
    let store = dst.state.api.store();
    assert!(store.stats().unwrap().grouped_chunks > 0);
    let r = dst.get(&format!("/images/{uuid}/file?account={ALICE}"));
    assert_eq!(r.bytes().unwrap().to_vec(), data);
    assert!(store.verify(false).unwrap().is_clean());
    let (s, _) = sj(dst.get(&format!("/images/{uuid}")));
    assert_eq!(s, 200);
}
