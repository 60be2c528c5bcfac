//! Verification of committed backups. Each backup is walked once
//! ([`Header::referenced`]: its parts, database files and external files),
//! and so are the segments `follow` shipped after it: each is read (its hash,
//! range and batches checked), the content of its files recorded, and a gap
//! in their sequence numbers reported — the continuity check of a source's
//! restorable range.
//! The quick check lists the repository once per prefix (LIST, not one HEAD
//! per object) and checks that every object the walk names — directly, or as
//! the pack its content is in, by the pack indexes — exists with the recorded
//! size; `--deep` (`deep`) downloads each distinct object once and re-hashes
//! it, and reads each pack once, decoding and re-hashing every entry;
//! `--read-data-subset` (`subset`) does so for a share of the objects. Every
//! problem is reported, not just the first. Damage (bytes that were read and
//! did not match, objects that are missing) is told apart from failure (the
//! store did not answer, through its retries): an object that could not be
//! read is `Unreadable` — exit code 4 when that is all — and never called
//! corrupt; after [`MAX_UNREADABLE`] of them verification stops, as the store
//! is failing. Both sides of the comparison go into scratch spools in a
//! temporary directory, so memory stays flat however many objects there are.

mod deep;
mod subset;

pub use subset::DataSubset;

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use crate::common::spool::{scratch_dir, Spool};
use crate::common::tasks::Jobs;
use crate::digest::Sha256;
use crate::error::{Error, Problem, ReadFailure, Result};
use crate::repo::crypto::sealed::Kind;
use crate::repo::ids::BackupId;
use crate::repo::layout;
use crate::repo::manifest::{self, Header, Referenced, Stored};
use crate::repo::pack::{ContentIndex, Located};
use crate::repo::segment::{self, Segment};
use crate::repo::{Repository, Traffic};

/// What to verify: [`VerifyOptions::default`] (the latest backup, quickly),
/// then the fields that differ (see the crate docs).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// A backup id, `latest` or `all`.
    pub backup: String,
    /// Whose `latest`: needed where the repository holds several sources.
    pub source: Option<String>,
    /// Download and re-hash every object.
    pub deep: bool,
    /// Downloads at once (deep).
    pub jobs: Jobs,
    /// Without `deep`: read and re-hash this share of the objects.
    pub read_data_subset: Option<DataSubset>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            backup: "latest".into(),
            source: None,
            deep: false,
            jobs: Jobs::from(8),
            read_data_subset: None,
        }
    }
}

/// What verification found.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The backups verified, by id.
    pub backups: Vec<BackupId>,
    /// Distinct objects they reference.
    pub objects: u64,
    /// Bytes of those objects.
    pub bytes: u64,
    /// Objects read and re-hashed (every one with `deep`, a share with a
    /// data subset, none otherwise).
    pub read_objects: u64,
    /// Their bytes.
    pub read_bytes: u64,
    /// Everything found: missing, short, corrupt or unreadable objects,
    /// unreadable manifests.
    pub problems: Vec<Problem>,
    /// Why verification stopped before it checked everything, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Requests and bytes this run asked of the store.
    pub traffic: Traffic,
}

/// Referenced objects walked (and, deep, re-hashed) at a time.
const BATCH: usize = 1000;

/// Objects that could not be read before verification stops: the store is
/// failing, and every further read would wait out its retries.
pub const MAX_UNREADABLE: usize = 100;

/// What the manifests say one object is: its size as stored and — but for
/// a pack, which its index describes — what it holds.
#[derive(Serialize, Deserialize)]
struct Expected {
    size: u64,
    content: Option<Holds>,
}

/// What an object holds: content of this size and SHA-256, sealed as `kind`
/// in an encrypted repository.
#[derive(Serialize, Deserialize)]
struct Holds {
    kind: Kind,
    size: u64,
    sha256: Sha256,
}

/// The referenced objects (key → [`Expected`], each once across backups) and
/// the listed ones (key → size), in scratch spools: a million objects are
/// compared without sitting in memory.
struct Scratch {
    _dir: tempfile::TempDir,
    referenced: Spool<String, Expected>,
    listed: Spool<String, u64>,
    content: ContentIndex,
    objects: u64,
    bytes: u64,
}

