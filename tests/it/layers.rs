//! The layer order of DESIGN.md: each module of `src/` may use only the
//! modules listed before it.

const ORDER: &[&str] = &[
    "id", "error", "chunker", "format", "segment", "index", "store",
];

#[test]
fn no_module_imports_from_a_later_layer() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (rank, module) in ORDER.iter().enumerate() {
        let mut files = Vec::new();
        let file = src.join(format!("{module}.rs"));
        if file.exists() {
            files.push(file);
        }
        let dir = src.join(module);
        if dir.is_dir() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        assert!(!files.is_empty(), "module {module} has no source");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                for (later_rank, later) in ORDER.iter().enumerate() {
                    if later_rank > rank && line.contains(&format!("crate::{later}")) {
                        violations.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn only_the_index_imports_rocksdb_and_only_the_http_side_speaks_http() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            if !p.starts_with(src.join("index")) {
                assert!(
                    !text.contains("use rocksdb"),
                    "{} imports rocksdb",
                    p.display()
                );
            }
            // Only the HTTP layer, the daemon and the CLI speak HTTP.
            let http_side = p.starts_with(src.join("http"))
                || p.starts_with(src.join("cli"))
                || p.ends_with("daemon.rs");
            if !http_side {
                assert!(!text.contains("axum"), "{} uses axum", p.display());
                assert!(!text.contains("reqwest"), "{} uses reqwest", p.display());
            }
        }
    }
}
