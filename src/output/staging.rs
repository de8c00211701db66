//! Atomic output folders: everything is written into a staging folder beside `--out`
//! (`.<name>.partial-<pid>`), and only a complete result is renamed into place. A failed or
//! interrupted run removes its staging folder; an existing `--out` is refused unless overwriting
//! is asked for, and then replaced in one rename. While a run stages, it holds an exclusive lock
//! on `.<name>.lock` beside the target, so a second run into the same folder is refused instead
//! of racing the first; staging folders left by killed runs into the same target are removed by
//! the next run, which holds the lock.

use std::path::{Path, PathBuf};

/// Output failure (exit code 5).
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: output folder exists (use --overwrite to replace it)")]
    Exists { path: PathBuf },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: another stochseg run is writing this output folder")]
    Locked { path: PathBuf },
}

/// A failure to write or read back the per-pass spill files in the staging folder.
pub fn spill_error(staging: &Staging, e: std::io::Error) -> OutputError {
    OutputError::Io {
        path: staging.dir().to_path_buf(),
        reason: format!("per-pass spill file: {e}"),
    }
}

fn io_error(path: &Path, e: std::io::Error) -> OutputError {
    OutputError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// A staging folder that becomes `target` on `commit`, and is removed when dropped uncommitted.
#[derive(Debug)]
pub struct Staging {
    target: PathBuf,
    dir: PathBuf,
    overwrite: bool,
    committed: bool,
    lock: Option<(std::fs::File, PathBuf)>,
}

/// Refuses early when `target` exists and may not be replaced.
pub fn check_target(target: &Path, overwrite: bool) -> Result<(), OutputError> {
    if target.exists() && !overwrite {
        return Err(OutputError::Exists {
            path: target.to_path_buf(),
        });
    }
    Ok(())
}

impl Staging {
    pub fn new(target: &Path, overwrite: bool) -> Result<Staging, OutputError> {
        check_target(target, overwrite)?;
        let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        create_parent(&parent)?;
        let lock = take_lock(&parent.join(format!(".{name}.lock")), target)?;
        remove_abandoned(&parent, name);
        let dir = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        }
        std::fs::create_dir(&dir).map_err(|e| io_error(&dir, e))?;
        Ok(Staging {
            target: target.to_path_buf(),
            dir,
            overwrite,
            committed: false,
            lock: Some(lock),
        })
    }

    /// The staging folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a file inside the staging folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> Result<(), OutputError> {
        let path = self.file(name);
        std::fs::write(&path, contents).map_err(|e| self.relabel(io_error(&path, e)))
    }

    /// An error about a file in the staging folder, renamed to where that file was headed
    /// (`--out/<file>`): the staging folder is gone once the run has failed.
    pub fn relabel(&self, e: OutputError) -> OutputError {
        match e {
            OutputError::Io { path, reason } => OutputError::Io {
                path: match path.strip_prefix(&self.dir) {
                    Ok(rest) => self.target.join(rest),
                    Err(_) => path,
                },
                reason,
            },
            other => other,
        }
    }

    /// Moves the finished folder into place.
    pub fn commit(mut self) -> Result<PathBuf, OutputError> {
        if self.target.exists() {
            if !self.overwrite {
                return Err(OutputError::Exists {
                    path: self.target.clone(),
                });
            }
            let old = self.dir.with_extension("replaced");
            std::fs::rename(&self.target, &old).map_err(|e| io_error(&self.target, e))?;
            std::fs::rename(&self.dir, &self.target).map_err(|e| io_error(&self.target, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| io_error(&old, e))?;
        } else {
            std::fs::rename(&self.dir, &self.target).map_err(|e| io_error(&self.target, e))?;
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if let Some((file, path)) = self.lock.take() {
            let _ = std::fs::remove_file(&path);
            drop(file);
        }
    }
}

/// Creates the folder that will hold the output folder, naming a file in the way plainly.
fn create_parent(parent: &Path) -> Result<(), OutputError> {
    if let Some(file) = parent
        .ancestors()
        .find(|a| a.exists())
        .filter(|a| !a.is_dir())
    {
        return Err(OutputError::Io {
            path: file.to_path_buf(),
            reason: "is not a folder, so the output folder cannot be created in it".to_string(),
        });
    }
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))
}

/// Opens and exclusively locks `path`; refuses when another process holds it.
fn take_lock(path: &Path, target: &Path) -> Result<(std::fs::File, PathBuf), OutputError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    match file.try_lock() {
        Ok(()) => Ok((file, path.to_path_buf())),
        Err(std::fs::TryLockError::WouldBlock) => Err(OutputError::Locked {
            path: target.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error(path, e)),
    }
}

/// Removes the `.<name>.partial-<pid>` folders of earlier runs into the same target: called
/// with the target's lock held, so none of them belongs to a live run, whatever host it ran on
/// (on a cluster's shared file system the pid says nothing about another node's processes).
fn remove_abandoned(parent: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let staged = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if staged {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_staging_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("case1");
        {
            let s = Staging::new(&target, false).unwrap();
            s.write("report.yaml", "x").unwrap();
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn second_writer_is_refused_and_abandoned_staging_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("case1");
        // staging folders of killed runs: a pid beyond pid_max, and one that is alive here
        // (pid 1) as another node's pid may be on a shared file system
        let stale = [".case1.partial-4294967", ".case1.partial-1"].map(|n| tmp.path().join(n));
        let other = tmp.path().join(".case10.partial-4294967");
        for dir in stale.iter().chain([&other]) {
            std::fs::create_dir(dir).unwrap();
        }
        let first = Staging::new(&target, false).unwrap();
        assert!(stale.iter().all(|d| !d.exists()));
        assert!(
            other.exists(),
            "another target's staging folder is not this run's to remove"
        );
        assert!(matches!(
            Staging::new(&target, true),
            Err(OutputError::Locked { .. })
        ));
        drop(first);
        assert!(Staging::new(&target, false).is_ok());
    }

    #[test]
    fn commit_and_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("case1");
        let s = Staging::new(&target, false).unwrap();
        s.write("a", "1").unwrap();
        s.commit().unwrap();
        assert!(matches!(
            Staging::new(&target, false),
            Err(OutputError::Exists { .. })
        ));
        let s = Staging::new(&target, true).unwrap();
        s.write("b", "2").unwrap();
        s.commit().unwrap();
        assert!(!target.join("a").exists() && target.join("b").exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