/// Verifies one backup, the latest, or all of them.
pub async fn verify(repo: &Repository, options: &VerifyOptions) -> Result<VerifyReport> {
    let before = repo.traffic();
    repo.check_marker(None).await?;
    repo.require_full_key("verify")?;
    let ids = match options.backup.as_str() {
        "all" => manifest::committed_ids(repo).await?,
        id => vec![manifest::resolve(repo, id, options.source.as_deref()).await?],
    };
    let mut scratch = Scratch::create(repo).await?;
    let mut problems = scratch.content.problems();
    let failing = Failing::default();
    for id in &ids {
        record_references(repo, id, &mut scratch, &failing, &mut problems).await?;
    }
    record_listing(repo, &scratch).await?;
    let chooser = options.read_data_subset.map(|s| s.chooser(scratch.bytes));
    match (options.deep, &chooser) {
        (true, _) => repo
            .progress()
            .start(Some(scratch.objects), Some(scratch.bytes)),
        (false, Some(_)) => repo.progress().start(None, None),
        (false, None) => {}
    }
    let (mut read_objects, mut read_bytes) = (0, 0);
    let mut after: Option<String> = None;
    while !failing.exhausted() {
        let batch = scratch.referenced.batch_after(after.as_ref(), BATCH)?;
        let Some((last, _)) = batch.last() else { break };
        after = Some(last.clone());
        let intact = compare(batch, &scratch.listed, &mut problems)?;
        let read: Vec<_> = match (options.deep, &chooser) {
            (true, _) => intact,
            (false, Some(chooser)) => intact
                .into_iter()
                .filter(|(k, _)| chooser.reads(k))
                .collect(),
            (false, None) => Vec::new(),
        };
        read_objects += read.len() as u64;
        let sizes = read
            .iter()
            .fold(0u64, |sum, (_, e)| sum.saturating_add(e.size));
        read_bytes = sizes.saturating_add(read_bytes);
        let (content, jobs) = (&scratch.content, options.jobs);
        problems.extend(deep::rehash_all(repo, read, jobs, content, &failing).await?);
    }
    let stopped = failing.exhausted().then(|| {
        format!(
            "{MAX_UNREADABLE} objects could not be read: the store is failing; verify again later"
        )
    });
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(VerifyReport {
        backups: ids,
        objects: scratch.objects,
        bytes: scratch.bytes,
        read_objects,
        read_bytes,
        problems,
        stopped,
        traffic: repo.traffic().since(before),
    })
}

/// Objects the store failed to return, counted across the run: once there
/// are [`MAX_UNREADABLE`], no more reads are made.
#[derive(Default)]
pub(super) struct Failing(AtomicUsize);

impl Failing {
    /// Whether verification should stop reading.
    pub fn exhausted(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= MAX_UNREADABLE
    }

    /// The problem a failed read of `key` is: damage, or an object the store
    /// did not return (counted); other failures stop verification.
    pub fn problem(&self, key: &str, error: Error) -> Result<Problem> {
        match error.read_failure() {
            ReadFailure::Damaged => Ok(Problem::corrupt_object(key, error.to_string())),
            ReadFailure::Unreadable => {
                self.0.fetch_add(1, Ordering::Relaxed);
                Ok(Problem::unreadable(key, &error))
            }
            ReadFailure::Other => Err(error),
        }
    }
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

    /// Records what a backup needs: its object, or the pack or content
    /// object its content is in.
    fn reference_needed(&mut self, repo: &Repository, needed: Referenced) -> Result<()> {
        let holds = Holds {
            kind: needed.kind(),
            size: needed.size,
            sha256: needed.sha256,
        };
        let stored = needed.object_size(repo);
        match needed.stored {
            Stored::Object(key) => self.reference(key.as_ref(), stored, Some(holds)),
            Stored::Content => self.reference_content(repo, holds, stored),
        }
    }

    /// Records the pack or content object (of `stored` bytes) holding content.
    fn reference_content(&mut self, repo: &Repository, holds: Holds, stored: u64) -> Result<()> {
        match self.content.locate(&holds.sha256)? {
            Located::Packed(location) => {
                let key = layout::pack(location.pack);
                self.reference(key.as_ref(), location.pack_size, None)
            }
            Located::Object => {
                let key = repo.content_key(&holds.sha256);
                self.reference(key.as_ref(), stored, Some(holds))
            }
        }
    }

