//! The backup reader on arbitrary bytes: it must refuse or accept, never panic, hang or
//! allocate without bound. Half the inputs are read with a backup key configured, so the
//! HMAC path is fuzzed too. Seeds: real backups (format 1 and 2, signed, gzip) and the
//! hostile corpus of tests/reliability/test_hostile_backups.py.
#![no_main]

use job_manager::backup::{reader, Auth, Key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (keyed, bytes) = match data.split_first() {
        Some((flag, rest)) => (flag & 1 == 1, rest),
        None => (false, data),
    };
    let auth = Auth {
        key: keyed.then(|| Key::new(b"fuzzing-key-0123456789", "fuzz").unwrap()),
        allow_unsigned: false,
    };
    let _ = reader::verify_bytes(bytes, &auth);
});
