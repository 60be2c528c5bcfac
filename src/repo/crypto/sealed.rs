//! Sealed objects: how every encrypted object body and every pack entry is
//! stored. A sealed object is
//!
//! ```text
//! "RKS1" | session id (16) | object number (8, big-endian) | chunk 0 | chunk 1 | …
//! ```
//!
//! Each chunk is at most [`CHUNK`] bytes of plaintext encrypted with
//! AES-256-GCM and its 16-byte tag. The key is the object's own:
//! HKDF-SHA256(session key, salt = repository id, info = "rockup object key"
//! ‖ object number), and the session's writer numbers its objects with a
//! counter, so a key seals one object only. The nonce of chunk `i` is `i` as
//! 11 big-endian bytes and a final byte that is 1 for the last chunk, 0
//! otherwise (the STREAM construction): chunks cannot be reordered, dropped or
//! cut off without failing. The associated data names what the object is —
//! `"rockup-sealed-v1"` ‖ repository id ‖ kind ‖ its name (an object key, or
//! a pack entry's content name) — so an object moved to another name, used as
//! another kind, or taken from another repository fails to open. Sizes follow
//! from the plaintext's ([`sealed_len`]), so a reader knows where every chunk
//! is and reads ranges of large objects without reading the rest.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use super::keys::{RepoId, SessionId};
use super::primitives::{hkdf, Aead, SecretKey, NONCE_LEN, TAG_LEN};

/// The first bytes of a sealed object.
pub const MAGIC: [u8; 4] = *b"RKS1";
/// Bytes before the first chunk.
pub const HEADER_LEN: u64 = 4 + 16 + 8;
/// Plaintext bytes per chunk (the last may hold fewer, and an empty object
/// one chunk of none).
pub const CHUNK: u64 = 64 << 10;
/// Bytes of a whole sealed chunk.
pub const SEALED_CHUNK: u64 = CHUNK + TAG_LEN as u64;

/// What a sealed object is (part of what it is bound to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Kind {
    /// A backup's manifest header.
    Manifest = 1,
    /// A part of a manifest.
    Part = 2,
    /// A pack's index.
    Index = 3,
    /// A content object (`content/…`).
    Content = 4,
    /// A table file (`sst/…`).
    Table = 5,
    /// One entry of a pack, bound to its content name rather than the pack.
    Entry = 6,
    /// A WAL segment (`segments/…`).
    Segment = 7,
}

/// Chunks of an object of `plain` bytes.
pub fn chunks(plain: u64) -> u64 {
    plain.div_ceil(CHUNK).max(1)
}

/// Bytes of the sealed object of `plain` bytes of plaintext.
pub fn sealed_len(plain: u64) -> u64 {
    HEADER_LEN + plain + chunks(plain) * TAG_LEN as u64
}

/// The plaintext length of a sealed object of `sealed` bytes, if that is a
/// length some plaintext seals to.
pub fn plain_len(sealed: u64) -> Option<u64> {
    let body = sealed.checked_sub(HEADER_LEN)?;
    let full = body / SEALED_CHUNK;
    let rest = body % SEALED_CHUNK;
    let plain = match rest {
        0 if full > 0 => full * CHUNK,
        r if r >= TAG_LEN as u64 => full * CHUNK + (r - TAG_LEN as u64),
        _ => return None,
    };
    (sealed_len(plain) == sealed).then_some(plain)
}

/// Where chunk `index` lies in the sealed object.
pub fn chunk_range(index: u64, plain: u64) -> Range<u64> {
    let start = HEADER_LEN + index * SEALED_CHUNK;
    let len = (plain - (index * CHUNK).min(plain)).min(CHUNK) + TAG_LEN as u64;
    start..start + len
}

/// The chunks holding plaintext bytes `range` of an object of `plain` bytes.
pub fn chunks_of(range: &Range<u64>, plain: u64) -> Range<u64> {
    let last = chunks(plain);
    let first = (range.start / CHUNK).min(last);
    let end = range.end.div_ceil(CHUNK).clamp(first + 1, last);
    first..end
}

