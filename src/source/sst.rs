//! Reads the id of the DB session that wrote an SST file — the
//! `rocksdb.creating.session.identity` table property — from the file's footer,
//! metaindex block and properties block: three small reads at the end of the file,
//! never the whole file. The rocksdb crate does not expose table properties, so
//! this parses the block-based table format (format_version 2 to 7) directly.
//! Anything unexpected yields `None`, and the caller falls back to naming the file
//! by content.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

const BLOCK_BASED_MAGIC: u64 = 0x88e2_41b7_85f4_cff7;
/// Footer length of every format_version >= 1.
const FOOTER_LEN: u64 = 53;
/// Compression type byte + 32-bit checksum after every block.
const BLOCK_TRAILER_LEN: u64 = 5;
const EXTENDED_MAGIC: [u8; 4] = [0x3e, 0x00, 0x7a, 0x00];
/// Meta blocks are small; refuse to read anything larger.
const MAX_META_BLOCK: u64 = 16 << 20;

/// The session id of the SST at `path`, if it is a block-based table that has one.
pub fn session_id(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let footer_offset = size.checked_sub(FOOTER_LEN)?;
    let footer = read_at(&file, footer_offset, FOOTER_LEN)?;
    let properties = properties_handle(&file, footer_offset, &footer)?;
    let block = read_block(&file, properties)?;
    block_entries(&block)?
        .into_iter()
        .find(|(key, _)| key == b"rocksdb.creating.session.identity")
        .and_then(|(_, value)| String::from_utf8(value).ok())
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn read_at(file: &File, offset: u64, len: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0; usize::try_from(len).ok()?];
    file.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

/// (offset, size) of a block.
type Handle = (u64, u64);

fn properties_handle(file: &File, footer_offset: u64, footer: &[u8]) -> Option<Handle> {
    let magic = u64::from_le_bytes(footer[45..53].try_into().ok()?);
    if magic != BLOCK_BASED_MAGIC {
        return None;
    }
    let format_version = u32::from_le_bytes(footer[41..45].try_into().ok()?);
    let metaindex = if format_version >= 6 {
        if footer[1..5] != EXTENDED_MAGIC {
            return None;
        }
        let size = u64::from(u32::from_le_bytes(footer[13..17].try_into().ok()?));
        (
            footer_offset
                .checked_sub(BLOCK_TRAILER_LEN)?
                .checked_sub(size)?,
            size,
        )
    } else {
        let mut rest = &footer[1..];
        (varint(&mut rest)?, varint(&mut rest)?)
    };
    let block = read_block(file, metaindex)?;
    let (_, value) = block_entries(&block)?
        .into_iter()
        .find(|(key, _)| key == b"rocksdb.properties")?;
    let mut value = value.as_slice();
    Some((varint(&mut value)?, varint(&mut value)?))
}

/// Reads an uncompressed block (meta blocks are never compressed).
fn read_block(file: &File, (offset, size): Handle) -> Option<Vec<u8>> {
    if size > MAX_META_BLOCK {
        return None;
    }
    let mut block = read_at(file, offset, size + 1)?;
    if block.pop()? != 0 {
        return None; // compressed: not a layout this parser knows
    }
    Some(block)
}

/// The (key, value) entries of a block: prefix-compressed entries followed by
/// the restart array and its length.
fn block_entries(block: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let len = block.len();
    let restarts =
        u32::from_le_bytes(block.get(len.checked_sub(4)?..)?.try_into().ok()?) & 0x7fff_ffff;
    let entries_end = len.checked_sub(4 + 4 * restarts as usize)?;
    let mut rest = &block[..entries_end];
    let mut key: Vec<u8> = Vec::new();
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let shared = varint(&mut rest)? as usize;
        let unshared = varint(&mut rest)? as usize;
        let value_len = varint(&mut rest)? as usize;
        if shared > key.len() || rest.len() < unshared + value_len {
            return None;
        }
        key.truncate(shared);
        key.extend_from_slice(&rest[..unshared]);
        entries.push((key.clone(), rest[unshared..unshared + value_len].to_vec()));
        rest = &rest[unshared + value_len..];
    }
    Some(entries)
}

fn varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_session_id_of_real_sst_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = rocksdb::DB::open(&opts, dir.path()).unwrap();
        db.put(b"k", b"v").unwrap();
        db.flush().unwrap();
        db.put(b"k2", b"v2").unwrap();
        db.flush().unwrap();
        let ssts: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sst"))
            .collect();
        assert_eq!(ssts.len(), 2);
        let ids: Vec<_> = ssts
            .iter()
            .map(|p| session_id(p).expect("session id"))
            .collect();
        assert_eq!(ids[0], ids[1], "one session wrote both");
        assert_eq!(ids[0].len(), 20);
        drop(db);
        let db = rocksdb::DB::open(&opts, dir.path()).unwrap();
        db.put(b"k3", b"v3").unwrap();
        db.flush().unwrap();
        let newest = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "sst") && !ssts.contains(p))
            .unwrap();
        assert_ne!(
            session_id(&newest).unwrap(),
            ids[0],
            "a new session has a new id"
        );
    }

    #[test]
    fn garbage_is_not_an_sst() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sst");
        std::fs::write(&path, vec![7u8; 300]).unwrap();
        assert_eq!(session_id(&path), None);
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(session_id(&path), None);
    }
}
