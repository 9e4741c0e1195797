//! The link rule, case by case and over arbitrary input.

use proptest::prelude::*;

use super::*;

#[test]
fn meeting_links_pass_and_come_back_normalised() {
    for (raw, want) in [
        ("https://meet.google.com/abc-defg-hij", "https://meet.google.com/abc-defg-hij"),
        ("https://zoom.example.com/j/123?pwd=x", "https://zoom.example.com/j/123?pwd=x"),
        ("  https://meet.jit.si/room  ", "https://meet.jit.si/room"),
        ("HTTPS://Meet.Example.COM", "https://meet.example.com/"),
        ("https://bücher.example/raum", "https://xn--bcher-kva.example/raum"),
        ("https://meet.example/a b", "https://meet.example/a%20b"),
        ("https://meet.example/x%0D%0AATTACH:y", "https://meet.example/x%0D%0AATTACH:y"),
    ] {
        assert_eq!(Link::parse(raw).map(Link::into_string).as_deref(), Ok(want), "{raw:?}");
    }
}

#[test]
fn everything_else_is_refused_with_its_reason() {
    let long = format!("https://meet.example/{}", "a".repeat(MAX_LEN));
    for (raw, why) in [
        ("", LinkError::Empty),
        ("   ", LinkError::Empty),
        ("https://meet.example/x\r\nATTACH:https://evil.example/", LinkError::ControlCharacter),
        ("https://meet.example/x\nATTACH:https://evil.example/", LinkError::ControlCharacter),
        ("https://meet.example/x\r", LinkError::ControlCharacter),
        ("https://meet.example/\tx", LinkError::ControlCharacter),
        ("https://meet.example/x\u{0}", LinkError::ControlCharacter),
        ("https://meet.example/x\u{7f}", LinkError::ControlCharacter),
        ("https://meet.example/x\u{85}", LinkError::ControlCharacter),
        ("https://meet.example/x\u{2028}y", LinkError::ControlCharacter),
        ("https://meet.example/x\n", LinkError::ControlCharacter),
        ("/relative", LinkError::NotAbsolute),
        ("meet.example/x", LinkError::NotAbsolute),
        ("https://", LinkError::NotAbsolute),
        ("http://zoom.example/j/1", LinkError::NotHttps),
        ("javascript:alert(1)", LinkError::NotHttps),
        ("data:text/html,x", LinkError::NotHttps),
        ("https://user:pw@host.example/x", LinkError::Credentials),
        ("https://user@host.example/x", LinkError::Credentials),
        ("https://:pw@host.example/x", LinkError::Credentials),
        (long.as_str(), LinkError::TooLong),
    ] {
        assert_eq!(Link::parse(raw), Err(why), "{raw:?}");
    }
}

#[test]
fn the_length_is_checked_after_normalisation() {
    // 700 characters in, six bytes each once percent-encoded (`%C3%A9`).
    let raw = format!("https://meet.example/{}", "é".repeat(700));
    assert!(raw.chars().count() < MAX_LEN);
    assert_eq!(Link::parse(&raw), Err(LinkError::TooLong));
    let fits = format!("https://meet.example/{}", "é".repeat(300));
    assert!(Link::parse(&fits).unwrap().as_str().len() <= MAX_LEN);
}

#[test]
fn huge_input_is_refused_before_parsing() {
    assert_eq!(Link::parse(&"https://x.example/".repeat(10_000)), Err(LinkError::TooLong));
}

proptest! {
    /// Whatever comes in, a link that passes is https, credential-free, bounded, free of
    /// control characters, and stable: checking it again gives itself.
    #[test]
    fn whatever_passes_keeps_the_rule(raw in "\\PC{0,40}|https://[a-z.]{1,20}/\\PC{0,60}|https://\\PC{0,60}") {
        if let Ok(link) = Link::parse(&raw) {
            let s = link.as_str();
            prop_assert!(s.starts_with("https://"), "{s:?}");
            prop_assert!(s.len() <= MAX_LEN);
            prop_assert!(!s.chars().any(forbidden), "{s:?}");
            let url = url::Url::parse(s).unwrap();
            prop_assert!(url.username().is_empty() && url.password().is_none());
            prop_assert!(url.host_str().is_some_and(|h| !h.is_empty()));
            prop_assert_eq!(Link::parse(s), Ok(link.clone()));
        }
    }

    /// A control character anywhere refuses the link, wherever it sits.
    #[test]
    fn a_control_character_anywhere_refuses(
        path in "[a-z0-9/]{0,30}",
        at in 0usize..60,
        control in prop::sample::select(vec!['\r', '\n', '\t', '\u{0}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}', '\u{2028}', '\u{2029}']),
    ) {
        let mut raw: Vec<char> = format!("https://meet.example/{path}").chars().collect();
        let at = at.min(raw.len());
        raw.insert(at, control);
        let raw: String = raw.into_iter().collect();
        prop_assert_eq!(Link::parse(&raw), Err(LinkError::ControlCharacter));
    }
}
