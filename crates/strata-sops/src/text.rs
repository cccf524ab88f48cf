//! A string that wipes its bytes when dropped.

use std::fmt;
use std::ops::Deref;

use zeroize::Zeroize;

/// An owned UTF-8 string whose buffer is zeroed on drop. Every key, value
/// and comment of a document tree is held in one, so that plaintext does not
/// outlive the tree that carried it.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Text(String);

impl Text {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl Drop for Text {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(s.to_owned())
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(s)
    }
}

/// Never prints the content: a tree's text may be plaintext.
impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Text({} bytes)", self.0.len())
    }
}

/// An append-only byte buffer that never leaves a copy behind: when it must
/// grow, it moves into a larger zeroizing allocation and wipes the old one
/// (a plain `Vec` would free the old allocation as it was). Every emitter
/// writes the plaintext document into one.
#[derive(Default)]
pub(crate) struct SecretBuf(zeroize::Zeroizing<Vec<u8>>);

impl SecretBuf {
    pub(crate) fn with_capacity(n: usize) -> Self {
        SecretBuf(zeroize::Zeroizing::new(Vec::with_capacity(n)))
    }

    fn reserve(&mut self, more: usize) {
        let needed = self.0.len() + more;
        if needed > self.0.capacity() {
            let mut bigger = Vec::with_capacity(needed.max(self.0.capacity() * 2).max(64));
            bigger.extend_from_slice(&self.0);
            // The old allocation is zeroed (whole capacity) as it is dropped.
            self.0 = zeroize::Zeroizing::new(bigger);
        }
    }

    pub(crate) fn push(&mut self, b: u8) {
        self.reserve(1);
        self.0.push(b);
    }

    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.0.extend_from_slice(bytes);
    }

    pub(crate) fn extend(&mut self, bytes: impl IntoIterator<Item = u8>) {
        for b in bytes {
            self.push(b);
        }
    }

    #[cfg(test)]
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn into_inner(self) -> zeroize::Zeroizing<Vec<u8>> {
        self.0
    }
}

impl std::io::Write for SecretBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_buf_grows_without_losing_bytes() {
        let mut buf = SecretBuf::with_capacity(1);
        for i in 0..1000u32 {
            buf.extend_from_slice(&i.to_le_bytes());
        }
        assert_eq!(buf.as_slice().len(), 4000);
        assert_eq!(&buf.as_slice()[4..8], &1u32.to_le_bytes());
    }
}
