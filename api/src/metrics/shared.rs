//! One scrape, every worker's numbers. Each process keeps its own counters
//! in memory, so a scrape that lands on one worker would see a fraction of
//! the service. Instead each process publishes its snapshot, once a second
//! and when it stops, as a file in a directory the master made; the worker
//! answering a scrape adds its live numbers to everyone else's files. When a
//! worker exits the master folds its counters into its own file and deletes
//! the worker's, so counts never go backwards and files do not pile up.
//!
//! A reader holds a shared lock on the directory while it reads, the master
//! an exclusive one while it folds, so no scrape sees a worker twice or not
//! at all. Each file is replaced by rename, so a half-written one is never
//! read. docs/observability.md has the whole picture.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::Snapshot;

const LOCK_FILE: &str = "lock";
const EXTENSION: &str = "json";

/// The directory where processes leave their snapshots. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedDir {
    path: PathBuf,
}

impl SharedDir {
    /// The master's: made fresh (a previous run's files are gone), private
    /// to this user.
    pub fn create(path: PathBuf) -> io::Result<SharedDir> {
        use std::os::unix::fs::DirBuilderExt;
        match fs::remove_dir_all(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)?;
        File::create(path.join(LOCK_FILE))?;
        Ok(SharedDir { path })
    }

    /// A worker's handle on the directory its master made.
    pub fn existing(path: PathBuf) -> SharedDir {
        SharedDir { path }
    }

    /// Where a master with this pid keeps its directory.
    pub fn default_path(master_pid: u32) -> PathBuf {
        std::env::temp_dir().join(format!("{}-metrics-{master_pid}", env!("CARGO_PKG_NAME")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces `owner`'s snapshot.
    pub fn publish(&self, owner: &str, snapshot: &Snapshot) -> io::Result<()> {
        let json = serde_json::to_vec(snapshot).map_err(io::Error::other)?;
        let staged = self.path.join(format!("{owner}.tmp"));
        fs::write(&staged, json)?;
        fs::rename(&staged, self.file(owner))
    }

    /// Everyone's snapshots added up, but `except`'s (the caller adds its
    /// own live numbers instead). A file that cannot be read is skipped.
    pub fn collect(&self, except: &str) -> io::Result<Snapshot> {
        let _lock = self.lock(FlockArg::LockShared)?;
        let mut total = Snapshot::default();
        for entry in fs::read_dir(&self.path)? {
            let path = entry?.path();
            let owner = path.file_stem().and_then(|stem| stem.to_str());
            let is_snapshot = path.extension().is_some_and(|ext| ext == EXTENSION);
            if !is_snapshot || owner == Some(except) {
                continue;
            }
            match read(&path) {
                Ok(snapshot) => total.merge(&snapshot),
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "skipping a metrics snapshot")
                }
            }
        }
        Ok(total)
    }

    /// For the master, once `gone` has exited: its counters join `kept`,
    /// which is then published as `keeper`'s, and its file is deleted.
    pub fn fold(&self, gone: &str, keeper: &str, kept: &mut Snapshot) -> io::Result<()> {
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let file = self.file(gone);
        match read(&file) {
            Ok(snapshot) => kept.merge(&snapshot.without_gauges()),
            // It died before its first publish: nothing to keep.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        self.publish(keeper, kept)?;
        match fs::remove_file(&file) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// For the master, on its way out.
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_dir_all(&self.path)
    }

    fn file(&self, owner: &str) -> PathBuf {
        self.path.join(format!("{owner}.{EXTENSION}"))
    }

    fn lock(&self, how: FlockArg) -> io::Result<Flock<File>> {
        let file = File::open(self.path.join(LOCK_FILE))?;
        Flock::lock(file, how).map_err(|(_, errno)| io::Error::from(errno))
    }
}

fn read(path: &Path) -> io::Result<Snapshot> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, Value};
    use super::*;

    fn counting(count: f64, busy: f64) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let number = Value::Number;
        snapshot.add("served_total", "Served.", Kind::Counter, &[], number(count));
        snapshot.add("busy", "Busy.", Kind::Gauge, &[], number(busy));
        snapshot
    }

    fn dir() -> (tempfile::TempDir, SharedDir) {
        let parent = tempfile::tempdir().unwrap();
        let shared = SharedDir::create(parent.path().join("metrics")).unwrap();
        (parent, shared)
    }

    #[test]
    fn a_scrape_adds_up_everyone_but_the_caller() {
        let (_parent, shared) = dir();
        shared.publish("1", &counting(2.0, 1.0)).unwrap();
        shared.publish("2", &counting(3.0, 1.0)).unwrap();
        shared.publish("3", &counting(100.0, 9.0)).unwrap();
        let others = shared.collect("3").unwrap();
        assert_eq!(others.number("served_total", &[]), Some(5.0));
        assert_eq!(others.number("busy", &[]), Some(2.0));
    }

    #[test]
    fn a_gone_worker_keeps_its_counts_but_not_its_gauges() {
        let (_parent, shared) = dir();
        let mut kept = Snapshot::default();
        shared.publish("7", &counting(4.0, 2.0)).unwrap();
        shared.fold("7", "master", &mut kept).unwrap();
        shared.publish("8", &counting(1.0, 1.0)).unwrap();
        shared.fold("8", "master", &mut kept).unwrap();
        let total = shared.collect("nobody").unwrap();
        assert_eq!(total.number("served_total", &[]), Some(5.0));
        assert_eq!(total.number("busy", &[]), None);
        let files = fs::read_dir(shared.path()).unwrap().count();
        assert_eq!(files, 2, "only the lock and the master's file are left");
    }

    #[test]
    fn a_worker_that_never_published_folds_to_nothing() {
        let (_parent, shared) = dir();
        let mut kept = counting(1.0, 0.0).without_gauges();
        shared.fold("9", "master", &mut kept).unwrap();
        assert_eq!(
            shared.collect("").unwrap().number("served_total", &[]),
            Some(1.0)
        );
    }

    #[test]
    fn creating_clears_a_previous_run() {
        let (parent, shared) = dir();
        shared.publish("1", &counting(2.0, 0.0)).unwrap();
        let again = SharedDir::create(parent.path().join("metrics")).unwrap();
        assert_eq!(again.collect("").unwrap(), Snapshot::default());
    }
}
