//! Integration tests, one module per area: the engine, then the IMGAPI
//! daemon over real HTTP.

mod bad_input;
mod cli;
mod client;
mod clone;
mod clone_crash;
mod common;
mod compat;
mod concurrency;
mod crash;
mod daemon;
mod faults;
mod gc;
mod image_cli;
mod imgapi_http;
mod layers;
mod load;
mod metrics;
mod model;
mod ops_cli;
mod power_loss;
mod procs;
mod reads;
mod recompress;
mod request_fuzz;
mod seaweed;
mod soak;
mod store_basic;
mod tables;
mod tier;
mod transfer;
mod triton_cli;
mod uploads;
mod visibility;
mod xdc;
mod xdc_crash;
