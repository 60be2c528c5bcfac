//! Reading objects back, checked: whole (streamed, never past the size the
//! manifest records, hashed as it streams) or in ranges (large objects,
//! restored in parallel). A sealed object is opened chunk by chunk as its
//! bytes arrive — each chunk authenticated before any of its plaintext is
//! written or hashed, the last one required to be sealed as the last — so
//! memory stays at a chunk, and a range of a large object reads only the
//! chunks that hold it.

use std::ops::Range;

use bytes::{Buf, BytesMut};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange};

use super::Repository;
use crate::digest::{Hasher, Sha256};
use crate::error::{Error, Result};
use crate::repo::crypto::sealed::{self, Header, Kind, ObjectKey, HEADER_LEN};

/// What a verified read of an object found.
pub(crate) enum Fetched {
    /// Exactly the expected size and SHA-256; all of it written out.
    Intact,
    /// No such object.
    Missing,
    /// More bytes than expected: reading stopped at the first chunk past them.
    TooLarge,
    /// The object ended early or hashes otherwise: what it had.
    Differs { bytes: u64, sha256: Sha256 },
    /// A sealed object that does not open: why.
    Damaged(String),
}

/// What a ranged read found.
pub(crate) enum RangeFetched {
    /// The whole range, written.
    Written,
    /// No such object.
    Missing,
    /// The object is this many bytes long, not the size expected.
    ObjectSize(u64),
    /// The range ended early, at this offset.
    Short(u64),
    /// A sealed object that does not open: why.
    Damaged(String),
}

/// What reading ranges of one object needs: its size as stored, and its
/// key when it is sealed.
pub(crate) struct RangeKey {
    stored: u64,
    key: Option<ObjectKey>,
}

/// Opens a sealed object's chunks as they stream in.
struct Unsealer {
    plain: u64,
    key: Option<ObjectKey>,
    index: u64,
    buffer: BytesMut,
}

impl Unsealer {
    fn new(plain: u64) -> Self {
        Self {
            plain,
            key: None,
            index: 0,
            buffer: BytesMut::new(),
        }
    }

    /// The plaintext that `bytes` completes; `Err(why)` at the first chunk
    /// that does not open.
    async fn feed(
        &mut self,
        repo: &Repository,
        what: (Kind, &str),
        bytes: &[u8],
    ) -> Result<std::result::Result<Vec<u8>, String>> {
        self.buffer.extend_from_slice(bytes);
        if self.key.is_none() {
            if (self.buffer.len() as u64) < HEADER_LEN {
                return Ok(Ok(Vec::new()));
            }
            let header = match Header::parse(&self.buffer) {
                Ok(header) => header,
                Err(why) => return Ok(Err(why)),
            };
            self.key = Some(match repo.object_key(&header, what).await {
                Ok(key) => key,
                Err(e @ Error::Manifest { .. }) => return Ok(Err(e.to_string())),
                Err(e) => return Err(e),
            });
            self.buffer.advance(HEADER_LEN as usize);
        }
        Ok(self.open_ready())
    }

    /// Opens every chunk the buffer holds whole.
    fn open_ready(&mut self) -> std::result::Result<Vec<u8>, String> {
        let key = self.key.as_ref().expect("the header was read");
        let last = sealed::chunks(self.plain) - 1;
        let mut plaintext = Vec::new();
        while self.index <= last {
            let len = sealed::chunk_range(self.index, self.plain);
            let len = (len.end - len.start) as usize;
            if self.buffer.len() < len {
                break;
            }
            let mut chunk = self.buffer.split_to(len);
            plaintext.extend_from_slice(key.open_chunk(
                self.index,
                self.index == last,
                &mut chunk,
            )?);
            self.index += 1;
        }
        Ok(plaintext)
    }

    /// Whether every chunk was opened.
    fn done(&self) -> bool {
        self.key.is_some() && self.index == sealed::chunks(self.plain) && self.buffer.is_empty()
    }
}

