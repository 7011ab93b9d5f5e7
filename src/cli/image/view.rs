//! How images look on a terminal: node-triton's columns and FLAGS, tables
//! with aligned columns, JSON lines.

use anyhow::{Result, anyhow};
use imgstore::http::client::Client;
use imgstore::imgapi::ImageState;
use imgstore::imgapi::lineage::{Lineage, LineageImage};
use imgstore::imgapi::manifest::Manifest;
use serde_json::{Map, Value};

use super::describe;

fn short(uuid: &str) -> &str {
    uuid.split('-').next().unwrap_or(uuid)
}

/// node-triton's FLAGS, in its order: I origin, P public, X not active,
/// + you share it, S shared with you.
pub(super) fn flags(img: &Manifest, account: Option<&str>) -> String {
    let mut f = String::new();
    if img.origin.is_some() {
        f.push('I');
    }
    if img.public {
        f.push('P');
    }
    if img.state != ImageState::Active {
        f.push('X');
    }
    if let Some(a) = account {
        if img.owner.to_string() == a && !img.acl.is_empty() {
            f.push('+');
        }
        if img.acl.iter().any(|u| u.to_string() == a) {
            f.push('S');
        }
    }
    f
}

/// A listed image, and its fields by name for `-o` and `-s` of any
/// manifest field.
struct Row {
    img: Manifest,
    fields: Map<String, Value>,
}

impl Row {
    fn of(img: Manifest) -> Self {
        let fields = img.to_map();
        Row { img, fields }
    }

    fn field(&self, k: &str) -> Option<&Value> {
        self.fields.get(k)
    }
}

fn column(row: &Row, col: &str, account: Option<&str>) -> String {
    let img = &row.img;
    match col {
        "shortid" => short(&img.uuid.to_string()).to_string(),
        "id" | "uuid" => img.uuid.to_string(),
        "flags" => flags(img, account),
        "pubdate" => img
            .published_at
            .as_deref()
            .map(|p| p.get(..10).unwrap_or(p).to_string())
            .unwrap_or_else(|| "-".into()),
        "pub" => img
            .published_at
            .as_deref()
            .map(|p| format!("{}Z", p.get(..19).unwrap_or(p)))
            .unwrap_or_else(|| "-".into()),
        "size" => img
            .file()
            .map(|f| f.size.to_string())
            .unwrap_or_else(|| "-".into()),
        other => match row.field(other) {
            Some(Value::String(v)) => v.clone(),
            None | Some(Value::Null) => "-".into(),
            Some(v) => v.to_string(),
        },
    }
}

fn print_table(rows: &[Row], cols: &[&str], header: bool, account: Option<&str>) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| column(r, c, account)).collect())
        .collect();
    let mut widths: Vec<usize> = cols.iter().map(|c| c.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |vals: Vec<String>| {
        let mut s = String::new();
        for (i, (v, w)) in vals.iter().zip(&widths).enumerate() {
            if i + 1 == vals.len() {
                s.push_str(v);
            } else {
                s.push_str(&format!("{v:<w$}  ", w = *w));
            }
        }
        say!("{}", s.trim_end());
    };
    if header {
        line(cols.iter().map(|c| c.to_uppercase()).collect());
    }
    for row in cells {
        line(row);
    }
}

/// How `imgstore image list` shows what it finds.
pub(super) struct Listing<'a> {
    pub long: bool,
    pub output: Option<&'a str>,
    pub header: bool,
    pub json: bool,
    pub all: bool,
    /// Fields to sort by, comma-separated; `-field` descending.
    pub sort: &'a str,
}

