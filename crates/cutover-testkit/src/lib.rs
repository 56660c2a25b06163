//! Helpers the tests of cutover's crates share, so each test file keeps only what is its
//! own. A dev-dependency only: nothing here is part of cutover.

pub mod cmd;
pub mod fs;
pub mod net;
pub mod pg;
