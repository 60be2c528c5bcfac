//! Taking back part of a backup: the database alone (`--db-only`), or only
//! the external files a selection names (`--include`/`--exclude` patterns,
//! the files the records at `--record` keys reference), with or without the
//! database (`--no-db`). The files go into a blob root that may hold others:
//! they are staged and verified as a whole restore's are, then merged in file
//! by file (`stage`), never over an existing file without `overwrite`, never
//! through a symlink. Records are read from the backup's database, staged in
//! the database directory or, with `--no-db`, in a scratch directory that is
//! removed at the end (the database files are downloaded either way).

use std::collections::BTreeMap;
use std::path::Path;

use super::stage::{place_all, Staging};
use super::{
    blob_root, check, fail_on, needs_blob_root, require_empty, set_db_mode, Content, Fetch,
    FileSelection, RestoreOptions, RestoreReport, Stages,
};
use crate::common::glob::PathPattern;
use crate::common::names::{display_key, normalize_relative_path};
use crate::common::rocks::open_checkpoint;
use crate::common::spool::scratch_dir;
use crate::common::tasks::blocking;
use crate::error::{Error, Problem, Result};
use crate::repo::manifest::{Entry, Header};
use crate::repo::Repository;

/// Which external files a partial restore takes.
struct Filter {
    include: Vec<PathPattern>,
    exclude: Vec<PathPattern>,
    /// Paths the selected records reference, each with its record's key.
    of_records: BTreeMap<String, String>,
    /// Every file unless excluded (no pattern or record names one).
    everything: bool,
}

impl Filter {
    fn selects(&self, path: &str) -> bool {
        let named = self.everything
            || self.of_records.contains_key(path)
            || self.include.iter().any(|p| p.matches(path));
        named && !self.exclude.iter().any(|p| p.matches(path))
    }
}

/// Restores the part of `header`'s backup that `options` selects.
pub(super) async fn restore_part(
    repo: &Repository,
    options: &RestoreOptions,
    header: &Header,
) -> Result<RestoreReport> {
    let wants_files = options.files != FileSelection::None;
    if !options.database && !wants_files {
        return Err(Error::Usage(
            "--no-db and --db-only together restore nothing; give one of them".into(),
        ));
    }
    let records = match &options.files {
        FileSelection::Matching(m) => m.records.as_slice(),
        _ => &[],
    };
    let root = match wants_files {
        true => Some(blob_root(header, options)?.ok_or_else(|| needs_blob_root(header))?),
        false => None,
    };
    // Records are read from the staged database: in the target, or — when
    // the database is not restored — in a scratch directory.
    let scratch = scratch_dir("record")?;
    let db_target = match options.database {
        true => {
            require_empty(&options.db_dir)?;
            options.db_dir.clone()
        }
        false => scratch.path().join("db"),
    };
    let id = header.backup_id.as_str();
    let stages = Stages {
        db: Staging::create(&db_target, id)?,
        external: root
            .as_deref()
            .map(|r| Staging::create(r, id))
            .transpose()?,
        tally: Default::default(),
    };
    let content = Content::load(repo).await?;
    let fetch = Fetch {
        repo,
        header,
        stages: &stages,
        content: &content,
        jobs: options.jobs,
    };
    if options.database || !records.is_empty() {
        let is_db = |entry: &Entry| matches!(entry, Entry::Db(_));
        fail_on(fetch.run(is_db, Vec::new(), 0).await?, |count| {
            format!("restore of {id} failed: {count} corrupt or missing database file(s); nothing was placed")
        })?;
    }
    let filter = filter(header, options, &stages.db.path, records).await?;
    let mut report = stages.report(header);
    if let Some(external) = &stages.external {
        let selected =
            |entry: &Entry| matches!(entry, Entry::External(e) if filter.selects(&e.path));
        fail_on(fetch.run(selected, Vec::new(), 1).await?, |count| {
            format!(
                "restore of {id} failed: {count} corrupt or missing object(s); nothing was placed"
            )
        })?;
        report = stages.report(header);
        report.unrestorable = not_in_backup(&filter, &external.path);
        if report.external_files == 0 && report.unrestorable.is_empty() {
            return Err(Error::Usage(format!(
                "no external file of backup {id} matches the selection; `rockup ls {id}` lists them"
            )));
        }
    }
    if !options.database {
        (report.db_files, report.db_bytes) = (0, 0);
    }
    place(stages, options, header)?;
    if options.database {
        let checks = check::Checks {
            header,
            blob_root: None,
            replayed: None,
        };
        let problems = check::check_restored(repo, checks, options, &mut report).await?;
        fail_on(problems, |count| {
            format!("restored database of {id} failed its checks ({count} problem(s))")
        })?;
    }
    Ok(report)
}

