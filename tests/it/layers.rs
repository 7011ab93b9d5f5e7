//! The layer order of DESIGN.md and the crate docs: each module of `src/`
//! may use only the modules listed before it, the engine keeps its door
//! closed, and codes and states are spelled only by their enums.

use std::path::{Path, PathBuf};

/// Every layer, bottom up; `cli` is the binary's.
const ORDER: &[&str] = &[
    "id", "error", "chunker", "format", "segment", "index", "store", "transfer", "imgapi",
    "service", "http", "cloudapi", "daemon", "cli",
];

/// The engine: only these may name the raw index or segment files.
const ENGINE: &[&str] = &["segment", "index", "store"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file of a layer (`src/NAME.rs` and everything under `src/NAME/`).
fn files_of(module: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let file = src().join(format!("{module}.rs"));
    if file.exists() {
        files.push(file);
    }
    let mut stack = vec![src().join(module)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files
}

/// (file, line number, line) of every source line of a layer, comments
/// included (a doc link to a later layer is a dependency too).
fn lines_of(module: &str) -> Vec<(PathBuf, usize, String)> {
    let files = files_of(module);
    assert!(!files.is_empty(), "module {module} has no source");
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            out.push((f.clone(), n + 1, line.to_string()));
        }
    }
    out
}

#[test]
fn no_module_imports_from_a_later_layer() {
    let mut violations = Vec::new();
    for (rank, module) in ORDER.iter().enumerate() {
        // The binary reaches the library as `imgstore::`.
        let prefix = if *module == "cli" {
            "imgstore::"
        } else {
            "crate::"
        };
        for (f, n, line) in lines_of(module) {
            for later in ORDER.iter().skip(rank + 1) {
                if line.contains(&format!("{prefix}{later}::"))
                    || line.contains(&format!("{prefix}{later};"))
                {
                    violations.push(format!("{}:{n}: {}", f.display(), line.trim()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn the_engine_door_is_closed() {
    let mut violations = Vec::new();
    for module in ORDER.iter().filter(|m| !ENGINE.contains(m)) {
        let prefix = if *module == "cli" {
            "imgstore::"
        } else {
            "crate::"
        };
        for (f, n, line) in lines_of(module) {
            let raw = [
                format!("{prefix}index"),
                format!("{prefix}segment"),
                ".index()".to_string(),
            ];
            if raw.iter().any(|r| line.contains(r.as_str())) {
                violations.push(format!("{}:{n}: {}", f.display(), line.trim()));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn only_the_index_imports_rocksdb_and_only_the_http_side_speaks_http() {
    let http_side = ["http", "cloudapi", "daemon", "cli"];
    for module in ORDER {
        for (f, n, line) in lines_of(module) {
            if *module != "index" {
                assert!(
                    !line.contains("rocksdb::"),
                    "{}:{n} uses rocksdb",
                    f.display()
                );
            }
            if !http_side.contains(module) {
                for word in ["axum", "reqwest", "hyper"] {
                    assert!(!line.contains(word), "{}:{n} uses {word}", f.display());
                }
            }
        }
    }
}

/// Every error code, image state, job execution, provenance kind and mode
/// is compared, matched and constructed only through its enum: no
/// `== "active"`, `"ValidationFailed" =>` or `ApiError::new("Download"`
/// outside the files that define the enums. (A manifest field that shares
/// a state's name, such as `disabled`, is not a state.)
#[test]
fn codes_and_states_are_spelled_only_by_their_enums() {
    let mut words: Vec<String> = imgstore::imgapi::Code::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    // `disabled` is also a manifest field, spelled as such.
    words.extend(
        imgstore::imgapi::ImageState::ALL
            .iter()
            .filter(|s| **s != imgstore::imgapi::ImageState::Disabled)
            .map(|s| s.as_str().to_string()),
    );
    words.extend(
        [
            "queued",
            "running",
            "succeeded",
            "canceled",
            "clone",
            "copy",
            "dc",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    // Where the enums are defined (and their string tables live).
    let defining = [
        "imgapi/error.rs",
        "imgapi/manifest/mod.rs",
        "imgapi/jobs.rs",
        "imgapi/mod.rs",
        // CloudAPI's action names: `clone` is one, and a provenance kind too.
        "cloudapi/action.rs",
    ];
    let mut violations = Vec::new();
    for module in ORDER {
        for (f, n, line) in lines_of(module) {
            let rel = f.strip_prefix(src()).unwrap().to_string_lossy().to_string();
            if defining.contains(&rel.as_str()) || line.trim_start().starts_with("//") {
                continue;
            }
            for w in &words {
                let lit = format!("\"{w}\"");
                let compared = [
                    format!("== {lit}"),
                    format!("!= {lit}"),
                    format!("{lit} =>"),
                    format!("{lit} |"),
                    format!("| {lit}"),
                    format!("Some({lit})"),
                    format!("new({lit}"),
                    format!("({lit}.into()"),
                ];
                if compared.iter().any(|c| line.contains(c.as_str())) {
                    violations.push(format!("{rel}:{n}: {}", line.trim()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}
