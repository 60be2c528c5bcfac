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
    /// The patterns of `files` parsed (before anything is read); the paths
    /// of its records come later, from the database.
    fn new(files: &FileSelection) -> Result<Self> {
        let parse = |patterns: &[String]| -> Result<Vec<PathPattern>> {
            patterns
                .iter()
                .map(|p| PathPattern::parse(p).map_err(Error::Usage))
                .collect()
        };
        let (include, exclude, records) = match files {
            FileSelection::Matching(m) => (
                parse(&m.include)?,
                parse(&m.exclude)?,
                !m.records.is_empty(),
            ),
            _ => (Vec::new(), Vec::new(), false),
        };
        Ok(Self {
            everything: include.is_empty() && !records,
            include,
            exclude,
            of_records: BTreeMap::new(),
        })
    }

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
    // Everything that can be refused is, before anything is read.
    let mut filter = Filter::new(&options.files)?;
    let records = match &options.files {
        FileSelection::Matching(m) if !m.records.is_empty() => {
            Some((m.records.as_slice(), record_reader(header, options)?))
        }
        _ => None,
    };
    let root = match wants_files {
        true => Some(blob_root(header, options)?.ok_or_else(|| needs_blob_root(header))?),
        false => None,
    };
    if options.database {
        require_empty(&options.db_dir)?;
    }
    // Records are read from the staged database: in the target, or — when
    // the database is not restored — in a scratch directory.
    let scratch = (!options.database)
        .then(|| scratch_dir("record"))
        .transpose()?;
    let db_target = match &scratch {
        Some(scratch) => scratch.path().join("db"),
        None => options.db_dir.clone(),
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
    if options.database || records.is_some() {
        let is_db = |entry: &Entry| matches!(entry, Entry::Db(_));
        fail_on(fetch.run(is_db, Vec::new(), 0).await?, |count| {
            format!("restore of {id} failed: {count} corrupt or missing database file(s); nothing was placed")
        })?;
    }
    if let Some((keys, reader)) = records {
        let open_options = options.open_options.clone();
        filter.of_records = reader.paths(&stages.db.path, open_options, keys).await?;
    }
    if stages.external.is_some() {
        let selected =
            |entry: &Entry| matches!(entry, Entry::External(e) if filter.selects(&e.path));
        fail_on(fetch.run(selected, Vec::new(), 1).await?, |count| {
            format!(
                "restore of {id} failed: {count} corrupt or missing object(s); nothing was placed"
            )
        })?;
    }
    let mut report = staged_report(&stages, header, &filter, options)?;
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

/// What was staged, and the selected records' files the backup lacks; a
/// selection that named nothing is an error.
fn staged_report(
    stages: &Stages,
    header: &Header,
    filter: &Filter,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let mut report = stages.report(header);
    if let Some(external) = &stages.external {
        report.unrestorable = not_in_backup(filter, &external.path);
        if report.external_files == 0 && report.unrestorable.is_empty() {
            let id = &header.backup_id;
            return Err(Error::Usage(format!(
                "no external file of backup {id} matches the selection; `rockup ls {id}` lists them"
            )));
        }
    }
    if !options.database {
        // Downloaded to read records, not restored.
        (report.db_files, report.db_bytes) = (0, 0);
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

/// How the records of a backup are read for their references.
struct RecordReader {
    backup: String,
    column_family: String,
    extractor: std::sync::Arc<dyn crate::common::references::ReferenceExtractor>,
}

/// The reader of `header`'s records, or why `--record` cannot work there.
fn record_reader(header: &Header, options: &RestoreOptions) -> Result<RecordReader> {
    let backup = header.backup_id.to_string();
    let (column_family, extractor) = check::extractor(header, options).ok_or_else(|| {
        Error::Usage(format!(
            "backup {backup} records no built-in reference resolver: --record needs the \
             application's extractor (library: RestoreOptions::extractor)"
        ))
    })?;
    Ok(RecordReader {
        backup,
        column_family,
        extractor,
    })
}

impl RecordReader {
    /// The paths the records at `keys` reference in the database staged at
    /// `db_dir`, each with its record's key; a key with no record is an
    /// error.
    async fn paths(
        self,
        db_dir: &Path,
        open_options: Option<rocksdb::Options>,
        keys: &[Vec<u8>],
    ) -> Result<BTreeMap<String, String>> {
        let (db_dir, keys) = (db_dir.to_path_buf(), keys.to_vec());
        blocking(move || {
            let (db, _) = open_checkpoint(&db_dir, open_options)?;
            let (id, column_family) = (&self.backup, &self.column_family);
            let cf = db.cf_handle(column_family).ok_or_else(|| {
                Error::manifest(id, format!("its database has no column family {column_family:?}"))
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
                let references = self.extractor.extract(&key, &value).map_err(|why| {
                    Error::Usage(format!("the record at {shown} holds no valid reference: {why}"))
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