/// Orders images by `fields` (`-field`: descending): numbers as numbers,
/// the rest as their column text (an absent field is `-`, first).
fn sort_images(list: &mut [Row], fields: &str) {
    let keys: Vec<(&str, bool)> = fields
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| match f.strip_prefix('-') {
            Some(name) => (name, true),
            None => (f, false),
        })
        .collect();
    list.sort_by(|a, b| {
        for (k, desc) in &keys {
            let o = match (a.field(k), b.field(k)) {
                (Some(Value::Number(x)), Some(Value::Number(y))) => x
                    .as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&y.as_f64().unwrap_or(0.0)),
                _ => column(a, k, None).cmp(&column(b, k, None)),
            };
            let o = if *desc { o.reverse() } else { o };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
}

/// `imgstore image list`.
pub(super) fn list(c: &Client, how: &Listing<'_>, filters: &[String]) -> Result<()> {
    let Listing {
        long,
        output,
        header,
        json,
        all,
        sort,
    } = *how;
    let mut q: Vec<(&str, &str)> = filters
        .iter()
        .map(|f| {
            f.split_once('=')
                .ok_or_else(|| anyhow!("error: filter {f:?} is not KEY=VALUE"))
        })
        .collect::<Result<_>>()?;
    if all {
        q.push(("state", "all"));
    }
    let mut list: Vec<Row> = c
        .list_all_images(&q)
        .map_err(describe)?
        .into_iter()
        .map(Row::of)
        .collect();
    sort_images(&mut list, sort);
    if json {
        for r in &list {
            say!("{}", serde_json::to_string(&r.img)?);
        }
        return Ok(());
    }
    let cols: Vec<&str> = match output {
        Some(o) => o.split(',').collect(),
        None if long => vec![
            "id", "name", "version", "state", "flags", "os", "type", "pubdate",
        ],
        None => vec![
            "shortid", "name", "version", "flags", "os", "type", "pubdate",
        ],
    };
    print_table(&list, &cols, header, c.account());
    Ok(())
}

/// An image's lineage for people: where it comes from (base first), what
/// derives from it, where it was cloned or copied from, what it costs.
pub(super) fn lineage(l: &Lineage) -> String {
    let brief = |i: &LineageImage| -> String {
        if i.hidden {
            return "(an image you cannot see)".into();
        }
        let uuid = i.uuid.map_or_else(|| "?".to_string(), |u| u.to_string());
        if i.missing {
            return format!("{uuid} (missing)");
        }
        format!(
            "{} {}@{} ({})",
            short(&uuid),
            i.name.as_deref().unwrap_or("?"),
            i.version.as_deref().unwrap_or("?"),
            i.state.map_or("?", ImageState::as_str)
        )
    };
    let mut out = format!("image {}\n", l.uuid);
    if l.origin_chain.is_empty() {
        out.push_str("origin chain: none (a base image)\n");
    } else {
        out.push_str("origin chain, base first:\n");
        for (depth, o) in l.origin_chain.iter().enumerate() {
            out.push_str(&format!("  {}{}\n", "  ".repeat(depth), brief(o)));
        }
    }
    if l.derived.is_empty() {
        out.push_str("derived: none you can see\n");
    } else {
        out.push_str("derived:\n");
        for d in &l.derived {
            out.push_str(&format!(
                "  {} {}{}\n",
                d.relation.as_str(),
                brief(&d.image),
                d.from
                    .map(|f| format!(" from {}", short(&f.to_string())))
                    .unwrap_or_default()
            ));
        }
    }
    if let Some(src) = &l.source {
        out.push_str(&format!(
            "{} from {} in datacenter {} at {}\n",
            src.how.as_str(),
            src.uuid,
            src.datacenter,
            src.at
        ));
    }
    let u = &l.usage;
    out.push_str(&format!(
        "usage: {} logical, {} stored ({} its own, {} shared), {} reference(s)",
        indicatif::HumanBytes(u.logical_bytes),
        indicatif::HumanBytes(u.stored_bytes),
        indicatif::HumanBytes(u.unique_bytes),
        indicatif::HumanBytes(u.shared_bytes),
        u.file_references.unwrap_or(0)
    ));
    out
}
