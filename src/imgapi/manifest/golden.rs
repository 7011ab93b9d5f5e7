//! The manifest's exact bytes on the wire: GetImage's body is what a real
//! IMGAPI imports from us and what Etags hash, so a change of key, order or
//! presence is a change of the protocol.

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{Editor, Icon, Image, ImageFile, Manifest, ManifestField, Placeholder};
use crate::id::FileId;

fn file_id() -> FileId {
    "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn file(dataset_guid: Option<&str>) -> ImageFile {
    ImageFile {
        sha1: "a9993e364706816aba3e25717850c26c9cd0d89d".into(),
        size: 42,
        compression: "gzip".into(),
        dataset_guid: dataset_guid.map(str::to_string),
        content_md5: "kAFQmDzST7DWlj99KOF/cg==".into(),
        mtime_ms: 1_700_000_000_000,
        stor: "local".into(),
        file_id: file_id(),
    }
}

/// An image with every manifest field set, failed so that `error` shows.
pub(super) fn every_field() -> Image {
    Image {
        v: 2,
        uuid: Uuid::from_u128(0x1111),
        owner: Uuid::from_u128(0x2222),
        name: "base-64".into(),
        version: "1.2.3".into(),
        description: Some("a description".into()),
        homepage: Some("https://example.com/home".into()),
        eula: Some("https://example.com/eula".into()),
        icon: Some(Icon {
            sha1: "a9993e364706816aba3e25717850c26c9cd0d89d".into(),
            size: 3,
            content_md5: "kAFQmDzST7DWlj99KOF/cg==".into(),
            content_type: "image/png".into(),
            mtime_ms: 1_700_000_000_000,
            file_id: file_id(),
        }),
        activated: true,
        placeholder_state: Some(Placeholder::Failed),
        error: Some(json!({"message": "boom", "code": "Oops"})),
        disabled: true,
        public: true,
        published_at: Some("2013-01-08T20:21:17.932Z".into()),
        type_: "zvol".into(),
        os: "linux".into(),
        origin: Some(Uuid::from_u128(0x3333)),
        files: vec![file(Some("guid-1")), file(None)],
        acl: vec![Uuid::from_u128(0x4444), Uuid::from_u128(0x5555)],
        requirements: Some(
            json!({"min_ram": 512, "brand": "bhyve", "networks": [{"name": "net0", "description": "public"}]}),
        ),
        users: Some(json!([{"name": "root"}, {"name": "admin"}])),
        billing_tags: Some(vec!["tag-a".into(), "tag-b".into()]),
        traits: Some(json!({"ssd": true, "zone": "a"})),
        tags: Some(obj(json!({"role": "db", "n": 3, "nested": {"x": [1, 2]}}))),
        generate_passwords: Some(true),
        inherited_directories: Some(vec!["/opt".into(), "/usr/local".into()]),
        nic_driver: Some("virtio".into()),
        disk_driver: Some("virtio".into()),
        cpu_type: Some("host".into()),
        image_size: Some(10240),
        urn: Some("sdc:sdc:base-64:1.2.3".into()),
        provenance: None,
    }
}

/// The fewest fields an image has.
pub(super) fn minimum() -> Image {
    let m = obj(json!({
        "owner": "930896af-bf8c-48d4-885c-6573a94b1853",
        "name": "base-64",
        "version": "1.0.0",
        "type": "zone-dataset",
        "os": "smartos"
    }));
    Image::from_map(Uuid::from_u128(0x1111), &m).unwrap_or_else(|e| panic!("{e}"))
}

fn wire(img: &Image, admin: bool) -> String {
    serde_json::to_string_pretty(&img.manifest(admin)).unwrap_or_else(|e| panic!("{e}"))
}

const EVERY_ADMIN: &str = r#"{
  "v": 2,
  "uuid": "00000000-0000-0000-0000-000000001111",
  "owner": "00000000-0000-0000-0000-000000002222",
  "name": "base-64",
  "version": "1.2.3",
  "description": "a description",
  "homepage": "https://example.com/home",
  "eula": "https://example.com/eula",
  "icon": true,
  "state": "failed",
  "error": {
    "message": "boom",
    "code": "Oops"
  },
  "disabled": true,
  "public": true,
  "published_at": "2013-01-08T20:21:17.932Z",
  "type": "zvol",
  "os": "linux",
  "origin": "00000000-0000-0000-0000-000000003333",
  "files": [
    {
      "sha1": "a9993e364706816aba3e25717850c26c9cd0d89d",
      "size": 42,
      "compression": "gzip",
      "dataset_guid": "guid-1",
      "stor": "local"
    },
    {
      "sha1": "a9993e364706816aba3e25717850c26c9cd0d89d",
      "size": 42,
      "compression": "gzip",
      "stor": "local"
    }
  ],
  "acl": [
    "00000000-0000-0000-0000-000000004444",
    "00000000-0000-0000-0000-000000005555"
  ],
  "requirements": {
    "min_ram": 512,
    "brand": "bhyve",
    "networks": [
      {
        "name": "net0",
        "description": "public"
      }
    ]
  },
  "users": [
    {
      "name": "root"
    },
    {
      "name": "admin"
    }
  ],
  "billing_tags": [
    "tag-a",
    "tag-b"
  ],
  "traits": {
    "ssd": true,
    "zone": "a"
  },
  "tags": {
    "role": "db",
    "n": 3,
    "nested": {
      "x": [
        1,
        2
      ]
    }
  },
  "generate_passwords": true,
  "inherited_directories": [
    "/opt",
    "/usr/local"
  ],
  "nic_driver": "virtio",
  "disk_driver": "virtio",
  "cpu_type": "host",
  "image_size": 10240,
  "urn": "sdc:sdc:base-64:1.2.3"
}"#;

