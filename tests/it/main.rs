//! Integration tests of the storage engine, one module per area.

mod bad_input;
mod cli;
mod common;
mod concurrency;
mod crash;
mod faults;
mod gc;
mod layers;
mod model;
mod store_basic;