/// The header of a sealed object: which session, which object of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub session: SessionId,
    pub number: u64,
}

impl Header {
    /// Reads the header at the start of `sealed`.
    pub fn parse(sealed: &[u8]) -> Result<Self, String> {
        if sealed.len() < HEADER_LEN as usize || sealed[..4] != MAGIC {
            return Err("not a sealed rockup object (no RKS1 header)".into());
        }
        let session = SessionId::from_bytes(sealed[4..20].try_into().expect("16 bytes"));
        let number = u64::from_be_bytes(sealed[20..28].try_into().expect("8 bytes"));
        Ok(Self { session, number })
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN as usize);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(self.session.as_bytes());
        out.extend_from_slice(&self.number.to_be_bytes());
        out
    }
}

/// The key and binding of one object.
pub struct ObjectKey {
    aead: Aead,
    ad: Vec<u8>,
}

impl ObjectKey {
    /// The key of object `header` of a session whose key is `session_key`,
    /// bound to `kind` and `name` in repository `repo`.
    pub fn derive(
        session_key: &SecretKey,
        repo: &RepoId,
        header: &Header,
        (kind, name): (Kind, &str),
    ) -> Self {
        let number = header.number.to_be_bytes();
        let info: [&[u8]; 2] = [b"rockup object key", &number];
        let key = hkdf(session_key.expose(), repo.as_bytes(), &info);
        let mut ad = b"rockup-sealed-v1".to_vec();
        ad.extend_from_slice(repo.as_bytes());
        ad.push(kind as u8);
        ad.extend_from_slice(name.as_bytes());
        Self {
            aead: Aead::new(&key),
            ad,
        }
    }

    fn nonce(index: u64, last: bool) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[3..11].copy_from_slice(&index.to_be_bytes());
        nonce[11] = u8::from(last);
        nonce
    }

    /// Seals chunk `index` (the last one when `last`) in place.
    pub fn seal_chunk(&self, index: u64, last: bool, plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .aead
            .seal_separate(Self::nonce(index, last), &self.ad, &mut out[start..]);
        out.extend_from_slice(&tag);
    }

    /// Opens sealed chunk `index` in place; its plaintext, or `Err` when it
    /// does not authenticate as that chunk.
    pub fn open_chunk<'a>(
        &self,
        index: u64,
        last: bool,
        sealed: &'a mut [u8],
    ) -> Result<&'a [u8], String> {
        match self.aead.open(Self::nonce(index, last), &self.ad, sealed) {
            Some(len) => Ok(&sealed[..len]),
            None => Err(format!(
                "chunk {index} does not authenticate (damaged, cut off, moved or from another repository)"
            )),
        }
    }
}

/// A writer's session: its key, and the counter that numbers its objects.
pub struct Session {
    pub id: SessionId,
    key: SecretKey,
    repo: RepoId,
    next: AtomicU64,
}

impl Session {
    pub fn new(id: SessionId, key: SecretKey, repo: RepoId) -> Self {
        Self {
            id,
            key,
            repo,
            next: AtomicU64::new(0),
        }
    }

    /// A header for the next object, and its key.
    pub fn next_object(&self, what: (Kind, &str)) -> (Header, ObjectKey) {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let header = Header {
            session: self.id,
            number,
        };
        let key = ObjectKey::derive(&self.key, &self.repo, &header, what);
        (header, key)
    }

    /// `plaintext` sealed as one object.
    pub fn seal(&self, what: (Kind, &str), plaintext: &[u8]) -> Vec<u8> {
        let mut stream = self.stream(what);
        let mut out = Vec::with_capacity(sealed_len(plaintext.len() as u64) as usize);
        out.extend(stream.push(plaintext));
        out.extend(stream.finish());
        out
    }

    /// A stream sealing one object given in pieces of any length.
    pub fn stream(&self, what: (Kind, &str)) -> SealStream {
        let (header, key) = self.next_object(what);
        SealStream {
            key,
            header: Some(header.bytes()),
            index: 0,
            pending: Vec::new(),
        }
    }
}

