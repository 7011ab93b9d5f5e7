//! Content-defined chunk boundaries (FastCDC-style gear hash with
//! normalised chunking).
//!
//! The boundaries depend only on the bytes and the [`ChunkerParams`], never on
//! how the input was split into reads, so the same content chunks identically
//! in every datacenter. The gear table and the mask rule below are part of the
//! store format (chunker version 1 in `format/FORMAT.md`): changing them would
//! stop new data from deduplicating against old data.

use crate::error::{Error, Result};

/// Version of the boundary rule, recorded in every store.
pub const CHUNKER_VERSION: u32 = 1;

/// The largest chunk any store may be configured to cut, and so the largest
/// chunk a record may hold.
pub const MAX_CHUNK_LEN: u32 = 16 << 20;

/// The minimum, average and maximum chunk sizes, in bytes, and the
/// normalisation level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    /// Normalised chunking: before `avg` a boundary needs `nc` more hash
    /// bits to match, after it `nc` fewer (FastCDC's NC level; 0 is plain
    /// CDC). Higher levels narrow the size distribution.
    pub nc: u8,
}

impl Default for ChunkerParams {
    /// 64 KiB average (16 KiB minimum, 256 KiB maximum), normalisation
    /// level 1: see the crate docs for the measurements behind it.
    fn default() -> Self {
        Self {
            nc: 1,
            ..Self::with_average(64 * 1024)
        }
    }
}

impl ChunkerParams {
    /// `avg` must be a power of two; min is avg/4 and max is avg*4,
    /// normalisation level 2.
    pub fn with_average(avg: u32) -> Self {
        Self {
            min: avg / 4,
            avg,
            max: avg.saturating_mul(4),
            nc: 2,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let ok = self.avg.is_power_of_two()
            && self.avg >= 256
            && self.min >= 64
            && self.min <= self.avg
            && self.avg <= self.max
            && self.max <= MAX_CHUNK_LEN
            && u32::from(self.nc) + 1 < self.avg.trailing_zeros();
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "chunker parameters {self:?}: need 64 <= min <= avg <= max <= {}, avg a power of two >= 256, nc < log2(avg) - 1",
                MAX_CHUNK_LEN
            )))
        }
    }

    fn masks(&self) -> (u64, u64) {
        let bits = self.avg.trailing_zeros();
        let nc = u32::from(self.nc);
        // Normalised chunking: a stricter mask (nc more bits) before the
        // average size and a looser one (nc fewer) after it. The masks test
        // the high bits of the gear hash, which depend on the last 64 bytes
        // (the low bits only on the last few).
        let strict = !0u64 << (64 - (bits + nc));
        let loose = !0u64 << (64 - bits.saturating_sub(nc).max(1));
        (strict, loose)
    }

    /// Length of the first chunk of `data`, given that `data` is either at
    /// least `max` bytes long or the rest of the input.
    pub fn cut(&self, data: &[u8]) -> usize {
        let len = data.len();
        let min = self.min as usize;
        if len <= min {
            return len;
        }
        let (strict, loose) = self.masks();
        let center = (self.avg as usize).min(len);
        let end = (self.max as usize).min(len);
        let mut hash = 0u64;
        // The hash starts at `min`: bytes before it cannot end a chunk, and a
        // 64-byte window needs no warm-up because only the high bits matter.
        let head = data.get(min..center).unwrap_or_default();
        if let Some(i) = scan(head, &mut hash, strict) {
            return min + i + 1;
        }
        let tail = data.get(center..end).unwrap_or_default();
        if let Some(i) = scan(tail, &mut hash, loose) {
            return center + i + 1;
        }
        end
    }

    /// Calls `f` with every chunk of a complete in-memory buffer.
    pub fn for_each_chunk<'a>(&self, mut data: &'a [u8], mut f: impl FnMut(&'a [u8])) {
        while !data.is_empty() {
            let n = self.cut(data);
            let (chunk, rest) = data.split_at(n);
            f(chunk);
            data = rest;
        }
    }
}

/// Rolls the gear hash over `data` from `hash`: the index of the first
/// byte after which `hash & mask == 0`, if any (`hash` is then the hash
/// up to that byte; otherwise up to the end).
///
/// The same rule as one `hash = (hash << 1) + gear(b)` per byte, four bytes
/// at a time: the four hashes are each the hash before the group shifted,
/// plus a sum of the group's gear values, so the chain from one group to
/// the next is one shift and one add instead of four of each (shifts and
/// adds modulo 2^64 distribute). 1.33 GiB/s became 2.08 GiB/s
/// (`benches/chunker.rs`, 64 KiB average, on the 2-core dev VM), the same cuts
/// (`the_four_byte_scan_cuts_where_the_byte_loop_does`).
#[inline(always)]
fn scan(data: &[u8], hash: &mut u64, mask: u64) -> Option<usize> {
    let mut h = *hash;
    let mut groups = data.chunks_exact(4);
    let mut at = 0;
    for g in &mut groups {
        let &[a, b, c, d] = g else { break };
        let (ga, gb, gc, gd) = (gear(a), gear(b), gear(c), gear(d));
        let s2 = (ga << 1).wrapping_add(gb);
        let s3 = (s2 << 1).wrapping_add(gc);
        let s4 = (s3 << 1).wrapping_add(gd);
        let h1 = (h << 1).wrapping_add(ga);
        let h2 = (h << 2).wrapping_add(s2);
        let h3 = (h << 3).wrapping_add(s3);
        let h4 = (h << 4).wrapping_add(s4);
        if (h1 & mask == 0) | (h2 & mask == 0) | (h3 & mask == 0) | (h4 & mask == 0) {
            let (k, hk) = if h1 & mask == 0 {
                (0, h1)
            } else if h2 & mask == 0 {
                (1, h2)
            } else if h3 & mask == 0 {
                (2, h3)
            } else {
                (3, h4)
            };
            *hash = hk;
            return Some(at + k);
        }
        h = h4;
        at += 4;
    }
    for (i, &b) in groups.remainder().iter().enumerate() {
        h = (h << 1).wrapping_add(gear(b));
        if h & mask == 0 {
            *hash = h;
            return Some(at + i);
        }
    }
    *hash = h;
    None
}

