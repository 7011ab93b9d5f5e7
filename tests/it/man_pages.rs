//! `imgstore man`: a page for every command, each page it names there,
//! and the config file's reference.

use std::process::Command;

fn man(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .arg("man")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_command_has_a_page_and_every_page_named_exists() {
    let dir = tempfile::tempdir().unwrap();
    let o = man(&["--dir", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for want in [
        "imgstore.1",
        "imgstore-image.1",
        "imgstore-image-copy.1",
        "imgstore-profile-set-current.1",
        "imgstore-store-verify.1",
        "imgstore-config-reference.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} in {pages:?}");
    }
    // Every `imgstore-X(1)` a page names is a page there.
    for p in &pages {
        let text = std::fs::read_to_string(dir.path().join(p)).unwrap();
        for (i, _) in text.match_indices("(1)") {
            let start = text[..i]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '\\'))
                .map_or(0, |s| s + 1);
            let name = text[start..i].replace("\\-", "-");
            if name.starts_with("imgstore") {
                assert!(pages.contains(&format!("{name}.1")), "{p} names {name}(1)");
            }
        }
    }
    // The config file's reference is in imgstore(1) and in the page of
    // `config reference`.
    for p in ["imgstore.1", "imgstore-config-reference.1"] {
        let text = std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert!(
            text.contains(".SH CONFIGURATION") && text.contains("imgapiUrlFromDatacenter"),
            "{p}"
        );
    }
}

#[test]
fn one_command_page_is_printed_and_an_unknown_one_named() {
    let o = man(&["image", "copy"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(".TH imgstore-image-copy 1"), "{text}");
    assert!(text.contains("imgstore image copy"), "{text}");
    let o = man(&["image", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("\"nope\"") && e.contains("copy"), "{e}");
}