/// Seals an object piece by piece (multipart uploads), its length unknown
/// ahead: the last full chunk is held back until more plaintext comes or
/// the stream finishes, so that the last chunk is always sealed as the last.
pub struct SealStream {
    key: ObjectKey,
    header: Option<Vec<u8>>,
    index: u64,
    pending: Vec<u8>,
}

impl SealStream {
    /// The sealed bytes ready after `plaintext` (the header before the first).
    pub fn push(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = self.header.take().unwrap_or_default();
        let chunk = CHUNK as usize;
        // Everything but the last chunk (full or not) is sealed now, straight
        // from `plaintext`: only a held-back chunk is ever copied aside.
        let ready = (self.pending.len() + plaintext.len()).saturating_sub(1) / chunk * chunk;
        out.reserve(ready / chunk * (chunk + TAG_LEN));
        let (mut rest, mut sealed) = (plaintext, 0);
        if !self.pending.is_empty() && ready > 0 {
            let mut first = std::mem::take(&mut self.pending);
            let fill = chunk - first.len();
            first.extend_from_slice(&rest[..fill]);
            rest = &rest[fill..];
            self.seal(&first, false, &mut out);
            sealed = chunk;
        }
        while sealed < ready {
            self.seal(&rest[..chunk], false, &mut out);
            rest = &rest[chunk..];
            sealed += chunk;
        }
        self.pending.extend_from_slice(rest);
        out
    }

    /// The rest, the last chunk sealed as the last.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = self.header.take().unwrap_or_default();
        let last = std::mem::take(&mut self.pending);
        self.seal(&last, true, &mut out);
        out
    }

    fn seal(&mut self, plaintext: &[u8], last: bool, out: &mut Vec<u8>) {
        self.key.seal_chunk(self.index, last, plaintext, out);
        self.index += 1;
    }
}

