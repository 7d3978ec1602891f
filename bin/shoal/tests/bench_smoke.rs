//! `testnet/bench` in miniature (2 MiB, one run, 50 small objects), so the bench keeps
//! working: it must finish and print every figure. Its numbers are not checked.

mod common;

use std::process::Command;

use common::*;

#[test]
fn the_bench_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(repo().join("testnet/bench"))
        .env("SHOAL_BENCH_DIR", dir.path())
        .env("SHOAL_BIN_DIR", bin_dir())
        .env("SHOAL_BENCH_SIZES", "2")
        .env("SHOAL_BENCH_RUNS", "1")
        .env("SHOAL_BENCH_SMALL_COUNT", "50")
        .env("SHOAL_BENCH_WRITE", "0")
        .output()
        .unwrap();
    let table = stdout(&output);
    for figure in ["put 2 MiB", "get 2 MiB", "raw libp2p stream", "4 KiB puts", "4 KiB gets", "peak daemon RSS"] {
        assert!(table.contains(figure), "{figure} missing from:\n{table}");
    }
}
