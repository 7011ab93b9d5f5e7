//! CloneImage (RFD 113 M2), lineage and trusted sharers, over real HTTP.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::common::bytes;
use crate::daemon::*;

/// Alice's chain of `depth` images on top of an operator base, the top one
/// shared with Bob. Returns (base, chain base-most first).
fn chain(d: &Daemon, depth: usize, top_size: usize) -> (String, Vec<String>) {
    let base = d.image(
        ADMIN,
        "base",
        json!({"public": true}),
        &bytes(50_000, 999),
        true,
    );
    let mut uuids = Vec::new();
    let mut origin = base.clone();
    for i in 0..depth {
        let size = if i + 1 == depth { top_size } else { 20_000 };
        let u = d.image(
            ALICE,
            &format!("layer{i}"),
            json!({"origin": origin}),
            &bytes(size, i as u64),
            true,
        );
        origin = u.clone();
        uuids.push(u);
    }
    let top = uuids.last().unwrap();
    let r = d.post(&format!("/images/{top}/acl?account={ALICE}"), &json!([BOB]));
    assert_eq!(r.status(), 200);
    (base, uuids)
}

fn get(d: &Daemon, uuid: &str) -> Value {
    let (s, img) = sj(d.get(&format!("/images/{uuid}")));
    assert_eq!(s, 200, "{img}");
    img
}

fn clone_ok(d: &Daemon, uuid: &str, account: &str) -> Value {
    let (s, img) = sj(d.post(
        &format!("/images/{uuid}/clone?account={account}"),
        &json!({}),
    ));
    assert_eq!(s, 200, "{img}");
    img
}

/// Checks a clone chain: walks from `top` down to `base`, comparing with the
/// source chain; returns the clones base-most first.
fn check_clone_chain(
    d: &Daemon,
    top: &Value,
    base: &str,
    sources: &[String],
    account: &str,
) -> Vec<String> {
    let mut clones = vec![top["uuid"].as_str().unwrap().to_string()];
    let mut cur = top.clone();
    for _ in 1..sources.len() {
        let o = cur["origin"].as_str().unwrap().to_string();
        cur = get(d, &o);
        clones.push(o);
    }
    assert_eq!(cur["origin"], base);
    clones.reverse();
    for (i, (c, s)) in clones.iter().zip(sources).enumerate() {
        let ci = get(d, c);
        let si = get(d, s);
        assert_ne!(c, s);
        assert_eq!(ci["owner"], account);
        assert!(ci.get("acl").is_none());
        assert_eq!(ci["public"], false);
        assert_eq!(ci["name"], si["name"]);
        assert_eq!(ci["files"], si["files"], "the clone links the same content");
        let last = i + 1 == clones.len();
        assert_eq!(
            ci["disabled"],
            if last {
                si["disabled"].clone()
            } else {
                json!(true)
            }
        );
        assert_eq!(
            ci["state"],
            if last {
                si["state"].clone()
            } else {
                json!("disabled")
            }
        );
        // A fresh date (the same millisecond as the source's is possible).
        assert!(
            ci["published_at"].as_str().unwrap() >= si["published_at"].as_str().unwrap(),
            "{ci} {si}"
        );
    }
    clones
}

#[test]
fn chains_of_depth_1_3_and_10_clone_base_most_first_as_links() {
    for depth in [1usize, 3, 10] {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(dir.path());
        let (base, sources) = chain(&d, depth, 500_000);
        let store = d.state.api.store();
        let before = store.stats().unwrap();
        let top = clone_ok(&d, sources.last().unwrap(), BOB);
        let clones = check_clone_chain(&d, &top, &base, &sources, BOB);
        assert_eq!(clones.len(), depth);
        let after = store.stats().unwrap();
        assert_eq!(
            after.stored_bytes, before.stored_bytes,
            "no byte was copied"
        );
        assert_eq!(after.file_references, before.file_references + depth as u64);
        let got = d
            .get(&format!(
                "/images/{}/file?account={BOB}",
                clones.last().unwrap()
            ))
            .bytes()
            .unwrap();
        assert_eq!(got.to_vec(), bytes(500_000, depth as u64 - 1));
    }
}

