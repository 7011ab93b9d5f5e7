//! Older manifests brought to v2 before an import, as upstream's
//! `imgmanifest.upgradeManifest` does: a DSAPI-era (v1) manifest has no
//! `v` and names its owner `creator_uuid`.
//!
//! v1 -> v2: `creator_uuid` becomes `owner`; `restricted_to_uuid` becomes
//! a private image shared with that account (`public: false`, `acl`),
//! otherwise the image is public; `disabled` defaults to false and `state`
//! follows it; `published_at` falls back to `created_at`, and a time
//! without seconds gets `:00`; each file's `compression` comes from its
//! `path` or `url` extension (`.gz`, `.bz2`) when missing, and `path` and
//! `url` go; `image_size` becomes a number; the v1-only fields
//! (`vendor_uuid`, `creator_name`, `cloud_name`, `creator_admin`,
//! `owner_uuid`, `platform_type`, `created_at`, `updated_at`, `_url`) go.

use serde_json::{Map, Value};

use crate::imgapi::{ApiError, ApiResult};

/// True for a v1 manifest: no `v`, and a `creator_uuid`.
pub fn is_v1(m: &Map<String, Value>) -> bool {
    m.get("v").is_none_or(Value::is_null) && m.contains_key("creator_uuid")
}

/// Upgrades `m` in place when it is a v1 manifest; leaves others alone.
pub fn upgrade(m: &mut Map<String, Value>) -> ApiResult<()> {
    if !is_v1(m) {
        return Ok(());
    }
    if m.contains_key("owner") {
        return Err(ApiError::invalid_param(
            "owner",
            "a v1 manifest names its owner in creator_uuid; it cannot also have owner",
        ));
    }
    if let Some(creator) = m.remove("creator_uuid") {
        m.insert("owner".into(), creator);
    }
    match m.remove("restricted_to_uuid").filter(|v| !v.is_null()) {
        Some(account) => {
            if m.contains_key("public") {
                return Err(ApiError::invalid_param(
                    "public",
                    "a v1 manifest with restricted_to_uuid cannot also say public",
                ));
            }
            m.insert("public".into(), Value::Bool(false));
            m.insert("acl".into(), Value::Array(vec![account]));
        }
        None => {
            m.insert("public".into(), Value::Bool(true));
        }
    }
    let disabled = match m.get("disabled") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        Some(_) => true,
    };
    m.insert("disabled".into(), Value::Bool(disabled));
    m.insert(
        "state".into(),
        Value::from(if disabled { "disabled" } else { "active" }),
    );
    if !m.contains_key("published_at")
        && let Some(created) = m.get("created_at").cloned()
    {
        m.insert("published_at".into(), created);
    }
    if let Some(Value::String(p)) = m.get_mut("published_at") {
        // YYYY-MM-DDTHH:MMZ -> YYYY-MM-DDTHH:MM:00Z
        if p.len() == 17 && p.ends_with('Z') && p.as_bytes().get(10) == Some(&b'T') {
            p.truncate(16);
            p.push_str(":00Z");
        }
    }
    if let Some(Value::Array(files)) = m.get_mut("files") {
        for f in files.iter_mut().filter_map(Value::as_object_mut) {
            if !f.contains_key("compression") {
                let from = f
                    .get("path")
                    .or_else(|| f.get("url"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let c = if from.ends_with(".gz") {
                    "gzip"
                } else if from.ends_with(".bz2") {
                    "bzip2"
                } else {
                    "none"
                };
                f.insert("compression".into(), Value::from(c));
            }
            f.remove("path");
            f.remove("url");
        }
    }
    if let Some(size) = m.get("image_size").cloned()
        && let Some(n) = size
            .as_u64()
            .or_else(|| size.as_str().and_then(|s| s.parse().ok()))
    {
        m.insert("image_size".into(), Value::from(n));
    }
    for k in [
        "vendor_uuid",
        "creator_name",
        "cloud_name",
        "creator_admin",
        "owner_uuid",
        "platform_type",
        "created_at",
        "updated_at",
        "_url",
    ] {
        m.remove(k);
    }
    m.insert("v".into(), Value::from(2));
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_dsapi_manifest_becomes_v2() {
        let mut m = json!({
            "uuid": "febaa412-6417-11e0-bc56-535d219f2590",
            "name": "smartos", "version": "1.3.12", "os": "smartos", "type": "zone-dataset",
            "urn": "sdc:sdc:smartos:1.3.12",
            "creator_uuid": "352971aa-31ba-496c-9ade-a379feaecd52",
            "vendor_uuid": "352971aa-31ba-496c-9ade-a379feaecd52",
            "creator_name": "sdc", "platform_type": "smartos", "cloud_name": "sdc",
            "created_at": "2011-04-11T08:45Z", "updated_at": "2011-04-11T08:45Z",
            "image_size": "5120",
            "files": [{"path": "smartos-1.3.12.zfs.bz2", "sha1": "246a", "size": 47315,
                       "url": "https://datasets.joyent.com/datasets/febaa412/smartos-1.3.12.zfs.bz2"}]
        });
        let o = m.as_object_mut().unwrap();
        super::upgrade(o).unwrap();
        assert_eq!(o["v"], 2);
        assert_eq!(o["owner"], "352971aa-31ba-496c-9ade-a379feaecd52");
        assert_eq!(o["public"], true);
        assert_eq!(o["state"], "active");
        assert_eq!(o["disabled"], false);
        assert_eq!(o["published_at"], "2011-04-11T08:45:00Z");
        assert_eq!(o["image_size"], 5120);
        assert_eq!(
            o["files"],
            json!([{"sha1": "246a", "size": 47315, "compression": "bzip2"}])
        );
        for gone in [
            "creator_uuid",
            "vendor_uuid",
            "creator_name",
            "platform_type",
            "cloud_name",
            "created_at",
            "updated_at",
        ] {
            assert!(!o.contains_key(gone), "{gone}");
        }
        assert_eq!(o["urn"], "sdc:sdc:smartos:1.3.12");
    }

    #[test]
    fn restricted_means_shared_and_v2_is_left_alone() {
        let mut m = json!({"uuid": "febaa412-6417-11e0-bc56-535d219f2590",
            "creator_uuid": "352971aa-31ba-496c-9ade-a379feaecd52",
            "restricted_to_uuid": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "disabled": true});
        let o = m.as_object_mut().unwrap();
        super::upgrade(o).unwrap();
        assert_eq!(o["public"], false);
        assert_eq!(o["acl"], json!(["aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"]));
        assert_eq!(o["state"], "disabled");
        let v2 = json!({"v": 2, "owner": "352971aa-31ba-496c-9ade-a379feaecd52", "name": "x"});
        let mut same = v2.clone();
        super::upgrade(same.as_object_mut().unwrap()).unwrap();
        assert_eq!(same, v2);
        let mut both = json!({"creator_uuid": "352971aa-31ba-496c-9ade-a379feaecd52",
            "owner": "352971aa-31ba-496c-9ade-a379feaecd52"});
        assert!(super::upgrade(both.as_object_mut().unwrap()).is_err());
    }
}
