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
