//! The operations layer: the life of one change to a stack, between the plan (cutover-core)
//! and the command line.
//!
//! An operation takes the stack's lease — never on top of an unfinished one ([`lock`]) —
//! records its release and the context `resume` needs ([`record`]), puts a second person's
//! approval in front of a protected stack's plan ([`approval`]), runs the plan through the
//! engine with the step families as its executor ([`containers`] on a
//! [`ContainerRuntime`](cutover_core::runtime::ContainerRuntime)), and records how it ended
//! ([`conclude`]). `resume` and `abort` pick the operation to finish and where from
//! ([`resume`]); `rollback` picks its target ([`rollback`]).
//!
//! Nothing here prints or knows a terminal: every journal record is an event for an
//! [`Observer`](journal::Observer) ([`journal`]); rendering is the binary's.

pub mod approval;
pub mod checks;
pub mod conclude;
pub mod containers;
pub mod data;
pub mod journal;
pub mod labels;
pub mod lock;
pub mod operation;
pub mod promotion;
pub mod record;
pub mod resume;
pub mod rollback;
pub mod shapes;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod testing;
