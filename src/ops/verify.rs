//! Verification of committed backups. The quick check lists the repository once
//! per prefix (LIST, not one HEAD per object) and checks that every object a
//! manifest names exists with the recorded size; `--deep` downloads each distinct
//! object once and re-hashes it. Every problem is reported, not just the first.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use serde::Serialize;

use crate::error::{Error, Problem, Result};
use crate::repo::layout;
use crate::repo::manifest::{self, DbFileEntry, ExternalEntry};
use crate::repo::{Fetched, Repository, Traffic};

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

/// object key -> (size, sha256), each object once across backups
type Objects = HashMap<String, (u64, String)>;

/// Verifies one backup, the latest, or all of them.
pub async fn verify(repo: &Repository, options: &VerifyOptions) -> Result<VerifyReport> {
    let before = repo.traffic();
    repo.check_marker(false).await?;
    let ids = match options.backup.as_str() {
        "all" => manifest::committed_ids(repo).await?,
        id => vec![manifest::resolve(repo, id, options.source.as_deref()).await?],
    };
    let mut problems = Vec::new();
    let objects = referenced_objects(repo, &ids, &mut problems).await?;
    let mut keys: Vec<_> = objects.keys().cloned().collect();
    keys.sort();
    let listed = listed_sizes(repo).await?;
    for key in &keys {
        let (size, _) = &objects[key];
        match listed.get(key) {
            None => problems.push(Problem::missing_object(key)),
            Some(actual) if actual != size => problems.push(Problem::corrupt_object(
                key,
                format!("object has {actual} bytes, manifest says {size}"),
            )),
            Some(_) => {}
        }
    }
    if options.deep {
        let broken: HashSet<String> = problems.iter().map(|p| p.path.clone()).collect();
        let intact = keys.iter().filter(|k| !broken.contains(*k));
        problems.extend(rehash_all(repo, intact, &objects, options.jobs).await?);
    }
    Ok(VerifyReport {
        backups: ids,
        objects: keys.len() as u64,
        // Sizes come from manifests: a forged one must not overflow the sum.
        bytes: objects
            .values()
            .fold(0, |sum, (size, _)| sum.saturating_add(*size)),
        problems,
        traffic: repo.traffic().since(before),
    })
}

/// Object key → size of every object under the prefixes manifests point into.
async fn listed_sizes(repo: &Repository) -> Result<HashMap<String, u64>> {
    let mut listed = HashMap::new();
    for prefix in [layout::SST, layout::BLOBS, layout::BACKUPS] {
        listed.extend(
            repo.list(prefix)
                .await?
                .into_iter()
                .map(|m| (m.location.to_string(), m.size)),
        );
    }
    Ok(listed)
}

/// Every object the backups `ids` reference; unreadable manifests and parts
/// become problems.
async fn referenced_objects(
    repo: &Repository,
    ids: &[String],
    problems: &mut Vec<Problem>,
) -> Result<Objects> {
    let mut objects = Objects::new();
    for id in ids {
        let unreadable = |e: Error| Problem::corrupt_object(layout::manifest(id), e.to_string());
        let header = match manifest::read(repo, id).await {
            Ok(header) => header,
            Err(e) => {
                problems.push(unreadable(e));
                continue;
            }
        };
        let mut add = |key: String, size: u64, sha256: String| {
            objects.entry(key).or_insert((size, sha256));
        };
        let db: Result<()> = header
            .for_each_entry(repo, |e: DbFileEntry| {
                add(e.object, e.size, e.sha256);
                Ok(())
            })
            .await;
        let external: Result<()> = header
            .for_each_entry(repo, |e: ExternalEntry| {
                let key = layout::external_blob(&e.sha256).to_string();
                add(key, e.size, e.sha256);
                Ok(())
            })
            .await;
        problems.extend(
            [db, external]
                .into_iter()
                .filter_map(Result::err)
                .map(unreadable),
        );
    }
    Ok(objects)
}

/// Downloads and re-hashes each of `keys`, `jobs` at a time.
async fn rehash_all(
    repo: &Repository,
    keys: impl Iterator<Item = &String>,
    objects: &Objects,
    jobs: usize,
) -> Result<Vec<Problem>> {
    let keys: Vec<&String> = keys.collect();
    let bytes = keys
        .iter()
        .fold(0u64, |sum, k| sum.saturating_add(objects[*k].0));
    repo.progress().start(Some(keys.len() as u64), Some(bytes));
    let rehash = keys.into_iter().map(|key| {
        let (size, sha256) = &objects[key];
        async move {
            let found = rehash(repo, key, (*size, sha256)).await;
            repo.progress().advance(*size);
            found
        }
    });
    let found: Vec<Option<Problem>> = futures::stream::iter(rehash)
        .buffer_unordered(jobs.max(1))
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

async fn rehash(
    repo: &Repository,
    key: &str,
    (size, sha256): (u64, &str),
) -> Result<Option<Problem>> {
    let mut nothing = tokio::io::sink();
    let fetched = repo
        .read_verified(
            &ObjectPath::from(key),
            (size, sha256),
            &mut nothing,
            std::path::Path::new(key),
        )
        .await?;
    let detail = match fetched {
        Fetched::Intact => return Ok(None),
        Fetched::Missing => return Ok(Some(Problem::missing_object(key))),
        Fetched::TooLarge => format!("object has more than the {size} bytes its manifest says"),
        Fetched::Differs { sha256: actual, .. } => {
            format!("content hashes to {actual}, manifest says {sha256}")
        }
    };
    Ok(Some(Problem::corrupt_object(key, detail)))
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
