//! A popped message's body, without the copy that would cut it out of the
//! buffer it arrived in.
//!
//! A body read from a segment arrives inside its record (header first, block
//! padding after); copying it out costs as much as the read itself for a
//! large message, and the reply copies nothing either (see `net`'s
//! `Output`). So a [`Body`] is a range of a buffer it owns: the whole buffer
//! for a body that came from a `set` or the hot cache, the record's body for
//! one read from disk.

use std::fmt;
use std::ops::Deref;

/// Bytes `start..start + len` of `buf`.
#[derive(Clone)]
pub struct Body {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Body {
    /// `len` bytes of `buf` from `start`.
    ///
    /// # Panics
    /// If the range is not within `buf`.
    pub fn within(buf: Vec<u8>, start: usize, len: usize) -> Body {
        assert!(start + len <= buf.len(), "body range outside its buffer");
        Body { buf, start, len }
    }

    /// The bytes as a `Vec` of their own (no copy when they start the
    /// buffer).
    pub fn into_vec(self) -> Vec<u8> {
        if self.start == 0 {
            let mut buf = self.buf;
            buf.truncate(self.len);
            buf
        } else {
            self.buf[self.start..self.start + self.len].to_vec()
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(buf: Vec<u8>) -> Body {
        let len = buf.len();
        Body { buf, start: 0, len }
    }
}

impl Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        **self == **other
    }
}

impl Eq for Body {}

impl PartialEq<[u8]> for Body {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<Vec<u8>> for Body {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == other[..]
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Body {
    fn eq(&self, other: &[u8; N]) -> bool {
        **self == other[..]
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Body {
    fn eq(&self, other: &&[u8; N]) -> bool {
        **self == other[..]
    }
}

impl PartialEq<Body> for Vec<u8> {
    fn eq(&self, other: &Body) -> bool {
        self[..] == **other
    }
}

#[cfg(test)]
mod tests {
    use super::Body;

    #[test]
    fn a_range_reads_as_its_bytes_and_leaves_as_a_vec() {
        let b = Body::within(b"hdr:body\0\0".to_vec(), 4, 4);
        assert_eq!(&*b, b"body");
        assert_eq!(b, b"body");
        assert_eq!(b.clone().into_vec(), b"body".to_vec());
        let whole = Body::from(b"whole".to_vec());
        assert_eq!(whole.into_vec(), b"whole".to_vec());
        assert_eq!(Body::within(b"ab".to_vec(), 0, 1).into_vec(), b"a".to_vec());
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn a_range_past_the_buffer_is_refused() {
        Body::within(vec![0; 4], 2, 3);
    }
}
