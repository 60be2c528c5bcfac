"""Trials of `rockup backup --db` against an application rockup's code has no part in:
a Python process writing through rocksdict (its own RocksDB build) holds the
database open and writes continuously; each backup is restored with the rockup CLI
and checked with rocksdict. Run by scripts/held-trials-rocksdict.sh.

  python held_trials_rocksdict.py ROCKUP_BINARY TRIALS
  python held_trials_rocksdict.py --writer DB FILES     (the application)
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from rocksdict import AccessType, Options, Rdict, WriteBatch

WINDOW = 100  # the record of step i - WINDOW is deleted at step i, its file right after
# The writer flushes "files" every FLUSH_EVERY steps and "meta" every 1.5 times
# that; smaller values make SSTs and WALs come and go faster.
FLUSH_EVERY = int(os.environ.get("ROCKUP_TRIALS_FLUSH_EVERY", "700"))


def file_path(step):
    return f"d{step % 16}/f-{step}.bin"


def file_content(step):
    return hashlib.sha256(str(step).encode()).digest() * (10 + step % 90)


def writer(db_path, files):
    opt = Options(raw_mode=True)
    opt.create_if_missing(True)
    opt.create_missing_column_families(True)
    opt.set_write_buffer_size(128 << 10)
    opt.set_max_total_wal_size(512 << 10)
    opt.set_level_zero_file_num_compaction_trigger(2)
    db = Rdict(db_path, opt, column_families={"files": opt, "meta": opt})
    files_cf = db.get_column_family_handle("files")
    meta_cf = db.get_column_family_handle("meta")
    files_view, meta_view = db.get_column_family("files"), db.get_column_family("meta")
    step = 0
    while True:
        data = file_content(step)
        path = os.path.join(files, file_path(step))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        record = {"path": file_path(step), "size": len(data),
                  "sha256": hashlib.sha256(data).hexdigest()}
        batch = WriteBatch(raw_mode=True)
        batch.put(f"file:{step:08}".encode(), json.dumps(record).encode(), files_cf)
        batch.put(b"step", str(step).encode(), meta_cf)
        batch.put(f"seq:{step:08}".encode(), step.to_bytes(8, "little"))
        if step >= WINDOW:
            batch.delete(f"file:{step - WINDOW:08}".encode(), files_cf)
        db.write(batch)
        if step >= WINDOW:
            os.remove(os.path.join(files, file_path(step - WINDOW)))
        if step % FLUSH_EVERY == 0:
            files_view.flush()
        if step % (FLUSH_EVERY * 3 // 2) == 0:
            meta_view.flush()
        if step == 2000:
            open(db_path + ".ready", "w").close()
        step += 1


def check(db_path, files, problems):
    """Returns (step, intact, reported) or raises if not one point in time."""
    opt = Options(raw_mode=True)
    db = Rdict(db_path, opt, access_type=AccessType.read_only())
    meta, files_cf = db.get_column_family("meta"), db.get_column_family("files")
    step = int(meta[b"step"])
    seq = [k for k in db.keys()]
    expected = [f"seq:{i:08}".encode() for i in range(step + 1)]
    if seq != expected:
        raise AssertionError(f"default has {len(seq)} keys, meta says step {step}")
    live = [k for k in files_cf.keys()]
    first = max(0, step - WINDOW + 1)
    if live != [f"file:{i:08}".encode() for i in range(first, step + 1)]:
        raise AssertionError(f"files has {len(live)} records at step {step}")
    for view in (meta, files_cf):
        view.close()
    db.close()
    reported = {p["path"] for p in problems if p["kind"] == "missing"}
    intact = missing = 0
    for i in range(first, step + 1):
        try:
            with open(os.path.join(files, file_path(i)), "rb") as f:
                if f.read() != file_content(i):
                    raise AssertionError(f"{file_path(i)} restored with other content")
                intact += 1
        except FileNotFoundError:
            if file_path(i) not in reported:
                raise AssertionError(f"{file_path(i)} neither restored nor reported")
            missing += 1
    return step, intact, missing


def trials(rockup, n):
    work = tempfile.mkdtemp(prefix="rockup-rocksdict-")
    db, files, repo = (os.path.join(work, d) for d in ("db", "files", "repo"))
    os.makedirs(files)
    app = subprocess.Popen([sys.executable, __file__, "--writer", db, files])
    try:
        while not os.path.exists(db + ".ready"):
            if app.poll() is not None:
                raise SystemExit("the rocksdict writer exited")
            time.sleep(0.02)
        committed, consistent, attempts = 0, 0, []
        missing = {True: [], False: []}
        for trial in range(n):
            prelink = trial % 2 == 0  # odd trials: --no-prelink, the baseline
            started = time.monotonic()
            backup = subprocess.run(
                [rockup, "backup", "--repo", repo, "--db", db, "--blob-root", files,
                 "--blob-cf", "files", "--blob-ref", "json:/path", "--blob-key-prefix", "file:",
                 "--blob-sha256", "json:/sha256", "--blob-size", "json:/size",
                 "--allow-missing-blobs", "--json"] + ([] if prelink else ["--no-prelink"]),
                capture_output=True, text=True)
            elapsed = time.monotonic() - started
            report = json.loads(backup.stdout)
            if backup.returncode not in (0, 3) or "header" not in report:
                print(f"trial {trial}: not committed: {report.get('error')}")
                continue
            committed += 1
            target = os.path.join(work, "restored")
            restore = subprocess.run(
                [rockup, "restore", "--repo", repo, "--backup", report["header"]["backup_id"],
                 "--db-dir", os.path.join(target, "db"), "--blob-root",
                 os.path.join(target, "files"), "--json"], capture_output=True, text=True)
            if restore.returncode != 0:
                raise SystemExit(f"trial {trial}: restore failed: {restore.stdout}")
            step, intact, lost = check(os.path.join(target, "db"), os.path.join(target, "files"),
                                       report["problems"])
            shutil.rmtree(target)
            consistent += 1
            missing[prelink].append(lost)
            attempts.append(report["checkpoint"]["attempts"])
            print(f"trial {trial} (pre-links {'on' if prelink else 'off'}): step {step}, {elapsed * 1000:.0f} ms, checkpoint attempts "
                  f"{attempts[-1]}, files intact {intact}, reported missing {lost}, rescued by "
                  f"pre-links {report['rescued_by_prelinks']}")
        print(f"rocksdict trials: {committed}/{n} committed; {consistent}/{committed} restored to one "
              f"point in time; checkpoint attempts max {max(attempts, default=0)}, mean "
              f"{sum(attempts) / max(len(attempts), 1):.2f}")
        for prelink, label in ((True, "with pre-links"), (False, "without pre-links (baseline)")):
            m = missing[prelink]
            print(f"  {label}: {len(m)} backups, external files reported missing per backup: "
                  f"mean {sum(m) / max(len(m), 1):.1f}, max {max(m, default=0)} (of {WINDOW} live)")
    finally:
        app.kill()
        app.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1] == "--writer":
        writer(sys.argv[2], sys.argv[3])
    else:
        trials(sys.argv[1], int(sys.argv[2]))