const EVERY_PLAIN: &str = r#"{
  "v": 2,
  "uuid": "00000000-0000-0000-0000-000000001111",
  "owner": "00000000-0000-0000-0000-000000002222",
  "name": "base-64",
  "version": "1.2.3",
  "description": "a description",
  "homepage": "https://example.com/home",
  "eula": "https://example.com/eula",
  "icon": true,
  "state": "failed",
  "error": {
    "message": "boom",
    "code": "Oops"
  },
  "disabled": true,
  "public": true,
  "published_at": "2013-01-08T20:21:17.932Z",
  "type": "zvol",
  "os": "linux",
  "origin": "00000000-0000-0000-0000-000000003333",
  "files": [
    {
      "sha1": "a9993e364706816aba3e25717850c26c9cd0d89d",
      "size": 42,
      "compression": "gzip",
      "dataset_guid": "guid-1"
    },
    {
      "sha1": "a9993e364706816aba3e25717850c26c9cd0d89d",
      "size": 42,
      "compression": "gzip"
    }
  ],
  "acl": [
    "00000000-0000-0000-0000-000000004444",
    "00000000-0000-0000-0000-000000005555"
  ],
  "requirements": {
    "min_ram": 512,
    "brand": "bhyve",
    "networks": [
      {
        "name": "net0",
        "description": "public"
      }
    ]
  },
  "users": [
    {
      "name": "root"
    },
    {
      "name": "admin"
    }
  ],
  "billing_tags": [
    "tag-a",
    "tag-b"
  ],
  "traits": {
    "ssd": true,
    "zone": "a"
  },
  "tags": {
    "role": "db",
    "n": 3,
    "nested": {
      "x": [
        1,
        2
      ]
    }
  },
  "generate_passwords": true,
  "inherited_directories": [
    "/opt",
    "/usr/local"
  ],
  "nic_driver": "virtio",
  "disk_driver": "virtio",
  "cpu_type": "host",
  "image_size": 10240,
  "urn": "sdc:sdc:base-64:1.2.3"
}"#;

const MIN: &str = r#"{
  "v": 2,
  "uuid": "00000000-0000-0000-0000-000000001111",
  "owner": "930896af-bf8c-48d4-885c-6573a94b1853",
  "name": "base-64",
  "version": "1.0.0",
  "state": "unactivated",
  "disabled": false,
  "public": false,
  "type": "zone-dataset",
  "os": "smartos",
  "files": []
}"#;

#[test]
fn every_field_serialises_to_the_pinned_wire_bytes() {
    assert_eq!(wire(&every_field(), true), EVERY_ADMIN);
    assert_eq!(wire(&every_field(), false), EVERY_PLAIN);
}

#[test]
fn a_minimal_image_serialises_to_the_pinned_wire_bytes() {
    assert_eq!(wire(&minimum(), false), MIN);
}

#[test]
fn wire_json_reads_into_a_manifest_and_back_unchanged() {
    for text in [EVERY_ADMIN, EVERY_PLAIN, MIN] {
        let m: Manifest = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let back = serde_json::to_string_pretty(&m).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, text);
    }
}

#[test]
fn the_field_table_lists_every_wire_key_in_output_order() {
    let keys: Vec<String> = every_field()
        .manifest(true)
        .to_map()
        .keys()
        .cloned()
        .collect();
    let names: Vec<&str> = ManifestField::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(keys, names);
}

#[test]
fn only_operators_change_ownership_state_and_files() {
    let by = |e: Editor| -> Vec<&str> {
        ManifestField::ALL
            .iter()
            .filter(|f| f.editor() == e)
            .map(|f| f.name())
            .collect()
    };
    assert_eq!(
        by(Editor::Operator),
        [
            "uuid",
            "owner",
            "state",
            "error",
            "origin",
            "files",
            "billing_tags",
            "traits"
        ]
    );
    assert_eq!(
        by(Editor::Nobody),
        ["v", "icon", "disabled", "published_at", "type", "urn"]
    );
    assert!(by(Editor::Owner).contains(&"acl"));
}

#[test]
fn an_error_shows_only_on_a_failed_image() {
    let mut img = every_field();
    img.placeholder_state = None;
    assert!(img.manifest(false).error.is_none());
}

#[test]
fn a_stored_file_keeps_its_file_id_as_lower_case_hex() {
    let stored = serde_json::to_value(file(None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stored["file_id"],
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    );
    let back: ImageFile = serde_json::from_value(stored).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, file(None));
}

#[test]
fn an_upstream_manifest_with_channels_reads_and_shows_them() {
    let text = MIN.replacen(
        "\"files\": []",
        "\"files\": [],\n  \"channels\": [\n    \"dev\"\n  ]",
        1,
    );
    let m: Manifest = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.channels, Some(vec!["dev".to_string()]));
    let back = serde_json::to_string_pretty(&m).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, text);
}
