//! The visibility matrix (owner, acl member, stranger, operator ×
//! unactivated, active, disabled × public, private), ListImages scoping,
//! filters, sorting and paging.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::bytes;
use crate::daemon::*;

struct Fixture {
    d: Daemon,
    _dir: tempfile::TempDir,
    /// (state, public) -> uuid
    images: Vec<(&'static str, bool, String)>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut images = Vec::new();
    for state in ["unactivated", "active", "disabled"] {
        for public in [false, true] {
            let name = format!("{state}-{}", if public { "public" } else { "private" });
            let uuid = d.image(
                ALICE,
                &name,
                json!({"public": public, "acl": [BOB]}),
                &bytes(1000, 1),
                state != "unactivated",
            );
            if state == "disabled" {
                d.post(&format!("/images/{uuid}?action=disable"), &json!({}));
            }
            images.push((state, public, uuid));
        }
    }
    Fixture {
        d,
        _dir: dir,
        images,
    }
}

fn names(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn get_image_follows_the_visibility_matrix() {
    let f = fixture();
    for (state, public, uuid) in &f.images {
        for (who, account) in [
            ("owner", Some(ALICE)),
            ("acl member", Some(BOB)),
            ("stranger", Some(CAROL)),
            ("operator", None),
        ] {
            let visible = match who {
                "owner" | "operator" => true,
                "acl member" => *state != "unactivated",
                _ => *state != "unactivated" && *public,
            };
            let path = match account {
                Some(a) => format!("/images/{uuid}?account={a}"),
                None => format!("/images/{uuid}"),
            };
            let (s, body) = sj(f.d.get(&path));
            if visible {
                assert_eq!(s, 200, "{who} should see {state} public={public}: {body}");
            } else {
                assert_eq!(
                    (s, body["code"].as_str()),
                    (404, Some("ResourceNotFound")),
                    "{who} sees {state} public={public}"
                );
                assert_eq!(body["message"], "image not found");
            }
            // Files follow the same rule.
            let fpath = path.replacen(uuid.as_str(), &format!("{uuid}/file"), 1);
            assert_eq!(
                f.d.get(&fpath).status().as_u16(),
                if visible { 200 } else { 404 }
            );
        }
    }
}

#[test]
fn mutations_by_a_non_owner_who_can_see_get_not_image_owner() {
    let f = fixture();
    let (_, _, active_private) = f
        .images
        .iter()
        .find(|(s, p, _)| *s == "active" && !p)
        .unwrap();
    let (_, _, active_public) = f
        .images
        .iter()
        .find(|(s, p, _)| *s == "active" && *p)
        .unwrap();
    for action in ["disable", "enable", "activate", "update"] {
        let body = json!({"name": "x"});
        let b = assert_err(
            f.d.post(
                &format!("/images/{active_private}?action={action}&account={BOB}"),
                &body,
            ),
            422,
            "NotImageOwner",
        );
        assert_eq!(
            b["message"],
            format!("account {BOB} is not the owner of image {active_private}")
        );
        assert_err(
            f.d.post(
                &format!("/images/{active_private}?action={action}&account={CAROL}"),
                &body,
            ),
            404,
            "ResourceNotFound",
        );
        assert_err(
            f.d.post(
                &format!("/images/{active_public}?action={action}&account={CAROL}"),
                &body,
            ),
            422,
            "NotImageOwner",
        );
    }
    assert_err(
        f.d.delete(&format!("/images/{active_public}?account={CAROL}")),
        422,
        "NotImageOwner",
    );
}

#[test]
fn list_images_scopes_by_account() {
    let f = fixture();
    let list = |q: &str| {
        let (s, body) = sj(f.d.get(&format!("/images{q}")));
        assert_eq!(s, 200, "{body}");
        names(&body)
    };
    assert_eq!(
        list(&format!("?account={ALICE}")),
        set(&["active-private", "active-public"])
    );
    assert_eq!(
        list(&format!("?account={BOB}")),
        set(&["active-private", "active-public"])
    );
    assert_eq!(list(&format!("?account={CAROL}")), set(&["active-public"]));
    assert_eq!(
        list(&format!("?account={BOB}&state=all")),
        set(&[
            "active-private",
            "active-public",
            "disabled-private",
            "disabled-public"
        ])
    );
    assert_eq!(list(&format!("?account={BOB}&state=disabled")), set(&[]));
    assert_eq!(
        list(&format!("?account={ALICE}&state=disabled")),
        set(&["disabled-private", "disabled-public"])
    );
    assert_eq!(
        list(&format!("?account={ALICE}&state=unactivated")),
        set(&["unactivated-private", "unactivated-public"])
    );
    assert_eq!(
        list(&format!("?account={CAROL}&state=all")),
        set(&["active-public", "disabled-public"])
    );
    assert_eq!(
        list(&format!("?account={BOB}&public=false")),
        set(&["active-private"])
    );
    assert_eq!(
        list(&format!("?account={BOB}&public=true")),
        set(&["active-public"])
    );
    assert_eq!(
        list(&format!("?account={BOB}&owner={ALICE}")),
        set(&["active-private", "active-public"])
    );
    assert_eq!(
        list(&format!("?account={CAROL}&owner={ALICE}")),
        set(&["active-public"])
    );
    assert_eq!(list("?state=all").len(), 6);
    assert_eq!(list(""), set(&["active-private", "active-public"]));
}

#[test]
fn list_filters_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.image(
        ALICE,
        "web-server",
        json!({"tags": {"role": "web", "n": 42}, "os": "linux"}),
        &bytes(10, 1),
        true,
    );
    d.image(
        ALICE,
        "db-server",
        json!({"tags": {"role": "db"}, "type": "docker"}),
        &bytes(10, 2),
        true,
    );
    d.image(
        ALICE,
        "web-proxy",
        json!({"version": "2.0.0", "billing_tags": ["gold"]}),
        &bytes(10, 3),
        true,
    );
    let list = |q: &str| names(&sj(d.get(&format!("/images{q}"))).1);
    assert_eq!(list("?name=web-server"), set(&["web-server"]));
    assert_eq!(list("?name=~web"), set(&["web-server", "web-proxy"]));
    assert_eq!(list("?version=2.0.0"), set(&["web-proxy"]));
    assert_eq!(list("?os=linux"), set(&["web-server"]));
    assert_eq!(list("?type=docker"), set(&["db-server"]));
    assert_eq!(list("?type=!docker"), set(&["web-server", "web-proxy"]));
    assert_eq!(list("?tag.role=web"), set(&["web-server"]));
    assert_eq!(list("?tag.n=42"), set(&["web-server"]));
    assert_eq!(list("?tag.role=web&tag.n=41"), set(&[]));
    assert_eq!(list("?billing_tag=gold"), set(&["web-proxy"]));
    for bad in [
        "?state=bogus",
        "?limit=abc",
        "?sort=name",
        "?marker=garbage",
        "?account=x",
        "?public=maybe",
    ] {
        assert_err(d.get(&format!("/images{bad}")), 422, "InvalidParameter");
    }
}

#[test]
fn sorting_limit_and_the_inclusive_marker_page_through_everything() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut all = Vec::new();
    for i in 0..7 {
        all.push(d.image(ALICE, &format!("img{i}"), json!({}), &bytes(10, i), true));
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let (_, asc) = sj(d.get("/images?sort=published_at"));
    let asc: Vec<String> = asc
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["uuid"].as_str().unwrap().into())
        .collect();
    assert_eq!(asc, all);
    let (_, desc) = sj(d.get("/images?sort=published_at.desc&limit=3"));
    assert_eq!(desc[0]["uuid"], all[6].as_str());
    assert_eq!(desc.as_array().unwrap().len(), 3);
    // Page as sdc-clients does: the marker is inclusive, drop a repeated first.
    let mut seen: Vec<String> = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let q = match &marker {
            Some(m) => format!("/images?limit=3&marker={m}"),
            None => "/images?limit=3".into(),
        };
        let (_, page) = sj(d.get(&q));
        let mut page: Vec<String> = page
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["uuid"].as_str().unwrap().into())
            .collect();
        if marker.is_some() && page.first() == marker.as_ref() {
            page.remove(0);
        }
        if page.is_empty() {
            break;
        }
        marker = page.last().cloned();
        seen.extend(page);
    }
    assert_eq!(seen, all);
}

