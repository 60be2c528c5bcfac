//! `verify --deep`: every referenced object downloaded once and re-hashed;
//! every referenced pack read once (one ranged GET over its entries) and each
//! entry decoded and re-hashed against its index. A read the store fails is
//! an unreadable object, not a corrupt one.

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;

use super::{Expected, Failing, Holds};
use crate::common::tasks::Jobs;
use crate::error::{Problem, Result};
use crate::repo::ids::PackId;
use crate::repo::layout;
use crate::repo::pack::index::MAX_ENTRIES;
use crate::repo::pack::reader::{self, Wanted};
use crate::repo::pack::ContentIndex;
use crate::repo::{Fetched, Repository};

/// Downloads and re-hashes each of `objects`, `jobs` at a time; none once
/// the store has failed too often (`failing`).
pub(super) async fn rehash_all(
    repo: &Repository,
    objects: Vec<(String, Expected)>,
    jobs: Jobs,
    content: &ContentIndex,
    failing: &Failing,
) -> Result<Vec<Problem>> {
    let rehash = objects.into_iter().map(|(key, expected)| async move {
        if failing.exhausted() {
            return Ok(vec![]);
        }
        let found = match (&expected.content, layout::parse_pack_key(&key)) {
            (Some(holds), _) => rehash(repo, &key, holds, failing).await,
            (None, Some(pack)) => rehash_pack(repo, (pack, expected.size), content, failing).await,
            (None, None) => unreachable!("only packs are recorded without what they hold"),
        };
        repo.progress().advance(expected.size);
        found
    });
    let found: Vec<Vec<Problem>> = futures::stream::iter(rehash)
        .buffer_unordered(jobs.get())
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

async fn rehash(
    repo: &Repository,
    key: &str,
    holds: &Holds,
    failing: &Failing,
) -> Result<Vec<Problem>> {
    let mut nothing = tokio::io::sink();
    let (size, sha256) = (holds.size, &holds.sha256);
    let fetched = repo
        .read_verified(
            (holds.kind, &ObjectPath::from(key)),
            (size, sha256),
            &mut nothing,
            std::path::Path::new(key),
        )
        .await;
    let detail = match fetched {
        Err(e) => return Ok(vec![failing.problem(key, e)?]),
        Ok(Fetched::Intact) => return Ok(vec![]),
        Ok(Fetched::Missing) => return Ok(vec![Problem::missing_object(key)]),
        Ok(Fetched::TooLarge) => format!("object has more than the {size} bytes its manifest says"),
        Ok(Fetched::Differs { sha256: actual, .. }) => {
            format!("content hashes to {actual}, manifest says {sha256}")
        }
        Ok(Fetched::Damaged(why)) => why,
    };
    Ok(vec![Problem::corrupt_object(key, detail)])
}

/// Reads pack `id` once and checks every entry its index lists; a pack the
/// store fails to return is one unreadable object.
async fn rehash_pack(
    repo: &Repository,
    (id, pack_size): (PackId, u64),
    content: &ContentIndex,
    failing: &Failing,
) -> Result<Vec<Problem>> {
    let key = layout::pack(id).to_string();
    let entries = content.entries_of(id, None, MAX_ENTRIES)?;
    let wanted = entries
        .into_iter()
        .map(|entry| Wanted { entry, target: () });
    let mut problems = Vec::new();
    for range in reader::ranges(wanted.collect(), u64::MAX) {
        let read = reader::read_range(repo, id, pack_size, range, |wanted, frame| async move {
            Ok(reader::open_entry_of(repo, wanted.entry, frame)
                .await?
                .err())
        })
        .await;
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                problems.push(failing.problem(&key, e)?);
                break;
            }
        };
        let damaged = read.delivered.into_iter().flatten();
        problems.extend(damaged.map(|why| Problem::corrupt_object(&key, why)));
        problems.extend(read.failed.map(|failed| failed.problem(&key)));
    }
    Ok(problems)
}
