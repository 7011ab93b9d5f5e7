//! `imgstore config reference`: the configuration reference as Markdown,
//! made from the raw config types' doc comments (their JSON schema), so
//! that the reference and the keys the daemon reads cannot drift apart.

use serde_json::{Map, Value};

use super::config::ConfigFile;

/// Every key of the config file, with its type, default and meaning (the
/// defaults are said in the meanings), as Markdown.
pub fn reference() -> String {
    let schema = schemars::schema_for!(ConfigFile);
    let root = schema.as_value();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = String::from(
        "# imgstore configuration reference\n\n\
         `imgstore serve --config FILE` reads one JSON object. Every key is \
         optional: without a file the daemon serves `./imgstore-data` on \
         127.0.0.1:8080 as datacenter `local`. Unknown keys are refused, so \
         a misspelt key stops the start instead of being ignored.\n",
    );
    let mut sections: Vec<(String, Value)> = vec![(String::new(), root.clone())];
    let mut done = std::collections::BTreeSet::new();
    while !sections.is_empty() {
        let (path, schema) = sections.remove(0);
        let title = if path.is_empty() {
            "Top-level keys".to_string()
        } else {
            format!("`{path}`")
        };
        out.push_str(&format!("\n## {title}\n\n"));
        if let Some(d) = schema.get("description").and_then(Value::as_str) {
            out.push_str(&format!("{}\n\n", one_line(d)));
        }
        out.push_str("| key | type | meaning |\n| --- | --- | --- |\n");
        let props = schema
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (key, p) in &props {
            let full = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let (kind, nested) = type_of(p, &defs);
            out.push_str(&format!(
                "| `{full}` | {kind} | {} |\n",
                one_line(p.get("description").and_then(Value::as_str).unwrap_or(""))
            ));
            // A definition used at several places (`tls`, `cloudapi.tls`)
            // gets a section at each.
            if let Some((_, def)) = nested
                && def.get("properties").is_some()
                && done.insert(full.clone())
            {
                let suffix = if kind.starts_with("array") { "[]" } else { "" };
                sections.push((format!("{full}{suffix}"), def));
            }
        }
    }
    out
}

/// A description on one line of a table cell.
fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A property's type in words, and the definition of the object it
/// holds (for a section of its own).
fn type_of(p: &Value, defs: &Map<String, Value>) -> (String, Option<(String, Value)>) {
    if let Some(name) = ref_name(p) {
        let def = defs.get(&name).cloned().unwrap_or(Value::Null);
        if let Some(values) = enum_values(&def) {
            return (format!("one of {values}"), None);
        }
        // An untagged enum: each of its forms.
        if let Some(forms) = def.get("anyOf").and_then(Value::as_array) {
            let words: Vec<String> = forms.iter().map(|f| type_of(f, defs).0).collect();
            return (words.join(" or "), None);
        }
        return ("object".into(), Some((name, def)));
    }
    if let Some(any) = p.get("anyOf").and_then(Value::as_array) {
        // `Option<T>` of a defined type: T or null.
        if let Some(inner) = any.iter().find(|v| ref_name(v).is_some()) {
            return type_of(inner, defs);
        }
    }
    if let Some(values) = enum_values(p) {
        return (format!("one of {values}"), None);
    }
    let kinds: Vec<&str> = match p.get("type") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|k| *k != "null")
            .collect(),
        _ => Vec::new(),
    };
    match kinds.first().copied() {
        Some("array") => {
            let items = p.get("items").cloned().unwrap_or(Value::Null);
            let (inner, nested) = type_of(&items, defs);
            (format!("array of {inner}"), nested)
        }
        Some("object") => match p.get("additionalProperties") {
            Some(v) if v.is_object() => (format!("object of {}", type_of(v, defs).0), None),
            _ => ("object".into(), None),
        },
        Some("string") if p.get("format").and_then(Value::as_str) == Some("uuid") => {
            ("uuid".into(), None)
        }
        Some(k) => (k.to_string(), None),
        None => ("any".into(), None),
    }
}

fn ref_name(p: &Value) -> Option<String> {
    p.get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
        .map(str::to_string)
}

/// `a`, `b` for an enum of strings.
fn enum_values(p: &Value) -> Option<String> {
    let values: Vec<String> = p
        .get("enum")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .map(|v| format!("`{v}`"))
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_words_a_type_and_a_row() {
        let text = reference();
        for key in [
            "mode",
            "datacenterName",
            "adminUuid",
            "imgapiUrlFromDatacenter",
            "listen",
            "dataDir",
            "accounts",
            "gcIntervalSeconds",
            "reserveBytes",
            "segmentBytes",
            "recompressLevel",
            "recompressAfterSeconds",
            "limits.maxConnections",
            "limits.shutdownSeconds",
            "transfer.batchBytes",
            "transfer.verifyMd5",
            "cloudapi.listen",
            "cloudapi.users[].keysFile",
            "storage.type",
            "storage.durability",
            "storage.retries",
            "authType",
            "authKeys",
            "authKeysDir",
            "tls.certFile",
            "cloudapi.tls.keyFile",
            "signingKey.keyFile",
        ] {
            assert!(text.contains(&format!("| `{key}` |")), "{key}:\n{text}");
        }
        // A row without a meaning is a key without a doc comment.
        for line in text.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split(" | ").collect();
            assert!(
                cells.len() == 3 && cells[2].trim_end_matches(" |").len() > 10,
                "a key without words: {line}"
            );
            assert_ne!(cells[1], "any", "a key without a type: {line}");
        }
        assert!(text.contains("one of `dc`, `public`, `private`"), "{text}");
    }
}
