//! [`Id`]: a chat's or a user's id, kept inline. Feishu's ids are 35 bytes (`oc_`, `ou_` or
//! `on_` and 32 hex digits) and a tenant's `user_id`s shorter, so an id of up to 38 bytes lives
//! in the value itself (40 bytes, as large as a `String` and the allocation it points to would
//! be without the allocation); a longer one (the API allows them) is boxed.
//!
//! A million targets are a million chat ids and a million user ids: held inline, loading,
//! validating and planning them allocates nothing per id, copying one is a copy of 40 bytes,
//! and the daemon's idle state is a third smaller. The crates that keep strings inline stop
//! at 22 to 24 bytes, under the length of every Feishu id.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest id kept inline.
const INLINE: usize = 38;

/// A chat's or a user's id: a string, inline up to 38 bytes. Compares, orders and hashes as
/// its `str`, which it dereferences to.
#[derive(Clone)]
pub struct Id(Repr);

#[derive(Clone)]
enum Repr {
    /// The first `len` bytes of `bytes` are the id's UTF-8; the rest are zero.
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(Box<str>),
}

impl Id {
    /// The id `s`.
    pub fn new(s: &str) -> Id {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Id(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Id(Repr::Heap(s.into()))
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // SAFETY: `Id::new` copied these bytes whole from a `&str`, and an inline id is
            // never changed after: they are valid UTF-8 (`len` never exceeds `INLINE`).
            Repr::Inline { len, bytes } => unsafe {
                std::str::from_utf8_unchecked(bytes.get_unchecked(..*len as usize))
            },
            Repr::Heap(s) => s,
        }
    }
}

impl Default for Id {
    fn default() -> Id {
        Id::new("")
    }
}

impl Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Id {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Id) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Id {}

impl PartialOrd for Id {
    fn partial_cmp(&self, other: &Id) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Id {
    fn cmp(&self, other: &Id) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Id {
    /// As its `str` hashes, which `Borrow<str>` requires.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq<str> for Id {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Id {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Id {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Id> for str {
    fn eq(&self, other: &Id) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Id> for &str {
    fn eq(&self, other: &Id) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Id> for String {
    fn eq(&self, other: &Id) -> bool {
        self.as_str() == other.as_str()
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Id {
        Id::new(s)
    }
}

impl From<&String> for Id {
    fn from(s: &String) -> Id {
        Id::new(s)
    }
}

impl From<String> for Id {
    fn from(s: String) -> Id {
        if s.len() <= INLINE {
            Id::new(&s)
        } else {
            Id(Repr::Heap(s.into_boxed_str()))
        }
    }
}

impl From<&Id> for Id {
    fn from(id: &Id) -> Id {
        id.clone()
    }
}

impl From<Id> for String {
    fn from(id: Id) -> String {
        id.as_str().to_owned()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Id, E> {
                Ok(Id::new(s))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Id, E> {
                Ok(Id::from(s))
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_compares_orders_and_hashes_as_its_string_inline_or_not() {
        let short = "ou_0123456789abcdef0123456789abcdef";
        let edge = "x".repeat(INLINE);
        let long = "y".repeat(INLINE + 1);
        let wide = "ü".repeat(20); // 40 bytes of two-byte characters: boxed
        for s in ["", "u1", short, &edge, &long, &wide] {
            let id = Id::new(s);
            assert_eq!(id.as_str(), s);
            assert_eq!(Id::from(s.to_owned()), id);
            assert_eq!(format!("{id}"), s);
            assert_eq!(format!("{id:?}"), format!("{s:?}"));
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, serde_json::to_string(s).unwrap());
            assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
            let mut a = std::collections::hash_map::DefaultHasher::new();
            let mut b = std::collections::hash_map::DefaultHasher::new();
            id.hash(&mut a);
            s.hash(&mut b);
            assert_eq!(a.finish(), b.finish());
        }
        let mut ids: Vec<Id> = ["b", "ab", "a", &long, &edge, ""].map(Id::new).into();
        ids.sort();
        let mut strs = vec!["b", "ab", "a", long.as_str(), edge.as_str(), ""];
        strs.sort();
        assert_eq!(ids.iter().map(Id::as_str).collect::<Vec<_>>(), strs);
        assert_eq!(std::mem::size_of::<Id>(), 40);
    }
}
