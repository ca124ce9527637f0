//! Compact forms of the two identifiers the caches keep for every Secret: its
//! `metadata.uid` and `metadata.resourceVersion`.
//!
//! A fan-out to 5,000 namespaces keeps each of them twice per Secret (the managed-Secret
//! cache and the record of the write, which also keeps the resourceVersion before the
//! write). As `Box<str>` every copy was a heap allocation of its own (a 36-byte UUID takes
//! a 48-byte chunk, a resourceVersion 32), up to 25,000 allocations in all; these forms
//! hold them inline.

use std::fmt;

use compact_str::CompactString;
use uuid::Uuid;

/// `metadata.resourceVersion`, held inline (no heap allocation) up to 24 bytes, the string
/// itself beyond. etcd's are decimal `u64`s, at most 20 digits. Opaque: only compared for
/// equality and sent back, as the
/// [API conventions](https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md#concurrency-control-and-consistency)
/// require.
pub type ResourceVersion = CompactString;

/// `metadata.uid`: the UUID's 16 bytes inline (24 with the tag) when it is written the way
/// the API server writes them (lower-case, hyphenated:
/// `1b4e28ba-2fa1-11d2-883f-0016d3cca427`), the string otherwise, so every uid reads back
/// exactly as it was given.
///
/// Equal uids are equal values: a string is held as a UUID exactly when it is that UUID's
/// canonical form.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Uid(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Uuid(Uuid),
    Other(Box<str>),
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Other(Box::default())
    }
}

/// The length of a hyphenated UUID.
const UUID_LEN: usize = 36;

impl Uid {
    /// The uid `s` (any string; an empty one for an object that has none yet).
    pub fn new(s: &str) -> Self {
        match Uuid::try_parse(s) {
            Ok(uuid) if s.len() == UUID_LEN && Self::canonical(&uuid, s) => Uid(Repr::Uuid(uuid)),
            _ => Uid(Repr::Other(s.into())),
        }
    }

    fn canonical(uuid: &Uuid, s: &str) -> bool {
        *uuid.hyphenated().encode_lower(&mut Uuid::encode_buffer()) == *s
    }
}

impl From<&str> for Uid {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl PartialEq<str> for Uid {
    fn eq(&self, other: &str) -> bool {
        match &self.0 {
            Repr::Uuid(uuid) => other.len() == UUID_LEN && Self::canonical(uuid, other),
            Repr::Other(s) => **s == *other,
        }
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Uuid(uuid) => fmt::Display::fmt(&uuid.hyphenated(), f),
            Repr::Other(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_server_uid_is_held_inline_and_reads_back_unchanged() {
        let s = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        let uid = Uid::new(s);
        assert!(matches!(uid.0, Repr::Uuid(_)));
        assert_eq!(uid.to_string(), s);
        assert_eq!(format!("{uid:?}"), format!("{s:?}"));
        assert!(uid == *s);
        assert!(uid != *"1b4e28ba-2fa1-11d2-883f-0016d3cca428");
        assert_eq!(uid, Uid::from(s));
    }

    #[test]
    fn other_spellings_stay_strings_so_they_read_back_exactly() {
        for s in [
            "",
            "s1",
            "1B4E28BA-2FA1-11D2-883F-0016D3CCA427",
            "1b4e28ba2fa111d2883f0016d3cca427",
            "{1b4e28ba-2fa1-11d2-883f-0016d3cca427}",
            "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        ] {
            let uid = Uid::new(s);
            assert!(matches!(uid.0, Repr::Other(_)), "{s}");
            assert_eq!(uid.to_string(), s);
            assert!(uid == *s);
        }
        // The upper-case spelling of a UUID is another uid, as it is to the API server.
        assert_ne!(
            Uid::new("1B4E28BA-2FA1-11D2-883F-0016D3CCA427"),
            Uid::new("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        );
        assert!(
            Uid::new("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
                != *"1B4E28BA-2FA1-11D2-883F-0016D3CCA427"
        );
        assert_eq!(Uid::default().to_string(), "");
    }

    #[test]
    fn both_forms_are_held_without_a_heap_allocation_for_the_common_case() {
        assert!(std::mem::size_of::<Uid>() <= 24);
        assert!(std::mem::size_of::<ResourceVersion>() <= 24);
        assert!(!ResourceVersion::new("18446744073709551615").is_heap_allocated());
    }
}
