//! The one rule for every meeting link meetingd writes or exports: [`Link`].
//!
//! A link reaches a booking (manual links through the API, a platform's answer through the
//! worker) and leaves it again in calendar files, so one validator guards all three: an absolute
//! `https` URL naming a host, without user-info credentials, without a control character anywhere
//! in what was given (the `url` crate silently drops tabs and line breaks, so they are refused
//! before it parses), and at most [`MAX_LEN`] characters once the `url` crate has normalised it
//! (percent-encoding and IDNA can make it longer). A [`Link`] is the normalised form and can only
//! be made here, so code that takes one cannot be handed an unchecked string.
//!
//! Pure: no I/O, no logging (a rejected link is never quoted back, since it may be hostile).

use std::fmt;

/// The longest link accepted, in bytes of its normalised form.
pub const MAX_LEN: usize = 2048;

/// Input longer than this is refused before it is parsed at all.
const MAX_INPUT: usize = 4 * MAX_LEN;

/// Why a link is refused; the message completes "the link …".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("is empty")]
    Empty,
    #[error("contains a control character or line break")]
    ControlCharacter,
    #[error("must be an absolute URL")]
    NotAbsolute,
    #[error("must use https")]
    NotHttps,
    #[error("must name a host")]
    NoHost,
    #[error("must not carry credentials")]
    Credentials,
    #[error("is longer than {MAX_LEN} characters")]
    TooLong,
}

/// A meeting link that passed [`Link::parse`], in the `url` crate's normalised form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link(String);

impl Link {
    /// Checks `raw` against the rule above. Surrounding spaces are ignored; anything else that
    /// is not part of a valid link refuses it.
    pub fn parse(raw: &str) -> Result<Link, LinkError> {
        if raw.len() > MAX_INPUT {
            return Err(LinkError::TooLong);
        }
        if raw.chars().any(forbidden) {
            return Err(LinkError::ControlCharacter);
        }
        let trimmed = raw.trim_matches(' ');
        if trimmed.is_empty() {
            return Err(LinkError::Empty);
        }
        let url = url::Url::parse(trimmed).map_err(|_| LinkError::NotAbsolute)?;
        if url.scheme() != "https" {
            return Err(LinkError::NotHttps);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(LinkError::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(LinkError::Credentials);
        }
        let normalised = String::from(url);
        if normalised.len() > MAX_LEN {
            return Err(LinkError::TooLong);
        }
        // The serialiser percent-encodes what it must; this holds whatever `url` does next.
        if normalised.chars().any(forbidden) {
            return Err(LinkError::ControlCharacter);
        }
        Ok(Link(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// C0 and C1 controls, DEL, and the Unicode line and paragraph separators: nothing a link needs,
/// and each can end a line for some reader of a calendar file or a log.
fn forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests;
