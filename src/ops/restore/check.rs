//! After placement: the restored database opened read-only reaches the backup's
//! sequence number, and every record's reference resolves to a restored regular
//! file (references the backup recorded as problems are reported, not failed).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use crate::common::names::{display_key, normalize_relative_path};
use crate::common::references::ReferenceExtractor;
use crate::common::rocks::open_checkpoint;
use crate::common::tasks::blocking;
use crate::error::{Problem, Result};
use crate::repo::manifest::Header;
use crate::repo::Repository;
use crate::source::{for_each_reference, ExternalFiles};

use super::point::Replayed;
use super::{RestoreOptions, RestoreReport};

/// What a restore is checked against: the backup, where its files went, and
/// the segments replayed after it.
pub(super) struct Checks<'a> {
    pub header: &'a Header,
    pub blob_root: Option<&'a Path>,
    pub replayed: Option<&'a Replayed>,
}

/// Opens the restored database and checks its sequence number and references.
pub(super) async fn check_restored(
    repo: &Repository,
    checks: Checks<'_>,
    options: &RestoreOptions,
    report: &mut RestoreReport,
) -> Result<Vec<Problem>> {
    let Checks {
        header,
        blob_root,
        replayed,
    } = checks;
    let mut known: HashSet<String> = header
        .entries::<Problem>(repo)
        .await?
        .into_iter()
        .map(|p| p.path)
        .collect();
    known.extend(
        replayed
            .iter()
            .flat_map(|r| r.problems.iter().map(|p| p.path.clone())),
    );
    let files = external_files(header, options, blob_root);
    let db_dir = options.db_dir.clone();
    let open_options = options.open_options.clone();
    let expected = replayed.map_or(header.sequence_number, |r| r.reached);
    let found = blocking(move || {
        let (db, _) = open_checkpoint(&db_dir, open_options)?;
        let mut problems = Vec::new();
        let reached = db.latest_sequence_number();
        if reached != expected {
            problems.push(Problem::corrupt_object(
                db_dir.display().to_string(),
                format!(
                    "restored database is at sequence number {reached}, the backup at {expected}"
                ),
            ));
        }
        let mut found = Found {
            problems,
            checked: 0,
            unrestorable: Vec::new(),
        };
        if let Some(files) = files {
            check_references(&db, &files, &known, &mut found)?;
        }
        Ok(found)
    })
    .await?;
    report.references_checked = found.checked;
    report.unrestorable = found.unrestorable;
    Ok(found.problems)
}

/// How to find the restored records' references: the caller's extractor, or
/// the built-in one the manifest recorded.
pub(super) fn external_files(
    header: &Header,
    options: &RestoreOptions,
    blob_root: Option<&Path>,
) -> Option<ExternalFiles> {
    let (column_family, extractor) = extractor(header, options)?;
    Some(ExternalFiles {
        blob_root: blob_root?.to_path_buf(),
        column_family,
        extractor,
    })
}

/// The column family whose records reference external files, and how to
/// read their references: the caller's extractor, or the built-in one the
/// manifest recorded.
pub(super) fn extractor(
    header: &Header,
    options: &RestoreOptions,
) -> Option<(String, Arc<dyn ReferenceExtractor>)> {
    let info = header.external.as_ref()?;
    let extractor = options.extractor.clone().or_else(|| {
        let resolver = info.resolver.clone()?;
        Some(Arc::new(resolver) as Arc<dyn ReferenceExtractor>)
    })?;
    Some((info.column_family.clone(), extractor))
}

/// What the checks found.
struct Found {
    problems: Vec<Problem>,
    checked: u64,
    unrestorable: Vec<Problem>,
}

/// Checks that every reference resolves to a restored regular file, except
/// those the backup recorded as problems (`known`), which are listed as
/// unrestorable.
fn check_references(
    db: &rocksdb::DB,
    files: &ExternalFiles,
    known: &HashSet<String>,
    found: &mut Found,
) -> Result<()> {
    for_each_reference(db, files, |key, item| {
        let Ok(reference) = item else {
            return true; // recorded as invalid at backup time
        };
        found.checked += 1;
        let Ok(path) = normalize_relative_path(&reference.path) else {
            return true;
        };
        let restored = std::fs::symlink_metadata(files.blob_root.join(&path));
        if restored.is_ok_and(|m| m.is_file()) {
            return true;
        }
        let (list, why) = match known.contains(&path) {
            true => (
                &mut found.unrestorable,
                "the backup could not capture it (see its problems)",
            ),
            false => (
                &mut found.problems,
                "referenced by a restored record but not restored",
            ),
        };
        list.push(Problem::missing(path, why).in_record(display_key(key)));
        true
    })?;
    Ok(())
}