#[test]
fn the_error_matrix_of_clone() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let (_, sources) = chain(&d, 2, 1000);
    let top = sources.last().unwrap();
    let body = assert_err(
        d.post(&format!("/images/{top}/clone"), &json!({})),
        422,
        "InvalidParameter",
    );
    assert_eq!(body["errors"][0]["field"], "account");
    assert_err(
        d.post(&format!("/images/{top}/clone?account=nope"), &json!({})),
        422,
        "InvalidParameter",
    );
    // Invisible to Carol: 404, as if missing.
    assert_err(
        d.post(&format!("/images/{top}/clone?account={CAROL}"), &json!({})),
        404,
        "ResourceNotFound",
    );
    // Own image (the owner is not on its own acl).
    assert_err(
        d.post(&format!("/images/{top}/clone?account={ALICE}"), &json!({})),
        422,
        "ImageNotShared",
    );
    // A public operator image not shared with the caller.
    let public = d.image(ADMIN, "pub", json!({"public": true}), &bytes(10, 5), true);
    assert_err(
        d.post(&format!("/images/{public}/clone?account={BOB}"), &json!({})),
        422,
        "ImageNotShared",
    );
    // A clone of a clone: the new clone's acl is empty.
    let c = clone_ok(&d, top, BOB);
    let cu = c["uuid"].as_str().unwrap();
    assert_err(
        d.post(&format!("/images/{cu}/clone?account={BOB}"), &json!({})),
        422,
        "ImageNotShared",
    );
    // Unactivated (visible to Bob only as its owner... so make it Bob-visible by ownership).
    let un = d.image(ALICE, "un", json!({"acl": [BOB]}), &bytes(10, 6), false);
    assert_err(
        d.post(&format!("/images/{un}/clone?account={BOB}"), &json!({})),
        404,
        "ResourceNotFound",
    );
    let own_un = d.image(BOB, "mine", json!({}), &bytes(10, 7), false);
    assert_err(
        d.post(&format!("/images/{own_un}/clone?account={BOB}"), &json!({})),
        422,
        "ValidationFailed",
    );
    // Docker images.
    let docker = d.image(
        ALICE,
        "dock",
        json!({"type": "docker", "acl": [BOB]}),
        &bytes(10, 8),
        true,
    );
    assert_err(
        d.post(&format!("/images/{docker}/clone?account={BOB}"), &json!({})),
        422,
        "ValidationFailed",
    );
    // Wrong method on the clone route.
    assert_err(
        d.get(&format!("/images/{top}/clone")),
        405,
        "MethodNotAllowedError",
    );
}

#[test]
fn an_origin_of_a_third_account_not_shared_with_the_caller_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let carols = d.image(
        CAROL,
        "carol-base",
        json!({"acl": [ALICE]}),
        &bytes(1000, 1),
        true,
    );
    let alices = d.image(
        ALICE,
        "on-carols",
        json!({"origin": carols, "acl": [BOB]}),
        &bytes(1000, 2),
        true,
    );
    let body = assert_err(
        d.post(&format!("/images/{alices}/clone?account={BOB}"), &json!({})),
        422,
        "ImageNotShared",
    );
    assert!(body["message"].as_str().unwrap().contains(&carols));
    // Shared with Bob too: now it may be cloned.
    d.post(
        &format!("/images/{carols}/acl?account={CAROL}"),
        &json!([BOB]),
    );
    clone_ok(&d, &alices, BOB);
}

#[test]
fn chains_deeper_than_100_are_an_internal_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut origin: Option<String> = None;
    for i in 0..102 {
        let extra = match &origin {
            Some(o) => json!({"origin": o}),
            None => json!({}),
        };
        origin = Some(d.image(ALICE, &format!("l{i}"), extra, &bytes(10, i), true));
    }
    let top = origin.unwrap();
    d.post(&format!("/images/{top}/acl?account={ALICE}"), &json!([BOB]));
    assert_err(
        d.post(&format!("/images/{top}/clone?account={BOB}"), &json!({})),
        500,
        "InternalError",
    );
    assert_eq!(
        sj(d.get(&format!("/images?account={BOB}&owner={BOB}&state=all"))).1,
        json!([])
    );
}

