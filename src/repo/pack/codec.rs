//! How one piece of content is stored in a pack: a frame of a 4-byte header —
//! `R` `K`, the frame version, the codec — and the encoded bytes. The header
//! names the codecs applied: raw, zstd, or — in an encrypted repository —
//! sealed, whose payload is a sealed object (`crypto::sealed`, kind `Entry`,
//! bound to the content's name, not to the pack, so repacking copies it as
//! it is) holding a raw or zstd frame. Decoding is bounded by the size the index records
//! and checked against it; the caller checks the SHA-256. zstd contexts are
//! kept per thread: creating one per file costs megabytes of fresh pages each.

use std::cell::RefCell;

use crate::repo::crypto::sealed::{self, Kind, ObjectKey, Session};

/// Bytes of a frame's header.
pub const FRAME_HEADER: u64 = 4;
const MAGIC: [u8; 2] = *b"RK";
const FRAME_VERSION: u8 = 1;
/// Compression must save at least 1/32 of the bytes to be kept.
const WORTHWHILE: usize = 32;
/// Content longer than twice this is judged by a sample of this many bytes
/// first: what does not shrink there (media, random data) is stored as is
/// without compressing the whole.
const SAMPLE: usize = 4096;

/// The codecs a frame's payload went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is.
    Raw = 0,
    /// zstd-compressed.
    Zstd = 1,
    /// Sealed: a raw or zstd frame, encrypted.
    Sealed = 2,
}

/// Encodes `content` as a frame: zstd at `level` when that saves at least
/// 1/32 of the bytes, else stored as is (already-compressed media, random
/// data; judged from the first [`SAMPLE`] bytes of longer content). Level 0
/// never compresses.
pub fn encode(content: &[u8], level: i32) -> Vec<u8> {
    let shrinks = |part: &[u8]| {
        compress(part, level)
            .ok()
            .filter(|compressed| compressed.len() + part.len() / WORTHWHILE < part.len())
    };
    let promising =
        level > 0 && (content.len() <= 2 * SAMPLE || shrinks(&content[..SAMPLE]).is_some());
    match promising.then(|| shrinks(content)).flatten() {
        Some(compressed) => frame(Codec::Zstd, &compressed),
        None => frame(Codec::Raw, content),
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// zstd at `level` with this thread's context.
fn compress(content: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        slot.as_mut().expect("just set").1.compress(content)
    })
}

/// zstd decompression of at most `capacity` bytes with this thread's context.
fn decompress(payload: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        let decompressor = slot.as_mut().expect("just set");
        decompressor.decompress(payload, capacity)
    })
}

fn frame(codec: Codec, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER as usize + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.push(FRAME_VERSION);
    frame.push(codec as u8);
    frame.extend_from_slice(payload);
    frame
}

/// The codec a frame's header names.
pub fn codec_of(frame: &[u8]) -> Result<Codec, String> {
    match frame {
        [b'R', b'K', FRAME_VERSION, 0, ..] => Ok(Codec::Raw),
        [b'R', b'K', FRAME_VERSION, 1, ..] => Ok(Codec::Zstd),
        [b'R', b'K', FRAME_VERSION, 2, ..] => Ok(Codec::Sealed),
        [b'R', b'K', version, codec, ..] => Err(format!(
            "frame version {version}, codec {codec}: written by a newer rockup (upgrade rockup)"
        )),
        _ => Err("not a rockup frame (no RK header)".into()),
    }
}

/// The frame of a sealed pack entry: `inner` (a raw or zstd frame) sealed
/// as entry `name`.
pub fn seal(inner: &[u8], session: &Session, name: &str) -> Vec<u8> {
    frame(Codec::Sealed, &session.seal((Kind::Entry, name), inner))
}

/// The sealed object in a sealed frame (its header names its session).
pub fn sealed_payload(frame: &[u8]) -> Option<&[u8]> {
    (codec_of(frame) == Ok(Codec::Sealed)).then(|| &frame[FRAME_HEADER as usize..])
}

/// Decodes a frame whose content is `size` bytes: never produces more. A
/// sealed frame is opened with `key` first; what it holds is no larger than
/// a raw frame of the content.
pub fn decode(frame: &[u8], size: u64, key: Option<&ObjectKey>) -> Result<Vec<u8>, String> {
    let Some(payload) = sealed_payload(frame) else {
        return decode_open(frame, size);
    };
    let key = key.ok_or("a sealed entry, and no key to open it")?;
    match sealed::plain_len(payload.len() as u64) {
        Some(inner) if inner <= size + FRAME_HEADER => {}
        _ => {
            return Err(format!(
                "a sealed entry of {} bytes cannot hold {size} bytes",
                payload.len()
            ))
        }
    }
    let inner = sealed::open(key, payload)?;
    match codec_of(&inner)? {
        Codec::Sealed => Err("a sealed entry sealed again".into()),
        _ => decode_open(&inner, size),
    }
}

/// Decodes a raw or zstd frame of `size` bytes of content.
fn decode_open(frame: &[u8], size: u64) -> Result<Vec<u8>, String> {
    let payload = &frame[FRAME_HEADER.min(frame.len() as u64) as usize..];
    let content = match codec_of(frame)? {
        Codec::Raw => payload.to_vec(),
        Codec::Zstd => decompress(payload, size as usize).map_err(|e| {
            format!("zstd: {e} (corrupt, or larger than the {size} bytes recorded)")
        })?,
        Codec::Sealed => return Err("a sealed entry where none may be".into()),
    };
    match content.len() as u64 == size {
        true => Ok(content),
        false => Err(format!(
            "decodes to {} bytes, index says {size}",
            content.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_what_shrinks_and_stores_the_rest() {
        let text = b"metadata ".repeat(1000);
        let packed = encode(&text, 3);
        assert_eq!(codec_of(&packed), Ok(Codec::Zstd));
        assert!(packed.len() < text.len() / 10);
        assert_eq!(decode(&packed, text.len() as u64, None).unwrap(), text);

        let mut noise = vec![0u8; 4096];
        rand::Rng::fill(&mut rand::rng(), &mut noise[..]);
        let stored = encode(&noise, 3);
        assert_eq!(codec_of(&stored), Ok(Codec::Raw));
        assert_eq!(decode(&stored, 4096, None).unwrap(), noise);
        assert_eq!(codec_of(&encode(&text, 0)), Ok(Codec::Raw));
        // Random at the start, text after: judged by its start, stored as is.
        let mixed = [noise.as_slice(), noise.as_slice(), &text].concat();
        assert_eq!(codec_of(&encode(&mixed, 3)), Ok(Codec::Raw));
        assert_eq!(
            decode(&encode(&mixed, 3), mixed.len() as u64, None).unwrap(),
            mixed
        );
        assert_eq!(decode(&encode(b"", 3), 0, None).unwrap(), b"");
    }

    #[test]
    fn forged_frames_fail_closed() {
        let text = b"metadata ".repeat(1000);
        let packed = encode(&text, 3);
        // A smaller recorded size: decompression stops, nothing larger is made.
        assert!(decode(&packed, 100, None).is_err());
        assert!(decode(&packed, text.len() as u64 + 1, None).is_err());
        assert!(decode(b"XX\x01\x00abc", 3, None).is_err());
        assert!(decode(b"RK\x01\x07abc", 3, None)
            .unwrap_err()
            .contains("newer rockup"));
        assert!(decode(b"RK", 0, None).is_err());
        let mut flipped = packed.clone();
        flipped[10] ^= 0xff;
        assert!(decode(&flipped, text.len() as u64, None).map(|c| c == text) != Ok(true));
    }
}