impl Repository {
    /// Streams the object at `key` (sealed as `kind` when the repository is
    /// encrypted) into `out`, never past the `size` bytes of content it must
    /// hold, and checks its size and SHA-256; a failed write is reported for
    /// `out_path`. Parts are read as stored: their size and hash are their
    /// sealed bytes' (`read_part` opens them).
    pub(crate) async fn read_verified<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        (kind, key): (Kind, &Path),
        (size, sha256): (u64, &Sha256),
        out: &mut W,
        out_path: &std::path::Path,
    ) -> Result<Fetched> {
        use tokio::io::AsyncWriteExt;
        let Some(result) = self.fetch(key, GetOptions::default()).await? else {
            return Ok(Fetched::Missing);
        };
        let sealed = self.crypt().is_some() && kind != Kind::Part;
        let stored = if sealed {
            sealed::sealed_len(size)
        } else {
            size
        };
        let mut unsealer = sealed.then(|| Unsealer::new(size));
        let (mut hasher, mut read, mut plain) = (Hasher::default(), 0u64, 0u64);
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error(e))?;
            read += chunk.len() as u64;
            if read > stored {
                return Ok(Fetched::TooLarge);
            }
            let opened = match &mut unsealer {
                Some(unsealer) => match unsealer.feed(self, (kind, key.as_ref()), &chunk).await? {
                    Ok(opened) => opened,
                    Err(why) => return Ok(Fetched::Damaged(why)),
                },
                None => chunk.to_vec(),
            };
            plain += opened.len() as u64;
            hasher.update(&opened);
            out.write_all(&opened)
                .await
                .map_err(|e| Error::io(out_path, e))?;
        }
        out.flush().await.map_err(|e| Error::io(out_path, e))?;
        let whole = unsealer.as_ref().is_none_or(Unsealer::done) && read == stored;
        let actual = hasher.finish();
        match whole && actual == *sha256 {
            true => Ok(Fetched::Intact),
            false => Ok(Fetched::Differs {
                bytes: plain,
                sha256: actual,
            }),
        }
    }

    /// What ranged reads of the object at `key` (of `size` bytes of content)
    /// need; for a sealed object its header is read first (one small GET),
    /// and an object of another size is refused before anything else is read.
    pub(crate) async fn range_key(
        &self,
        (kind, key): (Kind, &Path),
        size: u64,
    ) -> Result<std::result::Result<RangeKey, RangeFetched>> {
        let stored = self.stored_len(size);
        if self.crypt().is_none() {
            return Ok(Ok(RangeKey { stored, key: None }));
        }
        let options = GetOptions::default().with_range(Some(GetRange::Bounded(0..HEADER_LEN)));
        let Some(result) = self.fetch(key, options).await? else {
            return Ok(Err(RangeFetched::Missing));
        };
        if result.meta.size != stored {
            return Ok(Err(RangeFetched::ObjectSize(result.meta.size)));
        }
        let bytes = result.bytes().await.map_err(|e| self.error(e))?;
        let header = match Header::parse(&bytes) {
            Ok(header) => header,
            Err(why) => return Ok(Err(RangeFetched::Damaged(why))),
        };
        match self.object_key(&header, (kind, key.as_ref())).await {
            Ok(object) => Ok(Ok(RangeKey {
                stored,
                key: Some(object),
            })),
            Err(e @ Error::Manifest { .. }) => Ok(Err(RangeFetched::Damaged(e.to_string()))),
            Err(e) => Err(e),
        }
    }

    /// Writes bytes `range` of the content of the object at `key` into `file`
    /// at the same offsets (not hashed here: the caller hashes the whole file
    /// once every range is in). The object must be as long as `opened` says,
    /// and the range must come back whole; otherwise what was found is
    /// returned and nothing past the range is written.
    pub(crate) async fn read_range_into(
        &self,
        key: &Path,
        opened: &RangeKey,
        range: Range<u64>,
        (size, file, out_path): (u64, &std::fs::File, &std::path::Path),
    ) -> Result<RangeFetched> {
        let wanted = match &opened.key {
            None => range.clone(),
            Some(_) => {
                let chunks = sealed::chunks_of(&range, size);
                let first = sealed::chunk_range(chunks.start, size).start;
                first..sealed::chunk_range(chunks.end - 1, size).end
            }
        };
        let options = GetOptions::default().with_range(Some(GetRange::Bounded(wanted.clone())));
        let Some(result) = self.fetch(key, options).await? else {
            return Ok(RangeFetched::Missing);
        };
        if result.meta.size != opened.stored {
            return Ok(RangeFetched::ObjectSize(result.meta.size));
        }
        let mut writer = RangeWriter {
            opened,
            size,
            at: wanted.start,
            end: wanted.end,
            index: wanted.start.saturating_sub(HEADER_LEN) / sealed::SEALED_CHUNK,
            buffer: BytesMut::new(),
            written: range.start,
            target: (file, out_path),
        };
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error(e))?;
            if let Some(stop) = writer.take(&chunk)? {
                return Ok(stop);
            }
        }
        Ok(writer.finish())
    }
}

/// Writes a range's bytes as they stream in: as they are, or — sealed —
/// each chunk opened first and its plaintext written at its offset.
struct RangeWriter<'a> {
    opened: &'a RangeKey,
    size: u64,
    /// Offset in the stored object of the next byte to come.
    at: u64,
    end: u64,
    /// The sealed chunk the buffer begins.
    index: u64,
    buffer: BytesMut,
    /// Plaintext written up to here.
    written: u64,
    target: (&'a std::fs::File, &'a std::path::Path),
}

impl RangeWriter<'_> {
    fn take(&mut self, chunk: &[u8]) -> Result<Option<RangeFetched>> {
        use std::os::unix::fs::FileExt;
        if self.at + chunk.len() as u64 > self.end {
            return Ok(Some(RangeFetched::ObjectSize(self.at + chunk.len() as u64)));
        }
        self.at += chunk.len() as u64;
        let (file, path) = self.target;
        let Some(key) = &self.opened.key else {
            // A page-cache write: short enough for the async worker.
            file.write_all_at(chunk, self.written)
                .map_err(|e| Error::io(path, e))?;
            self.written += chunk.len() as u64;
            return Ok(None);
        };
        self.buffer.extend_from_slice(chunk);
        let last = sealed::chunks(self.size) - 1;
        loop {
            let sealed_range = sealed::chunk_range(self.index, self.size);
            let len = (sealed_range.end - sealed_range.start) as usize;
            if self.buffer.len() < len {
                return Ok(None);
            }
            let mut sealed_chunk = self.buffer.split_to(len);
            let plain = match key.open_chunk(self.index, self.index == last, &mut sealed_chunk) {
                Ok(plain) => plain,
                Err(why) => return Ok(Some(RangeFetched::Damaged(why))),
            };
            let offset = self.index * sealed::CHUNK;
            file.write_all_at(plain, offset)
                .map_err(|e| Error::io(path, e))?;
            self.written = offset + plain.len() as u64;
            self.index += 1;
        }
    }

    fn finish(self) -> RangeFetched {
        match self.at == self.end && self.buffer.is_empty() {
            true => RangeFetched::Written,
            false => RangeFetched::Short(self.written),
        }
    }
}
