//! How dense the store could be: the unique chunks of one file (cut by the
//! store's chunker, deduplicated by id as the store does) compressed by
//! each scheme the store could write when it recompresses a cold segment,
//! with the bytes it would store, the time to compress, and the speed of
//! reading the file back in one thread. The table issue 26 asks for.
//!
//!     IMGSTORE_BENCH_DATA=/tmp/peerdata/data/v1.tar \
//!       cargo bench --profile dev --bench density
//!
//! Schemes (all zstd, one thread, `IMGSTORE_DENSITY_LEVEL` default 14, the
//! store's recompression level):
//! - **chunk**: one frame per chunk, what the store writes today;
//! - **dict K**: one frame per chunk against a dictionary of K KiB trained
//!   on a sample of the chunks (kept once per store: its bytes count);
//! - **group M**: adjacent chunks of the file in one frame of about M KiB
//!   (a read of one chunk decompresses its frame up to that chunk);
//! - **group M + dict K**: both.
//!
//! Stored bytes count each frame's 56-byte record header and, for a group,
//! 36 bytes per member (its id and length). `fixed 2048 @3` is borg's
//! shape (about 2 MiB chunks at zstd 3), for scale beside a real borg run;
//! `whole file @3` is the file as one frame, what one thread of `zstd -d`
//! decodes: its read speed is the baseline a store's reads are held to.

use std::time::Instant;

use imgstore::ChunkerParams;

mod common;

struct Scheme {
    name: String,
    level: i32,
    /// Raw bytes per frame (0: one chunk per frame).
    group: usize,
    /// Dictionary size (0: none).
    dict: usize,
}

struct Row {
    stored: u64,
    frames: u64,
    train_s: f64,
    compress_s: f64,
    read_mbs: f64,
    /// Raw bytes a read of one chunk decompresses, on average.
    per_chunk_read: f64,
}

