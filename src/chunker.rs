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
        for (i, &b) in head.iter().enumerate() {
            hash = (hash << 1).wrapping_add(gear(b));
            if hash & strict == 0 {
                return min + i + 1;
            }
        }
        let tail = data.get(center..end).unwrap_or_default();
        for (i, &b) in tail.iter().enumerate() {
            hash = (hash << 1).wrapping_add(gear(b));
            if hash & loose == 0 {
                return center + i + 1;
            }
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
}
