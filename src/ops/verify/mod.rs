//! Verification of committed backups. The quick check lists the repository once
//! per prefix (LIST, not one HEAD per object) and checks that every object a
//! manifest names — directly, or as the pack its content is in, by the pack
//! indexes — exists with the recorded size; `--deep` (`deep`) downloads each
//! distinct object once and re-hashes it, and reads each pack once, decoding
//! and re-hashing every entry. Every problem is reported, not just the first.
//! Both sides of the comparison go into scratch spools in a temporary
//! directory, so memory stays flat however many objects there are.

mod deep;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use crate::common::spool::{scratch_dir, Spool};
use crate::error::{Error, Problem, Result};
use crate::repo::layout;
use crate::repo::manifest::{self, DbFileEntry, ExternalEntry, Stored};
use crate::repo::pack::{ContentIndex, Located};
use crate::repo::{Repository, Traffic};

/// What to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// A backup id, `latest` or `all`.
    pub backup: String,
    /// Whose `latest`: needed where the repository holds several sources.
    pub source: Option<String>,
    /// Download and re-hash every object.
    pub deep: bool,
    /// Downloads at once (deep).
    pub jobs: usize,
}

/// What verification found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The backups verified, by id.
    pub backups: Vec<String>,
    /// Distinct objects they reference.
    pub objects: u64,
    /// Bytes of those objects.
    pub bytes: u64,
    /// Everything found: missing, short or corrupt objects, unreadable manifests.
    pub problems: Vec<Problem>,
    /// Requests and bytes this run asked of the store.
    pub traffic: Traffic,
}

/// Referenced objects walked (and, deep, re-hashed) at a time.
const BATCH: usize = 1000;

/// What the manifests say one object is: its size and SHA-256, or, for a
/// pack (`sha256` absent), the size its index records.
#[derive(Serialize, Deserialize)]
struct Expected {
    size: u64,
    sha256: Option<String>,
}

/// The referenced objects (key → [`Expected`], each once across backups) and
/// the listed ones (key → size), in scratch spools: a million objects are
/// compared without sitting in memory.
struct Scratch {
    _dir: tempfile::TempDir,
    referenced: Spool,
    listed: Spool,
    content: ContentIndex,
    objects: u64,
    bytes: u64,
}

/// Verifies one backup, the latest, or all of them.
pub async fn verify(repo: &Repository, options: &VerifyOptions) -> Result<VerifyReport> {
    let before = repo.traffic();
    repo.check_marker(None).await?;
    let ids = match options.backup.as_str() {
        "all" => manifest::committed_ids(repo).await?,
        id => vec![manifest::resolve(repo, id, options.source.as_deref()).await?],
    };
    let mut scratch = Scratch::create(repo).await?;
    let mut problems = scratch.content.problems();
    record_references(repo, &ids, &mut scratch, &mut problems).await?;
    record_listing(repo, &scratch).await?;
    if options.deep {
        repo.progress()
            .start(Some(scratch.objects), Some(scratch.bytes));
    }
    let mut after: Option<String> = None;
    loop {
        let batch = scratch.referenced.batch_after(after.as_deref(), BATCH)?;
        let Some((last, _)) = batch.last() else { break };
        after = Some(last.clone());
        let intact = compare(batch, &scratch.listed, &mut problems)?;
        if options.deep {
            let found = deep::rehash_all(repo, intact, options.jobs, &scratch.content).await?;
            problems.extend(found);
        }
    }
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(VerifyReport {
        backups: ids,
        objects: scratch.objects,
        bytes: scratch.bytes,
        problems,
        traffic: repo.traffic().since(before),
    })
}

impl Scratch {
    async fn create(repo: &Repository) -> Result<Self> {
        let dir = scratch_dir("verify")?;
        Ok(Self {
            referenced: Spool::create(&dir.path().join("referenced"))?,
            listed: Spool::create(&dir.path().join("listed"))?,
            content: ContentIndex::load(repo, &dir.path().join("index"), false).await?,
            _dir: dir,
            objects: 0,
            bytes: 0,
        })
    }