fn frames_of<'a>(chunks: &[&'a [u8]], group: usize) -> Vec<Vec<&'a [u8]>> {
    let mut out: Vec<Vec<&[u8]>> = Vec::new();
    let mut cur: Vec<&[u8]> = Vec::new();
    let mut bytes = 0;
    for c in chunks {
        cur.push(c);
        bytes += c.len();
        if bytes >= group {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn run(s: &Scheme, chunks: &[&[u8]]) -> Row {
    let t = Instant::now();
    let dict = if s.dict > 0 {
        // A sample of about 100 times the dictionary's size, spread over
        // the file, as zstd's trainer advises.
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        let avg = (total / chunks.len().max(1)).max(1);
        let count = (s.dict * 100 / avg).clamp(1, chunks.len().max(1));
        let step = (chunks.len() / count).max(1);
        let samples: Vec<&[u8]> = chunks.iter().step_by(step).copied().collect();
        zstd::dict::from_samples(&samples, s.dict).unwrap_or_else(|e| panic!("training: {e}"))
    } else {
        Vec::new()
    };
    let train_s = t.elapsed().as_secs_f64();
    let frames = if s.group == 0 {
        chunks.iter().map(|c| vec![*c]).collect()
    } else {
        frames_of(chunks, s.group)
    };
    let mut comp =
        zstd::bulk::Compressor::with_dictionary(s.level, &dict).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let mut packed = Vec::with_capacity(frames.len());
    let mut buf = Vec::new();
    for f in &frames {
        buf.clear();
        for c in f {
            buf.extend_from_slice(c);
        }
        let z = comp.compress(&buf).unwrap_or_else(|e| panic!("{e}"));
        packed.push((z, buf.len(), f.len()));
    }
    let compress_s = t.elapsed().as_secs_f64();
    let mut stored = dict.len() as u64;
    for (z, _, members) in &packed {
        stored += z.len() as u64
            + 56
            + if s.group == 0 {
                0
            } else {
                36 * *members as u64
            };
    }
    let mut de = zstd::bulk::Decompressor::with_dictionary(&dict).unwrap_or_else(|e| panic!("{e}"));
    // Best of three: this VM's speed varies by a fifth from run to run.
    let mut raw = 0u64;
    let mut read_s = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        raw = 0;
        for (z, len, _) in &packed {
            let out = de.decompress(z, *len).unwrap_or_else(|e| panic!("{e}"));
            raw += out.len() as u64;
        }
        read_s = read_s.min(t.elapsed().as_secs_f64());
    }
    // A read of the k-th member of a frame decompresses the frame up to
    // the end of that member: on average about half the frame and a chunk.
    let mut per_chunk = 0f64;
    for (_, len, members) in &packed {
        let m = *members as f64;
        per_chunk += (*len as f64) * (m + 1.0) / 2.0;
    }
    let n: usize = packed.iter().map(|p| p.2).sum();
    Row {
        stored,
        frames: packed.len() as u64,
        train_s,
        compress_s,
        read_mbs: raw as f64 / 1e6 / read_s,
        per_chunk_read: per_chunk / n as f64,
    }
}

fn main() {
    let len = common::bench_len();
    let (source, data) = common::compressible(len);
    let level: i32 = common::env_num("IMGSTORE_DENSITY_LEVEL", 14);
    let params = ChunkerParams::default();
    let mut seen = std::collections::HashSet::new();
    let mut chunks: Vec<&[u8]> = Vec::new();
    params.for_each_chunk(&data, |c| {
        if seen.insert(*blake3::hash(c).as_bytes()) {
            chunks.push(c);
        }
    });
    let unique: usize = chunks.iter().map(|c| c.len()).sum();
    println!(
        "data: {source}, {:.1} MB, {} unique chunks of {:.1} MB; zstd level {level}, one thread",
        data.len() as f64 / 1e6,
        chunks.len(),
        unique as f64 / 1e6
    );
    let s = |name: &str, level: i32, group_kib: usize, dict_kib: usize| Scheme {
        name: name.to_string(),
        level,
        group: group_kib << 10,
        dict: dict_kib << 10,
    };
    let only = std::env::var("IMGSTORE_DENSITY_ONLY").unwrap_or_default();
    let schemes = [
        s("chunk", level, 0, 0),
        s("chunk @19", 19, 0, 0),
        s("dict 112", level, 0, 112),
        s("dict 1024", level, 0, 1024),
        s("group 256", level, 256, 0),
        s("group 1024", level, 1024, 0),
        s("group 2048", level, 2048, 0),
        s("group 1024 + dict 112", level, 1024, 112),
        // Above 256 KiB zstd picks weaker parameters for a level: denser
        // levels for groups cost what level 14 costs a chunk.
        s("group 1024 @17", 17, 1024, 0),
        s("group 2048 @17", 17, 2048, 0),
        s("fixed 2048 @3", 3, 2048, 0),
        // What one thread of `zstd -d` decodes: the file as one frame.
        s("whole file @3", 3, data.len().div_ceil(1024), 0),
    ];
    let mut base = None;
    println!(
        "| scheme | stored MB | vs chunk | frames | train s | compress s | read MB/s | one chunk's read decompresses |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for sc in schemes
        .iter()
        .filter(|sc| only.is_empty() || only.split(',').any(|o| o == sc.name))
    {
        let r = if sc.name.starts_with("fixed") || sc.name.starts_with("whole") {
            // borg's shape: the whole file cut in fixed blocks, no dedup.
            let blocks: Vec<&[u8]> = data.chunks(sc.group).collect();
            run(
                &Scheme {
                    name: sc.name.clone(),
                    level: sc.level,
                    group: 0,
                    dict: 0,
                },
                &blocks,
            )
        } else {
            run(sc, &chunks)
        };
        let b = *base.get_or_insert(r.stored);
        println!(
            "| {} | {:.1} | {:.3} | {} | {:.2} | {:.2} | {:.0} | {:.0} KiB |",
            sc.name,
            r.stored as f64 / 1e6,
            r.stored as f64 / b as f64,
            r.frames,
            r.train_s,
            r.compress_s,
            r.read_mbs,
            r.per_chunk_read / 1024.0
        );
    }
}
