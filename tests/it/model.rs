//! Random operation sequences against a trivial in-memory model.

use std::collections::HashMap;

use imgstore::{Error, FileId};
use proptest::prelude::*;

use crate::common::*;

#[derive(Clone, Debug)]
enum Op {
    /// Put content number `n` (contents overlap so chunks are shared).
    Put(u8),
    Link(u8),
    Unlink(u8),
    Gc(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12).prop_map(Op::Put),
        2 => (0u8..12).prop_map(Op::Link),
        3 => (0u8..12).prop_map(Op::Unlink),
        1 => (0u8..4).prop_map(Op::Gc),
        1 => Just(Op::Reopen),
    ]
}

/// Content `n`: pieces of a shared pool, so files share chunks.
fn content(n: u8) -> Vec<u8> {
    let n = u64::from(n);
    let mut out = Vec::new();
    for j in 0..(1 + n % 5) {
        out.extend(bytes(9_000 + (n as usize) * 37, (n * 3 + j) % 7));
    }
    out.extend(text(2_000 + n as usize * 100, n));
    out
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_small(dir.path());
    let mut model: HashMap<FileId, (u64, u8)> = HashMap::new();
    let id_of = |n: u8| FileId(*blake3::hash(&content(n)).as_bytes());
    for op in ops {
        match op {
            Op::Put(n) => {
                let r = store.put(&content(n)[..]).unwrap();
                let e = model.entry(r.file_id).or_insert((0, n));
                e.0 += 1;
                prop_assert_eq!(r.refs, e.0);
            }
            Op::Link(n) => match (store.link(&id_of(n)), model.get_mut(&id_of(n))) {
                (Ok(refs), Some(e)) => {
                    e.0 += 1;
                    prop_assert_eq!(refs, e.0);
                }
                (Err(Error::FileNotFound(_)), None) => {}
                (got, want) => prop_assert!(false, "link: {:?} vs model {:?}", got, want),
            },
            Op::Unlink(n) => match (store.unlink(&id_of(n)), model.get_mut(&id_of(n))) {
                (Ok(refs), Some(e)) => {
                    e.0 -= 1;
                    prop_assert_eq!(refs, e.0);
                    if e.0 == 0 {
                        model.remove(&id_of(n));
                    }
                }
                (Err(Error::FileNotFound(_)), None) => {}
                (got, want) => prop_assert!(false, "unlink: {:?} vs model {:?}", got, want),
            },
            Op::Gc(t) => {
                let plan = store.gc_plan(f64::from(t) / 4.0).unwrap();
                store.gc_execute(&plan).unwrap();
            }
            Op::Reopen => {
                drop(store);
                store = open_small(dir.path());
            }
        }
    }
    let stats = store.stats().unwrap();
    prop_assert_eq!(stats.files, model.len() as u64);
    for (id, (refs, n)) in &model {
        prop_assert_eq!(store.stat(id).unwrap().refs, *refs);
        prop_assert_eq!(read_all(&store, id), content(*n));
    }
    let report = store.verify(false).unwrap();
    prop_assert!(report.is_clean(), "{:#?}", report.problems);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_operation_sequences_match_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}

/// A sequence that once exposed a mistake; kept as a named regression.
#[test]
fn unlink_then_gc_then_put_of_the_same_content() {
    run(vec![
        Op::Put(3),
        Op::Put(4),
        Op::Unlink(3),
        Op::Gc(0),
        Op::Put(3),
        Op::Reopen,
        Op::Gc(0),
    ])
    .unwrap();
}
