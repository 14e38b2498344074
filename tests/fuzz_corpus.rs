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

/// A seed of the corpus without its first byte (the fuzz target's "keyed" flag).
fn seed(name: &str) -> Vec<u8> {
    let (_, data) = corpus("backup_reader")
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("seed {name} is missing"));
    data[1..].to_vec()
}

fn auth(key: Option<&[u8]>, allow_unsigned: bool) -> Auth {
    Auth {
        key: key.map(|k| Key::new(k, "test").unwrap()),
        allow_unsigned,
    }
}

/// Who may load what when a backup key is configured (mutation testing found the policy
/// unpinned here: an `||` for an `&&` let unsigned files through).
#[test]
fn signature_policy_of_real_backups() {
    const KEY: &[u8] = b"fuzzing-key-0123456789";
    let unsigned = seed("good");
    let signed = seed("good-signed");

    let v = reader::verify_bytes(&unsigned, &auth(None, false)).unwrap();
    assert!(!v.signed && !v.authenticated);
    let refused = reader::verify_bytes(&unsigned, &auth(Some(KEY), false)).unwrap_err();
    assert!(refused.to_string().contains("carries no HMAC"), "{refused}");
    let v = reader::verify_bytes(&unsigned, &auth(Some(KEY), true)).unwrap();
    assert!(!v.signed && !v.authenticated);

    let v = reader::verify_bytes(&signed, &auth(Some(KEY), false)).unwrap();
    assert!(v.signed && v.authenticated);
    // Signed by another key: refused, and allow_unsigned does not let it through.
    for allow_unsigned in [false, true] {
        let other = auth(Some(b"another-key-0123456789"), allow_unsigned);
        assert!(reader::verify_bytes(&signed, &other).is_err());
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/veo3-legacy")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The replaced system's real files read in full: every row of its `--inserts` dump and of
/// its CSV export counted (a reader that stopped early or skipped a header would not be).
#[test]
fn the_replaced_systems_insert_dump_and_csv_are_read_row_by_row() {
    let inserts = reader::verify_bytes(&fixture("historical_jobs.sql"), &Auth::default())
        .unwrap_or_else(|e| panic!("historical_jobs.sql: {e}"));
    assert_eq!(inserts.rows.get("jobs"), Some(&42));
    let csv = reader::verify_bytes(&fixture("historical_jobs.csv"), &Auth::default())
        .unwrap_or_else(|e| panic!("historical_jobs.csv: {e}"));
    assert_eq!(csv.rows.get("jobs"), Some(&42));
}