    /// Records content a manifest names: the pack it is in, or its blob.
    fn reference_content(&mut self, sha256: String, size: u64) -> Result<()> {
        match self.content.locate(&sha256)? {
            Located::Packed(location) => {
                let key = layout::pack(&location.pack);
                self.reference(key.as_ref(), location.pack_size, None)
            }
            Located::Blob => {
                let key = layout::external_blob(&sha256);
                self.reference(key.as_ref(), size, Some(sha256))
            }
        }
    }

    /// Records an object a manifest names, once.
    fn reference(&mut self, key: &str, size: u64, sha256: Option<String>) -> Result<()> {
        if self.referenced.get(key)?.is_some() {
            return Ok(());
        }
        self.objects += 1;
        // Sizes come from manifests: a forged one must not overflow the sum.
        self.bytes = self.bytes.saturating_add(size);
        let expected = serde_json::to_vec(&Expected { size, sha256 }).expect("serializes");
        self.referenced.put(key, &expected)
    }
}

/// Checks a batch of referenced objects against the listing; returns the
/// ones found with their recorded size.
fn compare(
    batch: Vec<(String, Vec<u8>)>,
    listed: &Spool,
    problems: &mut Vec<Problem>,
) -> Result<Vec<(String, Expected)>> {
    let mut intact = Vec::new();
    for (key, value) in batch {
        let expected: Expected = serde_json::from_slice(&value).expect("our own scratch entries");
        let actual = listed
            .get(&key)?
            .map(|v| u64::from_le_bytes(v.try_into().expect("our own scratch entries: 8 bytes")));
        match actual {
            None => problems.push(Problem::missing_object(&key)),
            Some(size) if size != expected.size => problems.push(Problem::corrupt_object(
                &key,
                format!("object has {size} bytes, manifest says {}", expected.size),
            )),
            Some(_) => intact.push((key, expected)),
        }
    }
    Ok(intact)
}

/// Object key → size of every object under the prefixes manifests point
/// into, streamed from the listing.
async fn record_listing(repo: &Repository, scratch: &Scratch) -> Result<()> {
    let listed = &scratch.listed;
    for prefix in [layout::SST, layout::BLOBS, layout::BACKUPS] {
        let mut objects = repo.store().list(Some(&ObjectPath::from(prefix)));
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|e| repo.error(e))?;
            listed.put(meta.location.as_ref(), &meta.size.to_le_bytes())?;
        }
    }
    // Packs were listed once already, with the indexes that name them.
    for pack in scratch.content.packs.values() {
        listed.put(layout::pack(&pack.id).as_ref(), &pack.size.to_le_bytes())?;
    }
    Ok(())
}

/// Records every object the backups `ids` reference; unreadable manifests
/// and parts become problems.
async fn record_references(
    repo: &Repository,
    ids: &[String],
    scratch: &mut Scratch,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    for id in ids {
        let unreadable = |e: Error| Problem::corrupt_object(layout::manifest(id), e.to_string());
        let header = match manifest::read(repo, id).await {
            Ok(header) => header,
            Err(e) => {
                problems.push(unreadable(e));
                continue;
            }
        };
        let db: Result<()> = header
            .for_each_entry(repo, |e: DbFileEntry| match e.stored() {
                Stored::Object(key) => scratch.reference(key, e.size, Some(e.sha256.clone())),
                Stored::Content(_) => scratch.reference_content(e.sha256, e.size),
            })
            .await;
        let external: Result<()> = header
            .for_each_entry(repo, |e: ExternalEntry| {
                scratch.reference_content(e.sha256, e.size)
            })
            .await;
        for result in [db, external] {
            match result {
                Err(e @ Error::Rocks { .. }) => return Err(e),
                Err(e) => problems.push(unreadable(e)),
                Ok(()) => {}
            }
        }
    }
    Ok(())
}

impl VerifyReport {
    /// `Err(Problems)` when anything was found, for exit code 3.
    pub fn into_result(self) -> Result<Self> {
        if self.problems.is_empty() {
            return Ok(self);
        }
        Err(Error::Problems {
            summary: format!(
                "verification found {} problem(s) in {} backup(s)",
                self.problems.len(),
                self.backups.len()
            ),
            problems: self.problems,
        })
    }
}
