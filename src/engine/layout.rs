//! Where actor files live in the data dir, how a new one is put there,
//! and bringing a data dir written with the earlier layout into this one.
//!
//! An actor's file is `actors/<ab>/<sha256(id)>.db`: one level of 256
//! directories. The first layout had two levels (`actors/ab/cd/…`), 65,536
//! leaf directories; below a few million actors nearly each actor had a
//! directory of its own, so directories took about 3.5 KiB of every tiny
//! actor's 11.5 KiB, and creating an actor often meant two `mkdir`s. With
//! one level a million actors put about 7,800 entries (file and WAL) in
//! each directory; ext4 hashes directory entries, and at 200,000 actors
//! cold opens measured the same in both layouts (`bench/README.md`).

use crate::actor_id::ActorId;
use crate::error::EngineError;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Present once the data dir's actors are all in this layout.
const MARK: &str = "layout-2";

/// `data/actors/ab/<sha256>.db`: never derived from the raw ID.
pub fn actor_path(data_dir: &Path, id: &ActorId) -> PathBuf {
    let stem = id.file_stem();
    data_dir
        .join("actors")
        .join(&stem[0..2])
        .join(format!("{stem}.db"))
}

/// Moves every file of the two-level layout up into its `ab/` directory
/// and marks the data dir done. Runs at start-up, under the data dir's
/// lock and before anything opens an actor, so an interrupted move simply
/// runs again: until the mark is written, no file is read in either place.
pub fn upgrade(data_dir: &Path) -> Result<(), EngineError> {
    let actors = data_dir.join("actors");
    fs::create_dir_all(&actors)?;
    if actors.join(MARK).exists() {
        return Ok(());
    }
    let mut moved = 0u64;
    for top in subdirectories(&actors)? {
        let leaves = subdirectories(&top)?;
        for leaf in &leaves {
            for entry in fs::read_dir(leaf)? {
                let entry = entry?;
                fs::rename(entry.path(), top.join(entry.file_name()))?;
                moved += 1;
            }
        }
        if leaves.is_empty() {
            continue;
        }
        // The new names are on disk before the emptied directories go.
        fsync_dir(&top)?;
        for leaf in &leaves {
            fs::remove_dir(leaf)?;
        }
        fsync_dir(&top)?;
    }
    // Every directory an actor can go in, with its entry made durable now:
    // a new actor then syncs only its own directory (which also writes that
    // directory's inode), never the ones above it.
    for top in 0..=255u8 {
        fs::create_dir_all(actors.join(hex::encode([top])))?;
    }
    fs::File::create(actors.join(MARK))?.sync_all()?;
    fsync_dir(&actors)?;
    fsync_dir(data_dir)?;
    if moved > 0 {
        tracing::info!(files = moved, "moved actor files into the one-level layout");
    }
    Ok(())
}

/// Puts a new actor's file at `file`: `image` (an empty actor, see
/// `store::new_actor_image`) written to `temp` on the same file system,
/// synced and renamed into place, so that after a crash the file is whole
/// or absent. Letting SQLite make it instead switched each new file to WAL
/// through a rollback journal: three more fsyncs, and a file created and
/// deleted, per new actor.
pub fn lay_new_file(file: &Path, image: &[u8], temp: &Path) -> Result<(), EngineError> {
    // A WAL left behind by a crash in the middle of a delete would be
    // replayed onto the new file.
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut stale = file.as_os_str().to_owned();
        stale.push(suffix);
        match fs::remove_file(stale) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.into()),
            _ => {}
        }
    }
    let written = fs::File::create(temp).and_then(|mut out| {
        out.write_all(image)?;
        out.sync_data()
    });
    let placed = written.map_err(EngineError::from).and_then(|()| {
        let made = crate::store::create_parent_dirs(file)?;
        fs::rename(temp, file)?;
        crate::store::sync_new_entry(file, made)
    });
    if placed.is_err() {
        let _ = fs::remove_file(temp);
    }
    placed
}

fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>, EngineError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            found.push(entry.path());
        }
    }
    Ok(found)
}

