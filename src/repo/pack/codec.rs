//! How one piece of content is stored in a pack: a frame of a 4-byte header —
//! `R` `K`, the frame version, the codec — and the encoded bytes. The header
//! names the codecs applied, so a later layer (encryption) is a new codec
//! value, not a new format. Decoding is bounded by the size the index records
//! and checked against it; the caller checks the SHA-256. zstd contexts are
//! kept per thread: creating one per file costs megabytes of fresh pages each.

use std::cell::RefCell;

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
        [b'R', b'K', version, codec, ..] => Err(format!(
            "frame version {version}, codec {codec}: written by a newer rockup (upgrade rockup)"
        )),
        _ => Err("not a rockup frame (no RK header)".into()),
    }
}

/// Decodes a frame whose content is `size` bytes: never produces more.
pub fn decode(frame: &[u8], size: u64) -> Result<Vec<u8>, String> {
    let payload = &frame[FRAME_HEADER.min(frame.len() as u64) as usize..];
    let content = match codec_of(frame)? {
        Codec::Raw => payload.to_vec(),
        Codec::Zstd => decompress(payload, size as usize).map_err(|e| {
            format!("zstd: {e} (corrupt, or larger than the {size} bytes recorded)")
        })?,
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
        assert_eq!(decode(&packed, text.len() as u64).unwrap(), text);

        let mut noise = vec![0u8; 4096];
        rand::Rng::fill(&mut rand::rng(), &mut noise[..]);
        let stored = encode(&noise, 3);
        assert_eq!(codec_of(&stored), Ok(Codec::Raw));
        assert_eq!(decode(&stored, 4096).unwrap(), noise);
        assert_eq!(codec_of(&encode(&text, 0)), Ok(Codec::Raw));
        // Random at the start, text after: judged by its start, stored as is.
        let mixed = [noise.as_slice(), noise.as_slice(), &text].concat();
        assert_eq!(codec_of(&encode(&mixed, 3)), Ok(Codec::Raw));
        assert_eq!(
            decode(&encode(&mixed, 3), mixed.len() as u64).unwrap(),
            mixed
        );
        assert_eq!(decode(&encode(b"", 3), 0).unwrap(), b"");
    }

    #[test]
    fn forged_frames_fail_closed() {
        let text = b"metadata ".repeat(1000);
        let packed = encode(&text, 3);
        // A smaller recorded size: decompression stops, nothing larger is made.
        assert!(decode(&packed, 100).is_err());
        assert!(decode(&packed, text.len() as u64 + 1).is_err());
        assert!(decode(b"XX\x01\x00abc", 3).is_err());
        assert!(decode(b"RK\x01\x07abc", 3)
            .unwrap_err()
            .contains("newer rockup"));
        assert!(decode(b"RK", 0).is_err());
        let mut flipped = packed.clone();
        flipped[10] ^= 0xff;
        assert!(decode(&flipped, text.len() as u64).map(|c| c == text) != Ok(true));
    }
}
