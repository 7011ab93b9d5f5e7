//! The `imgstore` binary.

mod cli;

fn main() {
    limit_malloc_arenas();
    std::process::exit(cli::run());
}

/// glibc's malloc gives threads their own arenas, up to eight per core,
/// and each keeps what was freed in it. The daemon's buffers (fetched
/// chunks, read batches) are made on one thread and freed on another, so
/// its footprint grew toward the sum of every arena's peak rather than
/// what is live: a copy onto a datacenter holding most of the image
/// peaked at 140-161 MiB of RSS with about 65 MiB of heap in use
/// (heaptrack). With two arenas, a full copy and then an update peaked at
/// 113-123 MiB, and ran no slower (`tools/bench-transfer.sh`).
/// `MALLOC_ARENA_MAX` in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter, and it runs
        // before this process has started any other thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