#[test]
fn an_origin_or_marker_the_caller_cannot_see_answers_as_one_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let private = d.image(ALICE, "private", json!({}), &bytes(1000, 1), true);
    let random = "0b1d6a1e-7f7e-4c3e-9d2a-4e6c2b1f0a99";
    let body = |origin: &str| json!({"name": "mine", "version": "1", "type": "zone-dataset", "os": "smartos", "origin": origin});
    // Building on another account's private image.
    let a = assert_err(
        d.post(&format!("/images?account={BOB}"), &body(&private)),
        422,
        "OriginDoesNotExist",
    );
    let b = assert_err(
        d.post(&format!("/images?account={BOB}"), &body(random)),
        422,
        "OriginDoesNotExist",
    );
    assert_eq!(
        a["message"].as_str().unwrap().replace(&private, "X"),
        b["message"].as_str().unwrap().replace(random, "X")
    );
    // Paging from it.
    let a = assert_err(
        d.get(&format!("/images?account={BOB}&marker={private}")),
        422,
        "InvalidParameter",
    );
    let b = assert_err(
        d.get(&format!("/images?account={BOB}&marker={random}")),
        422,
        "InvalidParameter",
    );
    assert_eq!(
        a["message"].as_str().unwrap().replace(&private, "X"),
        b["message"].as_str().unwrap().replace(random, "X")
    );
    // Its owner still builds on it and pages from it.
    let (s, _) = sj(d.post(&format!("/images?account={ALICE}"), &body(&private)));
    assert_eq!(s, 200);
    let (s, _) = sj(d.get(&format!("/images?account={ALICE}&marker={private}")));
    assert_eq!(s, 200);
}

