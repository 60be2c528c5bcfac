//! Verification of committed backups. The quick check lists the repository once
//! per prefix (LIST, not one HEAD per object) and checks that every object a
//! manifest names exists with the recorded size; `--deep` downloads each distinct
//! object once and re-hashes it. Every problem is reported, not just the first.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Problem, ProblemKind, Result};
use crate::layout;
use crate::manifest::{self, DbFileEntry, ExternalEntry};
use crate::store::Repository;

/// What to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// A backup id, `latest` or `all`.
    pub backup: String,
    /// Download and re-hash every object.
    pub deep: bool,
    /// Downloads at once (deep).
    pub jobs: usize,
}

/// What verification found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub backups: Vec<String>,
    pub objects: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

/// Verifies one backup, the latest, or all of them.
pub async fn verify(repo: &Repository, options: &VerifyOptions) -> Result<VerifyReport> {
    repo.check_marker(false).await?;
    let ids = match options.backup.as_str() {
        "all" => manifest::committed_ids(repo).await?,
        id => vec![manifest::resolve(repo, id).await?],
    };
    let mut listed: HashMap<String, u64> = HashMap::new();
    for prefix in [layout::SST, layout::BLOBS, layout::BACKUPS] {
        listed.extend(
            repo.list(prefix)
                .await?
                .into_iter()
                .map(|m| (m.location.to_string(), m.size)),
        );
    }
    let mut problems = Vec::new();
    // object key -> (size, sha256), each object once across backups
    let mut objects: HashMap<String, (u64, String)> = HashMap::new();
    for id in &ids {
        let header = match manifest::load(repo, id).await {
            Ok(header) => header,
            Err(e) => {
                problems.push(corrupt(layout::manifest(id).to_string(), e.to_string()));
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
                add(
                    layout::external_blob(&e.sha256).to_string(),
                    e.size,
                    e.sha256,
                );
                Ok(())
            })
            .await;
        for result in [db, external] {
            if let Err(e) = result {
                problems.push(corrupt(layout::manifest(id).to_string(), e.to_string()));
            }
        }
    }
    let mut keys: Vec<_> = objects.keys().cloned().collect();
    keys.sort();
    for key in &keys {
        let (size, _) = &objects[key];
        match listed.get(key) {
            None => problems.push(Problem {
                kind: ProblemKind::MissingObject,
                path: key.clone(),
                record_key: None,
                detail: "object is missing".into(),
            }),
            Some(actual) if actual != size => problems.push(corrupt(
                key.clone(),
                format!("object has {actual} bytes, manifest says {size}"),
            )),
            Some(_) => {}
        }
    }
    if options.deep {
        let broken: HashSet<String> = problems.iter().map(|p| p.path.clone()).collect();
        let rehash = keys.iter().filter(|k| !broken.contains(*k)).map(|key| {
            let (_, sha256) = &objects[key];
            rehash(repo, key, sha256)
        });
        let found: Vec<Option<Problem>> = futures::stream::iter(rehash)
            .buffer_unordered(options.jobs.max(1))
            .try_collect()
            .await?;
        problems.extend(found.into_iter().flatten());
    }
    Ok(VerifyReport {
        backups: ids,
        objects: keys.len() as u64,
        bytes: objects.values().map(|(size, _)| size).sum(),
        problems,
    })
}

fn corrupt(path: String, detail: String) -> Problem {
    Problem {
        kind: ProblemKind::CorruptObject,
        path,
        record_key: None,
        detail,
    }
}

async fn rehash(repo: &Repository, key: &str, sha256: &str) -> Result<Option<Problem>> {
    let result = match repo.store().get(&ObjectPath::from(key)).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => {
            return Ok(Some(Problem {
                kind: ProblemKind::MissingObject,
                path: key.into(),
                record_key: None,
                detail: "object is missing".into(),
            }))
        }
        Err(e) => return Err(repo.error(e)),
    };
    let mut stream = result.into_stream();
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk.map_err(|e| repo.error(e))?);
    }
    let actual = hex::encode(hasher.finalize());
    Ok((actual != sha256).then(|| {
        corrupt(
            key.into(),
            format!("content hashes to {actual}, manifest says {sha256}"),
        )
    }))
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
