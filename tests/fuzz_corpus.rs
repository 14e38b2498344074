//! Replays the fuzzers' corpora (fuzz/corpus/, seeds plus everything the fuzzers kept) through
//! the readers exactly as the fuzz targets call them, so CI guards every input the fuzzers
//! ever found interesting without running a fuzzer: none may panic, and the seeds that are
//! real backups must still verify.

use std::path::Path;

use job_manager::backup::{reader, Auth, Key};

fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// What fuzz/fuzz_targets/backup_reader.rs does with one input.
fn backup_reader(data: &[u8]) -> job_manager::Result<reader::Verified> {
    let (keyed, bytes) = match data.split_first() {
        Some((flag, rest)) => (flag & 1 == 1, rest),
        None => (false, data),
    };
    let auth = Auth {
        key: keyed.then(|| Key::new(b"fuzzing-key-0123456789", "fuzz").unwrap()),
        allow_unsigned: false,
    };
    reader::verify_bytes(bytes, &auth)
}

#[test]
fn backup_reader_corpus_never_panics_and_real_backups_verify() {
    let inputs = corpus("backup_reader");
    assert!(inputs.len() >= 60, "the seed corpus is missing");
    for (name, data) in &inputs {
        let result = std::panic::catch_unwind(|| backup_reader(data));
        let result = result.unwrap_or_else(|_| panic!("{name}: the reader panicked"));
        if name.starts_with("hostile-") {
            assert!(result.is_err(), "{name} verified");
        } else if matches!(
            name.as_str(),
            "good" | "good-signed" | "good-gzip" | "format1"
        ) {
            let v = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v.authenticated, name == "good-signed", "{name}");
        }
    }
}

#[test]
fn pg_dump_reader_corpus_never_panics() {
    let inputs = corpus("pg_dump_reader");
    assert!(!inputs.is_empty(), "the seed corpus is missing");
    for (name, data) in &inputs {
        let mut bytes = b"--\n-- PostgreSQL database dump\n--\n".to_vec();
        bytes.extend_from_slice(data);
        let result = std::panic::catch_unwind(|| reader::verify_bytes(&bytes, &Auth::default()));
        let result = result.unwrap_or_else(|_| panic!("{name}: the reader panicked"));
        if name == "airflow_backup_20250721_205159" {
            let v = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v.rows.get("jobs"), Some(&3), "{name}");
        }
    }
}