#[test]
fn cloning_twice_makes_a_second_top_on_the_first_clones_origins() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let (base, sources) = chain(&d, 3, 1000);
    let a = clone_ok(&d, sources.last().unwrap(), BOB);
    let b = clone_ok(&d, sources.last().unwrap(), BOB);
    let ca = check_clone_chain(&d, &a, &base, &sources, BOB);
    let cb = check_clone_chain(&d, &b, &base, &sources, BOB);
    // The caller's clones of the origins serve again; the top is new.
    assert_eq!(ca[..2], cb[..2]);
    assert_ne!(ca[2], cb[2]);
}

#[test]
fn deleting_in_any_order_never_breaks_the_others_and_gc_reclaims_at_the_end() {
    for order in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(dir.path());
        let (base, sources) = chain(&d, 3, 400_000);
        let top = clone_ok(&d, sources.last().unwrap(), BOB);
        let clones = check_clone_chain(&d, &top, &base, &sources, BOB);
        let del = |uuid: &str, owner: &str| {
            assert_eq!(
                d.delete(&format!("/images/{uuid}?account={owner}"))
                    .status(),
                204
            );
        };
        let read_all_left = |left: &[(String, &str)]| {
            for (u, _) in left {
                let r = d.get(&format!("/images/{u}/file"));
                assert_eq!(r.status(), 200);
                let img = get(&d, u);
                let b = r.bytes().unwrap();
                assert_eq!(b.len() as u64, img["files"][0]["size"].as_u64().unwrap());
            }
        };
        let mut left: Vec<(String, &str)> = sources.iter().map(|s| (s.clone(), ALICE)).collect();
        left.extend(clones.iter().map(|c| (c.clone(), BOB)));
        // Delete tops first (dependents), interleaving source and clone chains.
        let mut plan: Vec<(String, &str)> = Vec::new();
        for i in (0..3).rev() {
            match order {
                0 => {
                    plan.push((sources[i].clone(), ALICE));
                    plan.push((clones[i].clone(), BOB));
                }
                1 => {
                    plan.push((clones[i].clone(), BOB));
                    plan.push((sources[i].clone(), ALICE));
                }
                _ => plan.push((sources[i].clone(), ALICE)),
            }
        }
        if order == 2 {
            for i in (0..3).rev() {
                plan.push((clones[i].clone(), BOB));
            }
        }
        for (u, owner) in plan {
            del(&u, owner);
            left.retain(|(x, _)| *x != u);
            read_all_left(&left);
        }
        del(&base, ADMIN);
        let store = d.state.api.store();
        assert_eq!(store.stats().unwrap().files, 0);
        store.gc_execute(&store.gc_plan(0.0).unwrap()).unwrap();
        assert_eq!(store.stats().unwrap().live_stored_bytes, 0);
        assert!(store.verify(false).unwrap().is_clean());
    }
}

#[test]
fn concurrent_clones_of_one_image_all_succeed_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let (base, sources) = chain(&d, 4, 1000);
    let top = sources.last().unwrap().clone();
    let url = d.url.clone();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (url, top) = (url.clone(), top.clone());
            std::thread::spawn(move || {
                let r = reqwest::blocking::Client::new()
                    .post(format!("{url}/images/{top}/clone?account={BOB}"))
                    .json(&json!({}))
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().unwrap()
            })
        })
        .collect();
    let mut tops = std::collections::HashSet::new();
    for t in threads {
        let top = t.join().unwrap();
        check_clone_chain(&d, &top, &base, &sources, BOB);
        tops.insert(top["uuid"].as_str().unwrap().to_string());
    }
    assert_eq!(tops.len(), 6);
    // Six tops; each chain of origin clones is made once or reused by
    // clones that looked after it was committed.
    let (_, mine) = sj(d.get(&format!("/images?owner={BOB}&state=all")));
    let n = mine.as_array().unwrap().len();
    assert!((6 + 3..=24).contains(&n), "{n}");
    assert!(d.state.api.store().verify(false).unwrap().is_clean());
}