/// Opens a whole sealed object with its key: its plaintext, or why not.
pub fn open(key: &ObjectKey, sealed: &[u8]) -> Result<Vec<u8>, String> {
    let plain = plain_len(sealed.len() as u64)
        .ok_or_else(|| format!("{} bytes is no sealed object's length", sealed.len()))?;
    let mut out = Vec::with_capacity(plain as usize);
    let last = chunks(plain) - 1;
    for index in 0..=last {
        let range = chunk_range(index, plain);
        let mut chunk = sealed[range.start as usize..range.end as usize].to_vec();
        out.extend_from_slice(key.open_chunk(index, index == last, &mut chunk)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::primitives::{Random, SystemRandom};

    fn session() -> Session {
        let rng = SystemRandom;
        let mut id = [0u8; 16];
        rng.fill(&mut id);
        let repo = RepoId::from_bytes([9; 16]);
        Session::new(SessionId::from_bytes(id), SecretKey::random(&rng), repo)
    }

    fn key_of(session: &Session, sealed: &[u8], what: (Kind, &str)) -> ObjectKey {
        let header = Header::parse(sealed).unwrap();
        ObjectKey::derive(&session.key, &session.repo, &header, what)
    }

    #[test]
    fn lengths_are_exact_for_every_size() {
        for plain in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7] {
            let sealed = sealed_len(plain);
            assert_eq!(plain_len(sealed), Some(plain), "{plain}");
            let last = chunk_range(chunks(plain) - 1, plain);
            assert_eq!(last.end, sealed, "{plain}");
        }
        assert_eq!(plain_len(HEADER_LEN + 3), None);
        assert_eq!(plain_len(3), None);
        assert_eq!(chunks_of(&(CHUNK..2 * CHUNK + 1), 4 * CHUNK), 1..3);
        assert_eq!(chunks_of(&(0..0), 0), 0..1);
    }

    #[test]
    fn objects_open_only_whole_in_order_and_as_what_they_were_sealed_as() {
        let session = session();
        let what = (Kind::Content, "blobs/x");
        let plaintext: Vec<u8> = (0..(2 * CHUNK + 100)).map(|i| i as u8).collect();
        let sealed = session.seal(what, &plaintext);
        assert_eq!(sealed.len() as u64, sealed_len(plaintext.len() as u64));
        assert_eq!(
            open(&key_of(&session, &sealed, what), &sealed).unwrap(),
            plaintext
        );
        let other_name = key_of(&session, &sealed, (Kind::Content, "blobs/y"));
        assert!(open(&other_name, &sealed).is_err(), "moved");
        let other_kind = key_of(&session, &sealed, (Kind::Table, "blobs/x"));
        assert!(open(&other_kind, &sealed).is_err(), "another kind");
        let mut flipped = sealed.clone();
        flipped[HEADER_LEN as usize + 5] ^= 1;
        assert!(open(&key_of(&session, &flipped, what), &flipped).is_err());
        // Cut off after the second chunk: the length of a 2-chunk object, but
        // its last chunk was not sealed as the last one.
        let cut = &sealed[..(HEADER_LEN + 2 * SEALED_CHUNK) as usize];
        assert!(
            open(&key_of(&session, cut, what), cut).is_err(),
            "truncated"
        );
        let mut swapped = sealed.clone();
        let (a, b) = (chunk_range(0, 3 * CHUNK), chunk_range(1, 3 * CHUNK));
        let first = sealed[a.start as usize..a.end as usize].to_vec();
        swapped.copy_within(b.start as usize..b.end as usize, a.start as usize);
        swapped[b.start as usize..b.end as usize].copy_from_slice(&first);
        assert!(
            open(&key_of(&session, &swapped, what), &swapped).is_err(),
            "reordered"
        );
        let empty = session.seal(what, b"");
        assert_eq!(open(&key_of(&session, &empty, what), &empty).unwrap(), b"");
    }

    #[test]
    fn a_stream_in_pieces_seals_as_the_whole() {
        let session = session();
        let what = (Kind::Table, "sst/x");
        let plaintext: Vec<u8> = (0..(5 * CHUNK + 9)).map(|i| (i * 7) as u8).collect();
        let mut stream = session.stream(what);
        let mut sealed = stream.push(&plaintext[..(2 * CHUNK) as usize]);
        sealed.extend(stream.push(&plaintext[(2 * CHUNK) as usize..(3 * CHUNK) as usize]));
        sealed.extend(stream.push(&plaintext[(3 * CHUNK) as usize..]));
        sealed.extend(stream.finish());
        assert_eq!(
            open(&key_of(&session, &sealed, what), &sealed).unwrap(),
            plaintext
        );
        let numbers: Vec<u64> = (0..3).map(|_| session.next_object(what).0.number).collect();
        assert_eq!(
            numbers,
            [1, 2, 3],
            "every object its own number, so its own key"
        );
    }

    /// Pieces of every awkward length — one byte, a chunk less or more one,
    /// several chunks, exact multiples, nothing — seal to an object that
    /// opens as the whole and is as long as `sealed_len` says.
    #[test]
    fn pieces_of_any_length_seal_to_one_object() {
        let session = session();
        let what = (Kind::Content, "content/x");
        let c = CHUNK as usize;
        let pieces = [1, c - 1, 0, c + 1, 3 * c, 2, c, 5];
        let plaintext: Vec<u8> = (0..pieces.iter().sum::<usize>())
            .map(|i| (i * 13) as u8)
            .collect();
        let mut stream = session.stream(what);
        let (mut sealed, mut at) = (Vec::new(), 0);
        for piece in pieces {
            sealed.extend(stream.push(&plaintext[at..at + piece]));
            at += piece;
        }
        sealed.extend(stream.finish());
        assert_eq!(sealed.len() as u64, sealed_len(plaintext.len() as u64));
        assert_eq!(
            open(&key_of(&session, &sealed, what), &sealed).unwrap(),
            plaintext
        );
    }
}