#[test]
fn a_dependent_the_owner_cannot_see_is_counted_not_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let base = d.image(
        ALICE,
        "base",
        json!({"public": true}),
        &bytes(1000, 1),
        true,
    );
    let bobs = d.image(BOB, "child", json!({"origin": base}), &bytes(1000, 2), true);
    let body = assert_err(
        d.delete(&format!("/images/{base}?account={ALICE}")),
        422,
        "ImageHasDependentImages",
    );
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("has 1 dependent"), "{msg}");
    assert!(!msg.contains(&bobs), "{msg}");
    // An operator sees it named.
    let body = assert_err(
        d.delete(&format!("/images/{base}")),
        422,
        "ImageHasDependentImages",
    );
    assert!(body["message"].as_str().unwrap().contains(&bobs));
}

#[test]
fn lineage_usage_tells_an_account_nothing_about_what_others_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let secret = bytes(400_000, 77);
    // Alice stores some bytes privately.
    let _alices = d.image(ALICE, "secret", json!({}), &secret, true);
    // Bob uploads the same bytes (and a variant sharing half of them).
    let bobs = d.image(BOB, "probe", json!({}), &secret, true);
    let mut half = secret[..200_000].to_vec();
    half.extend(bytes(200_000, 78));
    let bobs2 = d.image(BOB, "probe2", json!({}), &half, true);
    let (s, l) = sj(d.get(&format!("/images/{bobs}/lineage?account={BOB}")));
    assert_eq!(s, 200, "{l}");
    // Alice's copy is invisible to Bob: one reference, Bob's own.
    assert_eq!(l["usage"]["file_references"], 1, "{l}");
    // What Bob shares, he shares with his own probe2 only.
    let (_, l2) = sj(d.get(&format!("/images/{bobs2}/lineage?account={BOB}")));
    assert_eq!(
        l["usage"]["shared_bytes"], l2["usage"]["shared_bytes"],
        "{l} {l2}"
    );
    // An operator sees the store-wide truth.
    let (_, op) = sj(d.get(&format!("/images/{bobs}/lineage")));
    assert_eq!(op["usage"]["file_references"], 2, "{op}");
    // A chain through an image Bob may not see names nothing.
    let alices_public_child = d.image(
        ALICE,
        "child",
        json!({"origin": _alices, "public": true}),
        &bytes(1000, 79),
        true,
    );
    let (_, lc) = sj(d.get(&format!(
        "/images/{alices_public_child}/lineage?account={BOB}"
    )));
    assert_eq!(lc["origin_chain"], json!([{"hidden": true}]), "{lc}");
}