    /// Records the content of the files a segment names.
    fn reference_segment(&mut self, repo: &Repository, segment: &Segment) -> Result<()> {
        for file in &segment.header.files {
            let holds = Holds {
                kind: Kind::Content,
                size: file.size,
                sha256: file.sha256,
            };
            self.reference_content(repo, holds, repo.stored_len(file.size))?;
        }
        Ok(())
    }

    /// Records an object a manifest names, once.
    fn reference(&mut self, key: &str, size: u64, content: Option<Holds>) -> Result<()> {
        let key = key.to_string();
        if self.referenced.contains(&key)? {
            return Ok(());
        }
        self.objects += 1;
        // Sizes come from manifests: a forged one must not overflow the sum.
        self.bytes = self.bytes.saturating_add(size);
        self.referenced.put(&key, &Expected { size, content })
    }
}

/// Checks a batch of referenced objects against the listing; returns the
/// ones found with their recorded size.
fn compare(
    batch: Vec<(String, Expected)>,
    listed: &Spool<String, u64>,
    problems: &mut Vec<Problem>,
) -> Result<Vec<(String, Expected)>> {
    let mut intact = Vec::new();
    for (key, expected) in batch {
        match listed.get(&key)? {
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
    for prefix in [layout::TABLES, repo.content_prefix(), layout::BACKUPS] {
        let mut objects = repo.store().list(Some(&ObjectPath::from(prefix)));
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|e| repo.error(e))?;
            listed.put(&meta.location.to_string(), &meta.size)?;
        }
    }
    // Packs were listed once already, with the indexes that name them.
    for pack in scratch.content.packs.values() {
        listed.put(&layout::pack(pack.id).to_string(), &pack.size)?;
    }
    Ok(())
}

/// Records every object backup `id` references; an unreadable manifest or
/// part is a problem.
async fn record_references(
    repo: &Repository,
    id: &BackupId,
    scratch: &mut Scratch,
    failing: &Failing,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    let key = layout::manifest(id).to_string();
    if failing.exhausted() {
        return Ok(());
    }
    let header: Header = match manifest::read(repo, id).await {
        Ok(header) => header,
        Err(e) => {
            problems.push(failing.problem(&key, e)?);
            return Ok(());
        }
    };
    let mut walk = std::pin::pin!(header.referenced(repo));
    while let Some(needed) = walk.next().await {
        match needed {
            Ok(needed) => scratch.reference_needed(repo, needed)?,
            Err(e) => problems.push(failing.problem(&key, e)?),
        }
    }
    record_segments(repo, &header, scratch, failing, problems).await
}

/// Reads (and so checks) every segment a restore of `header`'s base
/// may read, records the content its files need, and reports where the
/// segments stop continuing each other.
async fn record_segments(
    repo: &Repository,
    header: &Header,
    scratch: &mut Scratch,
    failing: &Failing,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    let segments = segment::list(repo, Some(&header.backup_id)).await?;
    let start = header.sequence_number + 1;
    let reach = segment::reach(&segments, start);
    if let Some(beyond) = segments.iter().find(|s| s.first > reach + 1) {
        problems.push(Problem::corrupt_object(
            beyond.key().to_string(),
            format!(
                "no segment holds sequence number {} of base {}: restores stop at {reach}",
                reach + 1,
                header.backup_id
            ),
        ));
    }
    for at in segment::plan(&segments, start, reach).unwrap_or_default() {
        if failing.exhausted() {
            break;
        }
        match segment::read(repo, &at).await {
            Ok(read) => scratch.reference_segment(repo, &read)?,
            Err(e) => problems.push(failing.problem(at.key().as_ref(), e)?),
        }
    }
    Ok(())
}

impl VerifyReport {
    /// `Err(Problems)` when anything was found: exit code 3, or 4 when the
    /// only problems are objects that could not be read.
    pub fn into_result(self) -> Result<Self> {
        if self.problems.is_empty() {
            return Ok(self);
        }
        let stopped = self
            .stopped
            .as_ref()
            .map(|why| format!("; stopped early: {why}"))
            .unwrap_or_default();
        Err(Error::Problems {
            summary: format!(
                "verification found {} problem(s) in {} backup(s){stopped}",
                self.problems.len(),
                self.backups.len()
            ),
            problems: self.problems,
        })
    }
}
