//! Actor IDs: validated once at the edge, then trusted everywhere.
//!
//! An ID is 1–512 bytes of UTF-8 without control characters. A trailing
//! `@xyz` (2–4 lowercase letters or digits) names its home region. The raw
//! ID never becomes a file name: [`ActorId::file_stem`] is a hash of it.

use sha2::{Digest, Sha256};
use std::fmt;
use thiserror::Error;

/// Longest accepted actor ID, in bytes.
pub const MAX_ACTOR_ID_BYTES: usize = 512;

/// Why a string is not an actor ID.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ActorIdError {
    #[error("actor id is empty")]
    Empty,
    #[error("actor id is {0} bytes long; the limit is {MAX_ACTOR_ID_BYTES}")]
    TooLong(usize),
    #[error("actor id contains a control character at byte {0}")]
    ControlCharacter(usize),
    #[error("actor id is not valid UTF-8")]
    InvalidUtf8,
}

/// A valid actor ID. Holding one proves it passed validation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId(String);

impl ActorId {
    /// Validates `raw` as an actor ID.
    pub fn parse(raw: &str) -> Result<Self, ActorIdError> {
        if raw.is_empty() {
            return Err(ActorIdError::Empty);
        }
        if raw.len() > MAX_ACTOR_ID_BYTES {
            return Err(ActorIdError::TooLong(raw.len()));
        }
        if let Some((at, _)) = raw.char_indices().find(|(_, c)| is_control(*c)) {
            return Err(ActorIdError::ControlCharacter(at));
        }
        Ok(Self(raw.to_owned()))
    }

    /// Validates raw bytes (from the C ABI) as an actor ID.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, ActorIdError> {
        let text = std::str::from_utf8(raw).map_err(|_| ActorIdError::InvalidUtf8)?;
        Self::parse(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The region named by an `@xyz` suffix, if the ID has one.
    pub fn region_suffix(&self) -> Option<&str> {
        let (_, suffix) = self.0.rsplit_once('@')?;
        let well_formed = (2..=4).contains(&suffix.len())
            && suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        well_formed.then_some(suffix)
    }

    /// Hex SHA-256 of the ID: the only form of it that reaches the file system.
    pub fn file_stem(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

fn is_control(c: char) -> bool {
    matches!(c, '\u{0000}'..='\u{001F}' | '\u{007F}')
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn region_suffix_is_parsed_only_when_well_formed() {
        let id = |s| ActorId::parse(s).unwrap();
        assert_eq!(id("room-42@fra").region_suffix(), Some("fra"));
        assert_eq!(id("x@ab").region_suffix(), Some("ab"));
        assert_eq!(id("x@syd1").region_suffix(), Some("syd1"));
        assert_eq!(id("a@b.com").region_suffix(), None);
        assert_eq!(id("a@FRA").region_suffix(), None);
        assert_eq!(id("a@abcde").region_suffix(), None);
        assert_eq!(id("a@x").region_suffix(), None);
        assert_eq!(id("plain").region_suffix(), None);
    }

    #[test]
    fn hostile_ids_are_rejected_with_a_reason() {
        assert_eq!(ActorId::parse(""), Err(ActorIdError::Empty));
        assert_eq!(
            ActorId::parse(&"a".repeat(513)),
            Err(ActorIdError::TooLong(513))
        );
        assert!(ActorId::parse(&"a".repeat(512)).is_ok());
        assert_eq!(
            ActorId::parse("a\nb"),
            Err(ActorIdError::ControlCharacter(1))
        );
        assert_eq!(
            ActorId::parse("a\u{7f}"),
            Err(ActorIdError::ControlCharacter(1))
        );
        assert_eq!(
            ActorId::from_bytes(&[0xff, 0x41]),
            Err(ActorIdError::InvalidUtf8)
        );
    }

    #[test]
    fn path_like_ids_hash_to_plain_hex() {
        let stem = ActorId::parse("../../etc/passwd").unwrap().file_stem();
        assert_eq!(stem.len(), 64);
        assert!(stem.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    proptest! {
        #[test]
        fn parse_accepts_exactly_the_valid_ids(s in "\\PC{0,40}|[\\x00-\\x7f]{0,20}") {
            let valid = !s.is_empty() && s.len() <= MAX_ACTOR_ID_BYTES && !s.chars().any(is_control);
            prop_assert_eq!(ActorId::parse(&s).is_ok(), valid);
        }

        #[test]
        fn file_stem_is_always_hex(s in "\\PC{1,40}") {
            if let Ok(id) = ActorId::parse(&s) {
                prop_assert!(id.file_stem().bytes().all(|b| b.is_ascii_hexdigit()));
            }
        }
    }
}
