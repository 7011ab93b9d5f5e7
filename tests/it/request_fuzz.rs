//! Random requests against a live daemon: every route with every method,
//! query strings of known keys and arbitrary values (numbers that overflow,
//! malformed dates, markers, uuids that exist, do not, or are not uuids),
//! manifests and ACLs of arbitrary JSON, odd Range, Content-MD5 and
//! Accept-Version headers. Whatever comes in, the daemon answers: never a
//! 500, every error an IMGAPI body with a `code`, and it keeps serving.
//!
//! `PROPTEST_CASES=N` runs more cases than CI's (a longer fuzzing run).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::common::bytes;
use crate::daemon::*;

const KEYS: &[&str] = &[
    "account",
    "state",
    "name",
    "version",
    "owner",
    "marker",
    "limit",
    "sort",
    "action",
    "os",
    "type",
    "tag.role",
    "billing_tag",
    "public",
    "channel",
    "inclusive",
    "index",
    "datacenter",
    "compression",
    "sha1",
    "dataset_guid",
    "storage",
    "uuid",
    "threshold",
    "force",
];

const ACTIONS: &[&str] = &[
    "activate",
    "enable",
    "disable",
    "update",
    "clone",
    "import",
    "import-from-datacenter",
    "import-remote",
    "gc",
    "verify",
    "channel-add",
];

/// Values a client might send, from plausible to hostile.
fn value(ids: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9._-]{1,12}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u128>().prop_map(|n| n.to_string()),
        (any::<i64>(), any::<i32>(), any::<i32>(), any::<i64>())
            .prop_map(|(y, m, d, h)| format!("{y}-{m}-{d}T{h}:00:00Z")),
        "[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}T[0-9:.]{1,14}Z?",
        proptest::sample::select(ACTIONS).prop_map(str::to_string),
        proptest::sample::select(ids),
        proptest::sample::select(vec![
            "true",
            "false",
            "null",
            "all",
            "active",
            "unactivated",
            "disabled",
            "-1",
            "published_at.desc",
            "name.asc",
            "zvol",
            "smartos",
            "none",
            "gzip",
            "%FF",
            "%",
            "a&b=c",
            "~*",
            "1e999",
        ])
        .prop_map(str::to_string),
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(|s| Value::String(s.chars().take(30).collect())),
        "[a-z0-9-]{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &[
    "name",
    "version",
    "os",
    "type",
    "origin",
    "acl",
    "public",
    "tags",
    "requirements",
    "files",
    "uuid",
    "owner",
    "state",
    "published_at",
    "billing_tags",
    "traits",
    "users",
    "generate_passwords",
    "inherited_directories",
    "nic_driver",
    "disk_driver",
    "cpu_type",
    "image_size",
    "channels",
    "icon",
    "description",
    "homepage",
    "eula",
    "v",
    "disabled",
    "activated",
];

/// A body: a manifest of known fields with arbitrary values, an ACL, or
/// arbitrary JSON.
fn body(ids: Vec<String>) -> impl Strategy<Value = Value> {
    let field_value = prop_oneof![
        json_value(),
        value(ids.clone()).prop_map(Value::from),
        proptest::collection::vec(value(ids).prop_map(Value::from), 0..5).prop_map(Value::from),
    ];
    prop_oneof![
        proptest::collection::btree_map(
            proptest::sample::select(FIELDS),
            field_value.clone(),
            0..8
        )
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        proptest::collection::vec(field_value, 0..5).prop_map(Value::from),
        json_value(),
    ]
}

/// Answers seen, by status and code.
type Seen = std::sync::Mutex<std::collections::BTreeMap<String, u64>>;

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Value>,
    raw_body: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
}

/// Routes and the methods they take; a tenth of requests use any method.
const ROUTES: &[(&str, &[&str])] = &[
    ("/images", &["GET", "POST"]),
    ("/ping", &["GET"]),
    ("/state", &["GET", "POST"]),
    ("/images/{}", &["GET", "POST", "DELETE"]),
    ("/images/{}/file", &["GET", "PUT"]),
    ("/images/{}/acl", &["POST"]),
    ("/images/{}/clone", &["POST"]),
    ("/images/{}/lineage", &["GET"]),
    ("/images/{}/icon", &["GET", "PUT", "DELETE"]),
    ("/images/{}/jobs", &["GET"]),
    ("/images/{}/file/chunks", &["GET", "POST"]),
    ("/jobs/{}", &["GET"]),
    ("/accounts/{}/settings", &["GET", "PUT", "POST"]),
];

