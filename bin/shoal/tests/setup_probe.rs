//! The README's commands install what building needs on a fresh Debian machine, and the
//! test suite what its testnet of hosts and its TLS example need. Their probes
//! (`missing_system_packages`, `missing_host_packages`, `missing_test_packages` in
//! `testnet/lib.sh`) run here against file trees laid out like
//! such machines, not against this one's, whatever it has installed.

use std::path::Path;
use std::process::Command;

/// What the build's probe asks apt-get for on a machine whose root is `root`.
fn missing(root: &Path) -> Vec<String> {
    probe("missing_system_packages", root)
}

/// What `probe` asks apt-get for on a machine whose root is `root`.
fn probe(probe: &str, root: &Path) -> Vec<String> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testnet/lib.sh");
    let output = Command::new("bash")
        .arg("-c")
        .arg(r#"source "$1" && "$2" "$3""#)
        .arg("probe")
        .arg(lib)
        .arg(probe)
        .arg(root)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_owned).collect()
}

fn tree(files: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for file in files {
        let path = root.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
        if file.contains("bin/") {
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
    }
    root
}

/// The project's fresh image: g++, LLVM 14's runtime and `libclang-cpp14`, which is
/// another library than the libclang bindgen loads, and no clang.
const FRESH_IMAGE: &[&str] = &[
    "usr/bin/c++",
    "usr/lib/llvm-14/lib/libLLVM-14.so",
    "usr/lib/llvm-14/lib/libclang-cpp.so.14",
    "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14",
    "usr/lib/x86_64-linux-gnu/libLLVM-14.so.1",
];

#[test]
fn a_fresh_image_gets_clang_and_libclang_dev() {
    assert_eq!(missing(tree(FRESH_IMAGE).path()), ["clang", "libclang-dev"]);
}

#[test]
fn a_versioned_runtime_libclang_alone_is_not_enough() {
    // libclang1-14 ships only `libclang-14.so.1`, which the build-time search skips.
    let root = tree(&[FRESH_IMAGE, &["usr/bin/clang", "usr/lib/llvm-14/lib/libclang-14.so.1"]].concat());
    assert_eq!(missing(root.path()), ["libclang-dev"]);
}

#[test]
fn after_the_install_nothing_is_missing() {
    // What `apt-get install clang libclang-dev` adds on Debian 12.
    let root = tree(
        &[FRESH_IMAGE, &["usr/bin/clang", "usr/lib/llvm-14/lib/libclang.so", "usr/lib/llvm-14/lib/libclang-14.so"]]
            .concat(),
    );
    assert!(missing(root.path()).is_empty());
}

#[test]
fn a_machine_without_a_cpp_compiler_gets_g_plus_plus() {
    let root = tree(&["usr/bin/clang", "usr/lib/llvm-14/lib/libclang.so"]);
    assert_eq!(missing(root.path()), ["g++"]);
}

#[test]
fn a_fresh_image_gets_iptables_for_the_testnet_of_hosts() {
    // The fresh image has iproute2 (`ip` in /usr/sbin and /usr/bin) and no iptables.
    let fresh = tree(&[FRESH_IMAGE, &["usr/sbin/ip", "usr/bin/ip"]].concat());
    assert_eq!(probe("missing_host_packages", fresh.path()), ["iptables"]);
    let installed = tree(&[FRESH_IMAGE, &["usr/sbin/ip", "usr/sbin/iptables"]].concat());
    assert!(probe("missing_host_packages", installed.path()).is_empty());
    let bare = tree(FRESH_IMAGE);
    assert_eq!(probe("missing_host_packages", bare.path()), ["iproute2", "iptables"]);
}

#[test]
fn a_fresh_image_gets_nginx_for_the_tls_example() {
    // The fresh image has curl and openssl, and no web server.
    let fresh = tree(&[FRESH_IMAGE, &["usr/bin/curl", "usr/bin/openssl"]].concat());
    assert_eq!(probe("missing_test_packages", fresh.path()), ["nginx"]);
    let installed = tree(&[FRESH_IMAGE, &["usr/bin/curl", "usr/bin/openssl", "usr/sbin/nginx"]].concat());
    assert!(probe("missing_test_packages", installed.path()).is_empty());
}
