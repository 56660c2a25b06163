//! Restore points: a consistent copy of a stack's data taken before an upgrade, and put back
//! when the upgrade is reverted.
//!
//! - [`postgres`]: the same-server copy (`CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY`)
//!   and the revert as an atomic rename swap, milliseconds for any size.
//! - [`sqlite`]: SQLite's online backup to a file; restore by atomic replace.
//! - [`archive`]: a directory (a Docker volume's mountpoint or a bind path) as tar+zstd with a
//!   blake3 checksum of every file, verified before it is swapped back in.
//! - [`manifest`]: what each restore point holds, on disk beside it, with checksums.

pub mod archive;
pub mod manifest;
pub mod pg_dump;
pub mod pg_tables;
pub mod postgres;
pub mod snapshot;
pub mod sqlite;