fn fsync_dir(dir: &Path) -> Result<(), EngineError> {
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::Precondition;
    use crate::{Durability, Engine, EngineConfig};
    use futures::executor::block_on;

    fn open(dir: &tempfile::TempDir) -> Engine {
        Engine::open(EngineConfig {
            data_dir: dir.path().to_path_buf(),
            durability: Durability::Durable,
            ..Default::default()
        })
        .unwrap()
    }

    fn value(engine: &Engine, id: &ActorId) -> Option<Vec<u8>> {
        read(engine, id, "k")
    }

    fn read(engine: &Engine, id: &ActorId, key: &str) -> Option<Vec<u8>> {
        block_on(engine.kv_get(id, key.into()))
            .unwrap()
            .map(|entry| entry.value)
    }

    fn put(engine: &Engine, id: &ActorId, key: &str, value: &[u8]) {
        let put = engine.kv_put(id, key.into(), value.to_vec(), Precondition::None, None);
        block_on(put).unwrap();
    }

    fn wal_of(file: &Path) -> PathBuf {
        let mut wal = file.as_os_str().to_owned();
        wal.push("-wal");
        PathBuf::from(wal)
    }

    #[test]
    fn a_wal_left_by_an_interrupted_delete_is_not_replayed_onto_a_new_actor() {
        let dir = tempfile::tempdir().unwrap();
        let id = ActorId::parse("deleted-then-made-again").unwrap();
        let engine = open(&dir);
        put(&engine, &id, "old", b"deleted");
        let file = engine.inner.actor_file(&id);
        let wal = fs::read(wal_of(&file)).unwrap();
        assert!(!wal.is_empty(), "the WAL holds the put");
        assert!(block_on(engine.destroy(&id)).unwrap());
        drop(engine);
        // The delete removed the file, then the process died before it
        // removed the WAL.
        fs::write(wal_of(&file), &wal).unwrap();

        let engine = open(&dir);
        put(&engine, &id, "new", b"made again");
        assert_eq!(read(&engine, &id, "old"), None);
        assert_eq!(read(&engine, &id, "new"), Some(b"made again".to_vec()));
    }

    #[test]
    fn a_new_file_left_unlabelled_by_a_crash_is_labelled_by_its_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let id = ActorId::parse("laid-but-never-labelled").unwrap();
        let engine = open(&dir);
        // The crash came between the rename and the first commit.
        let file = engine.inner.actor_file(&id);
        engine.inner.lay_new_file(&file).unwrap();
        assert_eq!(value(&engine, &id), None);
        put(&engine, &id, "k", b"v");
        drop(engine);
        let engine = open(&dir);
        assert_eq!(value(&engine, &id), Some(b"v".to_vec()));
    }

    /// Every file below `dir`, as (path relative to `dir`, bytes).
    fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut found = Vec::new();
        for top in subdirectories(dir).unwrap() {
            for entry in fs::read_dir(&top).unwrap() {
                let path = entry.unwrap().path();
                let relative = path.strip_prefix(dir).unwrap().to_path_buf();
                found.push((relative, fs::read(&path).unwrap()));
            }
        }
        found
    }

    #[test]
    fn a_two_level_data_dir_moves_up_even_after_an_interrupted_move() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<ActorId> = (0..40)
            .map(|i| ActorId::parse(&format!("layout-{i}")).unwrap())
            .collect();
        // A crash image: the actors' files and WALs copied while the engine
        // still has them open, their last commits only in the WALs.
        let engine = open(&dir);
        for (i, id) in ids.iter().enumerate() {
            let put = engine.kv_put(id, "k".into(), vec![i as u8; 3], Precondition::None, None);
            block_on(put).unwrap();
        }
        let image = files(&dir.path().join("actors"));
        drop(engine);
        let wal_frames = image
            .iter()
            .filter(|(path, bytes)| path.to_string_lossy().ends_with("-wal") && !bytes.is_empty())
            .count();
        assert_eq!(wal_frames, ids.len(), "every WAL holds a commit");

        // Laid out as the first layout had them, half of the actors caught
        // by a crash mid-move: the WAL already up, the file still below.
        let actors = dir.path().join("actors");
        fs::remove_dir_all(&actors).unwrap();
        for (n, (relative, bytes)) in image.iter().enumerate() {
            let name = relative.file_name().unwrap().to_string_lossy().into_owned();
            let top = actors.join(relative.parent().unwrap());
            let moved_already = name.ends_with("-wal") && n % 4 == 1;
            let place = if moved_already {
                top
            } else {
                top.join(&name[2..4])
            };
            fs::create_dir_all(&place).unwrap();
            fs::write(place.join(&name), bytes).unwrap();
        }
        assert!(subdirectories(&actors)
            .unwrap()
            .iter()
            .all(|top| !subdirectories(top).unwrap().is_empty()));

        let engine = open(&dir);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(value(&engine, id), Some(vec![i as u8; 3]), "{id}");
        }
        drop(engine);
        for top in subdirectories(&actors).unwrap() {
            assert!(subdirectories(&top).unwrap().is_empty(), "{top:?}");
        }
        assert!(actors.join(MARK).exists());

        // Done once: a later start finds the mark and reads the same.
        let engine = open(&dir);
        assert_eq!(value(&engine, &ids[7]), Some(vec![7; 3]));
    }
}
