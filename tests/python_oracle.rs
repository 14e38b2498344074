//! The Python test suite as a test oracle for `cargo mutants`.
//!
//! Most of what guards data in the core (claims, endings, migrations, restores) is SQL sent to
//! a real PostgreSQL, and the tests that can tell a right answer from a wrong one are the
//! pytest suite's, which `cargo test` cannot run. This test builds the extension from the tree
//! it is compiled in (so a mutant's tree yields the mutant's extension), puts it in front of
//! the installed wheel and runs the pytest files named by `$JOB_MANAGER_ORACLE_TESTS` with the
//! interpreter `$JOB_MANAGER_ORACLE_PYTHON`. It is `#[ignore]`d: plain `cargo test` never runs
//! it. `scripts/mutants.sh` runs it under `cargo mutants`; both variables are required there,
//! and a missing one fails the test rather than passing it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("set ${var} (see scripts/mutants.sh)"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
#[ignore = "the mutation-testing oracle; run by scripts/mutants.sh"]
fn python_suite_passes_against_this_tree() {
    let python = required("JOB_MANAGER_ORACLE_PYTHON");
    let tests = required("JOB_MANAGER_ORACLE_TESTS");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // A target directory of its own: the build of the mutant's test binaries is done, but a
    // second profile/feature set in the same directory would rebuild everything each time.
    let target = root.join("target").join("oracle");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--lib",
            "--features",
            "python,pyo3/extension-module",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo build of the extension");
    assert!(status.success(), "the extension did not build");

    let site = target.join("site");
    let _ = std::fs::remove_dir_all(&site);
    copy_dir(&root.join("python/job_manager"), &site.join("job_manager"));
    std::fs::copy(
        target.join("debug/libjob_manager.so"),
        site.join("job_manager/_internal.abi3.so"),
    )
    .expect("copy the built extension");

    let mut cmd = Command::new(python);
    cmd.current_dir(&root)
        .env("PYTHONPATH", &site)
        .args([
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
        ])
        .args(["-o", "addopts="])
        .args(tests.split_whitespace());
    // Bounded here, below cargo mutants' own timeout: a mutant that makes a test hang is
    // caught as a failure, and its pytest (with the throwaway cluster it started) is stopped
    // by SIGINT, so it runs its teardown, rather than left running when cargo mutants gives up.
    let limit = std::env::var("JOB_MANAGER_ORACLE_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(240);
    let mut child = cmd.spawn().expect("run pytest");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for pytest") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(limit) {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let interrupted = Instant::now();
            while child.try_wait().expect("wait for pytest").is_none() {
                if interrupted.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let status = status.unwrap_or_else(|| panic!("pytest ran past {limit} s: the mutant hangs"));
    assert!(
        status.success(),
        "pytest failed against this tree: the mutant is caught"
    );
}
