//! Identifiers and whole-file hashing: the first layer.
//!
//! Every kind of id is its own newtype so that a chunk id can never be passed
//! where a file id is expected. Ids render as lower-case hex.

use std::fmt;
use std::str::FromStr;

use md5::Md5;
use sha1::{Digest, Sha1};

/// A string that is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a {kind} (64 hex digits): {input:?}")]
pub struct ParseIdError {
    kind: &'static str,
    input: String,
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        /// Read back from the hex [`Serialize`](serde::Serialize) writes, so a
        /// stored record holding an id keeps its bytes.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError {
                    kind: stringify!($name),
                    input: s.chars().take(80).collect(),
                })?;
                Ok(Self(out))
            }
        }
    };
}

hash_id!(
    /// A chunk's name: the BLAKE3-256 hash of its uncompressed bytes.
    ChunkId
);

hash_id!(
    /// A file's name: the BLAKE3-256 hash of its whole content. Putting the
    /// same bytes twice yields the same file, with one more reference.
    FileId
);

impl ChunkId {
    /// Names `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

/// A segment file's number. Segments are numbered from 1 in creation order
/// and never reuse a number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct SegmentId(pub u64);

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012}", self.0)
    }
}

/// The digests of a whole file that IMGAPI and our file ids need.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileDigests {
    pub size: u64,
    pub sha1: [u8; 20],
    pub md5: [u8; 16],
    pub blake3: [u8; 32],
}

/// Computes SHA-1 and BLAKE3 of a stream fed in pieces. MD5 is kept apart
/// ([`Md5Hasher`]) because it is the slowest and cannot be split, so the
/// ingest pipeline runs it on its own thread.
pub struct FileHasher {
    size: u64,
    sha1: Sha1,
    blake3: blake3::Hasher,
}

impl Default for FileHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl FileHasher {
    pub fn new() -> Self {
        Self {
            size: 0,
            sha1: Sha1::new(),
            blake3: blake3::Hasher::new(),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        self.sha1.update(data);
        self.blake3.update(data);
    }

    /// Size, SHA-1, BLAKE3.
    pub fn finish(self) -> (u64, [u8; 20], [u8; 32]) {
        (
            self.size,
            self.sha1.finalize().into(),
            *self.blake3.finalize().as_bytes(),
        )
    }
}

/// SHA-1 of a stream (IMGAPI's `files[].sha1`), for a caller that runs it
/// on its own thread.
#[derive(Default)]
pub struct Sha1Hasher(Sha1);

impl Sha1Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> [u8; 20] {
        self.0.finalize().into()
    }
}

/// MD5 of a stream (IMGAPI's Content-MD5).
#[derive(Default)]
pub struct Md5Hasher(Md5);

impl Md5Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> [u8; 16] {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_hex() {
        let id = ChunkId::of(b"hello");
        let back: ChunkId = id.to_hex().parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id, back);
        assert!("xyz".parse::<FileId>().is_err());
    }

    #[test]
    fn ids_serialise_as_the_hex_they_are_read_back_from() {
        let id = FileId(*blake3::hash(b"abc").as_bytes());
        let json = serde_json::to_string(&id).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
        let back: FileId = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, id);
        assert!(serde_json::from_str::<FileId>("\"ABC\"").is_err());
        assert!(serde_json::from_str::<ChunkId>("17").is_err());
    }

    #[test]
    fn file_hasher_matches_known_digests() {
        let mut h = FileHasher::new();
        h.update(b"ab");
        h.update(b"c");
        let (size, sha1, b3) = h.finish();
        assert_eq!(size, 3);
        assert_eq!(
            hex::encode(sha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(b3, *blake3::hash(b"abc").as_bytes());
        let mut m = Md5Hasher::default();
        m.update(b"abc");
        assert_eq!(hex::encode(m.finish()), "900150983cd24fb0d6963f7d28e17f72");
    }
}
