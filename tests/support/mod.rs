//! Helpers shared by integration tests. Each test crate uses a different subset.
#![allow(dead_code)]

pub mod backed_up;
pub mod cli;
pub mod hold;
pub mod lifecycle;
pub mod minimal;