#[inline(always)]
#[expect(
    clippy::indexing_slicing,
    reason = "a u8 always indexes a 256-entry table"
)]
fn gear(b: u8) -> u64 {
    GEAR[b as usize]
}

/// 256 pseudo-random 64-bit values from SplitMix64 seeded with
/// 0x696d_6773_746f_7265 ("imgstore"). Fixed forever for chunker version 1.
static GEAR: [u64; 256] = gear_table();

#[expect(
    clippy::indexing_slicing,
    reason = "const fn; i < 256 by the loop bound"
)]
const fn gear_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut state: u64 = 0x696d_6773_746f_7265;
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn chunks_respect_min_and_max_and_cover_input() {
        let p = ChunkerParams::with_average(4096);
        let data = pseudo_random(1 << 20, 7);
        let mut total = 0;
        let mut count = 0;
        p.for_each_chunk(&data, |c| {
            total += c.len();
            count += 1;
            assert!(c.len() <= p.max as usize);
        });
        assert_eq!(total, data.len());
        // Average within a factor of two of the target on random data.
        let avg = data.len() / count;
        assert!(avg > 2048 && avg < 8192, "average chunk {avg}");
    }

    #[test]
    fn boundaries_resynchronise_after_an_insertion() {
        let p = ChunkerParams::with_average(4096);
        let data = pseudo_random(1 << 19, 9);
        let mut edited = data.clone();
        edited.splice(1000..1000, b"inserted bytes".iter().copied());
        let ids = |d: &[u8]| {
            let mut v = Vec::new();
            p.for_each_chunk(d, |c| v.push(crate::id::ChunkId::of(c)));
            v
        };
        let a = ids(&data);
        let b = ids(&edited);
        let shared = b.iter().filter(|id| a.contains(id)).count();
        assert!(shared + 3 >= a.len(), "only {shared} of {} shared", a.len());
    }

    #[test]
    fn zeros_cut_at_max() {
        let p = ChunkerParams::with_average(1024);
        assert_eq!(p.cut(&[0u8; 100_000]), p.max as usize);
    }

    #[test]
    fn invalid_params_are_refused() {
        assert!(ChunkerParams::with_average(3000).validate().is_err());
        assert!(ChunkerParams::default().validate().is_ok());
    }

    /// The boundary rule of chunker version 1 as written first: one byte at
    /// a time. The fast scan must cut exactly where this does.
    fn cut_bytewise(p: &ChunkerParams, data: &[u8]) -> usize {
        let (min, len) = (p.min as usize, data.len());
        if len <= min {
            return len;
        }
        let (strict, loose) = p.masks();
        let center = (p.avg as usize).min(len);
        let end = (p.max as usize).min(len);
        let mut hash = 0u64;
        for (i, &b) in data.iter().enumerate().take(end).skip(min) {
            hash = (hash << 1).wrapping_add(gear(b));
            let mask = if i < center { strict } else { loose };
            if hash & mask == 0 {
                return i + 1;
            }
        }
        end
    }

    fn cuts(p: &ChunkerParams, mut data: &[u8], cut: impl Fn(&[u8]) -> usize) -> Vec<usize> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = cut(data).min(data.len());
            out.push(n);
            data = data.get(n..).unwrap_or_default();
        }
        assert!(out.iter().all(|&n| n > 0 && n <= p.max as usize));
        out
    }

    #[test]
    fn the_four_byte_scan_cuts_where_the_byte_loop_does() {
        // Random bytes, text-like bytes (few symbols: long hash runs) and
        // every small length, so cuts land at each offset within a group
        // of four and in the remainder.
        let random = pseudo_random(3 << 20, 11);
        let texty: Vec<u8> = pseudo_random(1 << 20, 5)
            .iter()
            .map(|b| b"etaoin \n"[usize::from(b % 8)])
            .collect();
        for avg in [256u32, 1024, 4096, 65536] {
            for nc in 0..3u8 {
                let p = ChunkerParams {
                    nc,
                    ..ChunkerParams::with_average(avg)
                };
                if p.validate().is_err() {
                    continue;
                }
                for data in [&random[..], &texty[..]] {
                    let fast = cuts(&p, data, |d| p.cut(d));
                    let slow = cuts(&p, data, |d| cut_bytewise(&p, d));
                    assert_eq!(fast, slow, "avg {avg} nc {nc}");
                }
                for n in 0..(p.min as usize + 64) {
                    let d = random.get(..n).unwrap_or_default();
                    assert_eq!(p.cut(d), cut_bytewise(&p, d), "{n} bytes");
                }
            }
        }
    }

    #[test]
    fn the_default_boundaries_are_those_of_chunker_version_1() {
        // Changing these changes the store format (see the module docs).
        let p = ChunkerParams::default();
        let data = pseudo_random(4 << 20, 1);
        let lens = cuts(&p, &data, |d| p.cut(d));
        let mut h = blake3::Hasher::new();
        for n in &lens {
            h.update(&(*n as u64).to_le_bytes());
        }
        assert_eq!(
            (lens.len(), h.finalize().to_hex().to_string().as_str()),
            (
                57,
                "e8d9f143cb78b8a43fce2d50a78cd0655c41c4f6efa4cd54a136b738c3fe9ae4"
            )
        );
    }
}
