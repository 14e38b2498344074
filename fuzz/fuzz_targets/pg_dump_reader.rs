//! The reader of plain pg_dump files on arbitrary bytes after pg_dump's first lines, so the
//! fuzzer spends its time in the pg_dump grammar (CREATE TABLE, COPY, setval of the owned
//! tables) rather than on the first line. Seeds: the replaced system's real pg_dump and
//! pg_dump files of job_manager's schema.
#![no_main]

use job_manager::backup::{reader, Auth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = b"--\n-- PostgreSQL database dump\n--\n".to_vec();
    bytes.extend_from_slice(data);
    let _ = reader::verify_bytes(&bytes, &Auth::default());
});
