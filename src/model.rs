//! The queue's vocabulary: job types and statuses, download statuses and file types, and the
//! checks every text argument passes before it reaches the database.

use std::fmt;

use crate::errors::{Error, Result};

/// Defines a closed set of string values with parsing that names the valid ones.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Result<Self> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(Error::invalid(format!(
                        "unknown {} {:?}; expected one of: {}",
                        $what,
                        text,
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What a job produces.
    JobType, "job_type" {
        ImageTest = "IMAGE_TEST",
        VideoProd = "VIDEO_PROD",
    }
);

string_enum!(
    /// Where a job is in its life.
    JobStatus, "job status" {
        Pending = "pending",
        Processing = "processing",
        Completed = "completed",
        Failed = "failed",
        AwaitingRetry = "awaiting_retry",
        GenerationSuccessful = "generation_successful",
    }
);

string_enum!(
    /// Where a download is in its life.
    DownloadStatus, "download status" {
        Pending = "pending",
        Downloading = "downloading",
        Completed = "completed",
        Failed = "failed",
    }
);

string_enum!(
    /// What a download fetches.
    FileType, "file_type" {
        Image = "image",
        Video = "video",
    }
);

/// Statuses of the oldest production layout and what they mean now.
pub const LEGACY_STATUS_MAP: &[(&str, JobStatus)] = &[
    ("submitted", JobStatus::Processing),
    ("poll_completed", JobStatus::GenerationSuccessful),
    ("awaiting_manual_retry", JobStatus::AwaitingRetry),
];

/// Checks a text argument: PostgreSQL `text` cannot hold NUL.
pub fn check_text<'a>(name: &str, value: &'a str) -> Result<&'a str> {
    if value.contains('\0') {
        return Err(Error::invalid(format!(
            "{name} contains a NUL character, which PostgreSQL text cannot store; remove it"
        )));
    }
    Ok(value)
}

/// Checks a prompt: not blank, no NUL.
pub fn check_prompt(value: &str) -> Result<&str> {
    if value.trim().is_empty() {
        return Err(Error::invalid(
            "prompt_text is empty; pass the text of the prompt",
        ));
    }
    check_text("prompt_text", value)
}

/// Checks an optional text argument.
pub fn check_opt_text<'a>(name: &str, value: Option<&'a str>) -> Result<Option<&'a str>> {
    value.map(|v| check_text(name, v)).transpose()
}

/// Checks an id: positive and within PostgreSQL `integer`.
pub fn check_id(name: &str, value: i64) -> Result<i32> {
    i32::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::invalid(format!("{name} must be a positive integer id, got {value}")))
}

/// Checks a non-negative count (days, seconds, limits).
pub fn check_non_negative(name: &str, value: i64) -> Result<i64> {
    if value < 0 {
        return Err(Error::invalid(format!(
            "{name} must be zero or more, got {value}"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_type_round_trips_and_names_valid_values() {
        for t in JobType::ALL {
            assert_eq!(JobType::parse(t.as_str()).unwrap(), *t);
        }
        let err = JobType::parse("image_test").unwrap_err().to_string();
        assert!(err.contains("IMAGE_TEST, VIDEO_PROD"), "{err}");
    }

    #[test]
    fn legacy_statuses_map_to_current_ones() {
        for (old, new) in LEGACY_STATUS_MAP {
            assert!(
                JobStatus::parse(old).is_err(),
                "{old} must not be a current status"
            );
            assert!(JobStatus::ALL.contains(new));
        }
    }

    #[test]
    fn text_checks() {
        assert!(check_prompt("a cat").is_ok());
        assert!(check_prompt(" \t\n").is_err());
        assert!(check_prompt("a\0b").is_err());
        assert!(check_opt_text("gcs_uri", None).unwrap().is_none());
        assert!(check_opt_text("gcs_uri", Some("x\0")).is_err());
    }

    #[test]
    fn id_checks() {
        assert_eq!(check_id("job_id", 7).unwrap(), 7);
        assert!(check_id("job_id", 0).is_err());
        assert!(check_id("job_id", -1).is_err());
        assert!(check_id("job_id", i64::from(i32::MAX) + 1).is_err());
        assert!(check_non_negative("days", -1).is_err());
    }
}