fn request(ids: Vec<String>) -> impl Strategy<Value = Req> {
    let id = prop_oneof![
        4 => proptest::sample::select(ids.clone()),
        1 => "[a-zA-Z0-9%._-]{0,40}",
    ];
    let route = (
        proptest::sample::select(ROUTES),
        id,
        any::<proptest::sample::Index>(),
        proptest::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
        0..10u8,
    )
        .prop_map(|((path, methods), id, pick, any_method, dice)| {
            let method = if dice == 0 {
                any_method
            } else {
                methods[pick.index(methods.len())]
            };
            (method, path.replace("{}", &id))
        });
    let header = prop_oneof![
        4 => (Just("range"), value(ids.clone()).prop_map(|v| format!("bytes={v}"))),
        4 => (
            Just("range"),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("bytes={a}-{b}"))
        ),
        2 => (Just("content-md5"), value(ids.clone())),
        1 => (Just("accept-version"), value(ids.clone())),
        2 => (Just("content-type"), value(ids.clone())),
    ];
    (
        route,
        proptest::collection::vec(
            (
                proptest::sample::select(KEYS).prop_map(str::to_string),
                value(ids.clone()),
            ),
            0..5,
        ),
        proptest::option::of(body(ids)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..2048)),
        proptest::collection::vec(header, 0..3),
    )
        .prop_map(|((method, path), query, body, raw_body, headers)| Req {
            method,
            path,
            query,
            body,
            raw_body,
            headers,
        })
}

fn send(d: &Daemon, r: &Req, seen: &Seen) -> Result<(), TestCaseError> {
    let method = reqwest::Method::from_bytes(r.method.as_bytes()).unwrap();
    let mut url = reqwest::Url::parse(&format!("{}{}", d.url, r.path))
        .map_err(|e| TestCaseError::reject(e.to_string()))?;
    if !r.query.is_empty() {
        url.query_pairs_mut().extend_pairs(&r.query);
    }
    let mut b = d.client.request(method, url);
    for (k, v) in &r.headers {
        if let Ok(v) = reqwest::header::HeaderValue::from_str(v) {
            b = b.header(*k, v);
        }
    }
    b = match (&r.body, &r.raw_body) {
        (Some(json), _) => b.json(json),
        (None, Some(raw)) => b.body(raw.clone()),
        (None, None) => b,
    };
    let resp = b
        .send()
        .map_err(|e| TestCaseError::fail(format!("{r:?}: no answer: {e}")))?;
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    let code = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|b| b["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    *seen
        .lock()
        .unwrap()
        .entry(format!("{status} {code}"))
        .or_default() += 1;
    prop_assert!(status != 500, "{r:?}: 500 {text}");
    if status >= 400 {
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{r:?}: {status} not JSON ({e}): {text}")))?;
        prop_assert!(
            body["code"].as_str().is_some_and(|c| !c.is_empty()),
            "{r:?}: {status} without a code: {text}"
        );
    }
    Ok(())
}

#[test]
fn any_request_gets_an_answer_with_a_code_and_never_a_500() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), |c| c.gc_interval = None);
    let private = d.image(ALICE, "private", json!({}), &bytes(50_000, 1), true);
    let public = d.image(
        BOB,
        "public",
        json!({"public": true}),
        &bytes(60_000, 2),
        true,
    );
    let child = d.image(
        ALICE,
        "child",
        json!({"origin": private}),
        &bytes(10_000, 3),
        true,
    );
    let unfinished = d.image(CAROL, "unfinished", json!({}), &[], false);
    let ids = vec![
        private,
        public,
        child,
        unfinished,
        ALICE.to_string(),
        BOB.to_string(),
        ADMIN.to_string(),
        "00000000-0000-0000-0000-000000000000".to_string(),
        "12345678-1234-4234-8234-123456789abc".to_string(),
    ];
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let seen = Seen::default();
    let result = runner.run(&request(ids), |r| send(&d, &r, &seen));
    if let Err(e) = result {
        panic!("{e}");
    }
    // The inputs reach past the router: successes and many distinct errors.
    let seen = seen.into_inner().unwrap();
    eprintln!("answers: {seen:?}");
    assert!(seen.keys().any(|k| k.starts_with("200")), "{seen:?}");
    assert!(seen.len() >= 10, "{seen:?}");
    // Still serving, and still consistent (checked again at stop).
    assert_eq!(d.get("/ping").status(), 200);
    assert!(d.state.api.store().verify(false).unwrap().is_clean());
}
