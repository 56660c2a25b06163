//! The heart of cutover: the stack file and its validated spec, the plan, and the engine that
//! runs it step by step.
//!
//! **Architecture invariant:** this crate deliberately knows nothing of Docker, PostgreSQL or
//! HTTP. It describes *what* to do; adapters in other crates do it.

pub mod engine;
pub mod graph;
pub mod plan;
pub mod runtime;
pub mod settings;
pub mod spec;
pub mod traffic;
