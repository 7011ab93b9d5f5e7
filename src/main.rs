//! The `imgstore` binary.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