/// Places the database (when restored) into its empty target, then merges
/// the files into the blob root; a failed merge removes the database again.
fn place(stages: Stages, options: &RestoreOptions, header: &Header) -> Result<()> {
    let Stages { db, external, .. } = stages;
    let placed = match options.database {
        true => place_all(vec![db])?,
        false => Vec::new(),
    };
    if let Some(external) = external {
        if let Err(e) = external.merge(options.overwrite) {
            placed.iter().for_each(|p| p.roll_back());
            return Err(e);
        }
    }
    if let Some(db) = placed.first() {
        set_db_mode(header, db, &options.db_dir)?;
    }
    Ok(())
}

/// The filter `options` asks for, with the paths its records reference.
async fn filter(
    header: &Header,
    options: &RestoreOptions,
    db_dir: &Path,
    records: &[Vec<u8>],
) -> Result<Filter> {
    let parse = |patterns: &[String]| -> Result<Vec<PathPattern>> {
        patterns
            .iter()
            .map(|p| PathPattern::parse(p).map_err(Error::Usage))
            .collect()
    };
    let (include, exclude) = match &options.files {
        FileSelection::Matching(m) => (parse(&m.include)?, parse(&m.exclude)?),
        _ => (Vec::new(), Vec::new()),
    };
    let of_records = match records.is_empty() {
        true => BTreeMap::new(),
        false => referenced_by(header, options, db_dir, records).await?,
    };
    Ok(Filter {
        everything: include.is_empty() && records.is_empty(),
        include,
        exclude,
        of_records,
    })
}

/// The paths the records at `keys` reference in the database staged at
/// `db_dir`, each with its record's key; a key with no record is an error.
async fn referenced_by(
    header: &Header,
    options: &RestoreOptions,
    db_dir: &Path,
    keys: &[Vec<u8>],
) -> Result<BTreeMap<String, String>> {
    let id = header.backup_id.to_string();
    let (column_family, extractor) = check::extractor(header, options).ok_or_else(|| {
        Error::Usage(format!(
            "backup {id} records no built-in reference resolver: --record needs the \
             application's extractor (library: RestoreOptions::extractor)"
        ))
    })?;
    let (db_dir, open_options, keys) = (
        db_dir.to_path_buf(),
        options.open_options.clone(),
        keys.to_vec(),
    );
    blocking(move || {
        let (db, _) = open_checkpoint(&db_dir, open_options)?;
        let cf = db.cf_handle(&column_family).ok_or_else(|| {
            Error::manifest(
                &id,
                format!("its database has no column family {column_family:?}"),
            )
        })?;
        let mut paths = BTreeMap::new();
        for key in keys {
            let shown = display_key(&key);
            let value = db
                .get_cf(&cf, &key)
                .map_err(|e| Error::rocks(format!("record {shown}"), e))?
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "backup {id} has no record at key {shown} in column family {column_family}"
                    ))
                })?;
            let references = extractor.extract(&key, &value).map_err(|why| {
                Error::Usage(format!(
                    "the record at {shown} holds no valid reference: {why}"
                ))
            })?;
            for reference in references {
                let path = normalize_relative_path(&reference.path).map_err(|why| {
                    Error::Usage(format!(
                        "the record at {shown} references {:?}: {why}",
                        reference.path
                    ))
                })?;
                paths.insert(path, shown.clone());
            }
        }
        Ok(paths)
    })
    .await
}

/// The files the selected records reference that the backup does not hold
/// (it could not capture them): reported, not failed.
fn not_in_backup(filter: &Filter, staged: &Path) -> Vec<Problem> {
    filter
        .of_records
        .iter()
        .filter(|(path, _)| filter.selects(path) && !staged.join(path).is_file())
        .map(|(path, key)| {
            Problem::missing(path.clone(), "the backup holds no file at this path")
                .in_record(key.clone())
        })
        .collect()
}