#[test]
fn lineage_reports_chain_derivatives_provenance_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let (base, sources) = chain(&d, 2, 300_000);
    let top = sources.last().unwrap();
    let (s, before) = sj(d.get(&format!("/images/{top}/lineage?account={ALICE}")));
    assert_eq!(s, 200, "{before}");
    assert_eq!(before["usage"]["logical_bytes"], 300_000);
    assert_eq!(before["usage"]["shared_bytes"], 0);
    assert!(before["usage"]["unique_bytes"].as_u64().unwrap() > 290_000);
    let chain: Vec<&str> = before["origin_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(chain, vec![base.as_str(), sources[0].as_str()]);
    assert!(before["source"].is_null());

    let c = clone_ok(&d, top, BOB);
    let cu = c["uuid"].as_str().unwrap();
    let (_, lc) = sj(d.get(&format!("/images/{cu}/lineage?account={BOB}")));
    assert_eq!(lc["source"]["how"], "clone");
    assert_eq!(lc["source"]["uuid"], top.as_str());
    assert_eq!(lc["source"]["owner"], ALICE);
    assert_eq!(lc["source"]["datacenter"], "local");
    assert_eq!(
        lc["usage"]["unique_bytes"], 0,
        "a linked file shares all its bytes"
    );
    let (_, after) = sj(d.get(&format!("/images/{top}/lineage?account={ALICE}")));
    let derived: HashMap<String, String> = after["derived"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["uuid"].as_str().unwrap().to_string(),
                x["relation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Alice cannot see Bob's clone: derivatives are filtered by visibility.
    assert!(derived.is_empty(), "{derived:?}");
    let (_, from_base) = sj(d.get(&format!("/images/{}/lineage", sources[0])));
    let rel: Vec<String> = from_base["derived"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["relation"].as_str().unwrap().to_string())
        .collect();
    assert!(
        rel.contains(&"incremental".to_string()) && rel.contains(&"clone".to_string()),
        "{from_base}"
    );
    // Not part of the manifest.
    assert!(get(&d, cu).get("provenance").is_none());
    assert_err(
        d.get(&format!("/images/{top}/lineage?account={CAROL}")),
        404,
        "ResourceNotFound",
    );
}

#[test]
fn trusted_sharers_decide_what_a_name_lookup_can_provision() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mine = d.image(BOB, "app", json!({"version": "1.0.0"}), &bytes(10, 1), true);
    let operator = d.image(ADMIN, "base", json!({"public": true}), &bytes(10, 2), true);
    let from_alice = d.image(
        ALICE,
        "alice-tool",
        json!({"acl": [BOB]}),
        &bytes(10, 3),
        true,
    );
    // A stranger injects an image with the very name Bob provisions by.
    let injected = d.image(
        CAROL,
        "app",
        json!({"version": "9.9.9", "acl": [BOB]}),
        &bytes(10, 4),
        true,
    );
    let names = |q: &str| -> Vec<String> {
        let (s, list) = sj(d.get(&format!("/images?account={BOB}{q}")));
        assert_eq!(s, 200, "{list}");
        list.as_array()
            .unwrap()
            .iter()
            .map(|i| i["uuid"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        names("&name=app").contains(&injected),
        "plain listing shows shared images"
    );
    let provisionable = names("&provisionable=true");
    assert!(provisionable.contains(&mine) && provisionable.contains(&operator));
    assert!(!provisionable.contains(&injected) && !provisionable.contains(&from_alice));
    assert_eq!(names("&provisionable=true&name=app"), vec![mine.clone()]);

    let (s, set) = sj(d
        .client
        .put(format!("{}/accounts/{BOB}/settings?account={BOB}", d.url))
        .json(&json!({"image_share_trusted_accounts": [ALICE]}))
        .send()
        .unwrap());
    assert_eq!(s, 200, "{set}");
    assert_eq!(set["image_share_trusted_accounts"], json!([ALICE]));
    let (_, got) = sj(d.get(&format!("/accounts/{BOB}/settings?account={BOB}")));
    assert_eq!(got, set);
    let provisionable = names("&provisionable=true");
    assert!(provisionable.contains(&from_alice) && !provisionable.contains(&injected));
    // Nobody else changes Bob's trust.
    assert_err(
        d.client
            .put(format!("{}/accounts/{BOB}/settings?account={CAROL}", d.url))
            .json(&json!({"image_share_trusted_accounts": [CAROL]}))
            .send()
            .unwrap(),
        401,
        "UnauthorizedError",
    );
    assert_err(
        d.client
            .put(format!("{}/accounts/{BOB}/settings", d.url))
            .json(&json!({"image_share_trusted_accounts": ["x"]}))
            .send()
            .unwrap(),
        422,
        "ValidationFailed",
    );
    assert_err(d.get("/images?provisionable=true"), 422, "InvalidParameter");
}
