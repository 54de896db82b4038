//! The path of a request as a proxy reports it (`X-Original-URI`, `X-Forwarded-Uri`, Envoy's
//! appended path), read the way an RFC 3986 origin server such as nginx routes it. Servers
//! with routing rules of their own (Tomcat's `..;`, `\` as a separator, case-insensitive
//! paths) are not modelled: put path rules for those in the service itself. A path-based rule that reads the
//! raw text while the server routes the normalised one can be walked around
//! (`/public/../admin`, `/%61dmin`, `//admin`): [`normalised`] gives the server's reading so a
//! rule can hold a request to both.

/// The longest path looked at; a longer one has no reading.
pub const MAX_PATH_LEN: usize = 16 * 1024;

/// The path part of a request target, as sent: the query and fragment dropped, and the scheme
/// and authority of an absolute-form target (`http://host/path`). `None` when the target is
/// neither origin-form nor absolute-form (`*`, `admin`, empty) or longer than
/// [`MAX_PATH_LEN`].
pub fn as_sent(target: &str) -> Option<&str> {
    if target.len() > MAX_PATH_LEN {
        return None;
    }
    let without_query = target.split(['?', '#']).next().unwrap_or_default();
    if without_query.starts_with('/') {
        return Some(without_query);
    }
    let (scheme, rest) = without_query.split_once("://")?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return None;
    }
    Some(rest.find('/').map_or("/", |slash| &rest[slash..]))
}

/// The path as an origin server routes it: [`as_sent`], then every `%XX` decoded (invalid
/// UTF-8 replaced), `.` and `..` segments resolved, runs of `/` merged. A trailing `/` stays.
pub fn normalised(target: &str) -> Option<String> {
    let decoded = percent_decoded(as_sent(target)?);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let last = decoded.rsplit('/').next().unwrap_or_default();
    let trailing = matches!(last, "" | "." | "..") && !segments.is_empty();
    let mut path = format!("/{}", segments.join("/"));
    if trailing {
        path.push('/');
    }
    Some(path)
}

/// `%XX` decoded where it is a valid escape, left as it is otherwise.
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_as_sent_drops_query_fragment_and_authority() {
        assert_eq!(as_sent("/a/b?x=1#f"), Some("/a/b"));
        assert_eq!(as_sent("/"), Some("/"));
        assert_eq!(as_sent("http://host:8080/admin?x"), Some("/admin"));
        assert_eq!(as_sent("https://host"), Some("/"));
        assert_eq!(as_sent("*"), None);
        assert_eq!(as_sent("admin"), None);
        assert_eq!(as_sent(""), None);
        assert_eq!(as_sent("?/admin"), None);
        assert_eq!(as_sent("ht tp://host/admin"), None);
        assert_eq!(as_sent(&format!("/{}", "a".repeat(MAX_PATH_LEN))), None);
    }

    #[test]
    fn the_normalised_path_is_the_one_a_server_routes() {
        for (target, routed) in [
            ("/admin", "/admin"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E%2Fadmin", "/admin"),
            ("/%61dmin/users", "/admin/users"),
            ("//admin", "/admin"),
            ("/./admin/./x/", "/admin/x/"),
            ("/../../admin", "/admin"),
            ("/admin/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("http://h/x/../admin?q", "/admin"),
            ("/100%", "/100%"),
            ("/%zz/admin", "/%zz/admin"),
            ("/%+5/admin", "/%+5/admin"),
            ("/%ff", "/\u{fffd}"),
        ] {
            assert_eq!(normalised(target).as_deref(), Some(routed), "{target}");
        }
        assert_eq!(normalised("*"), None);
    }

    proptest::proptest! {
        #[test]
        fn a_normalised_path_is_its_own_normal_form(target in "/[a-z./%2eEfF]{0,40}") {
            let once = normalised(&target);
            proptest::prop_assert!(once.is_some());
            let once = once.unwrap_or_default();
            proptest::prop_assert!(once.starts_with('/'));
            proptest::prop_assert!(!once.contains("//"));
            let segments: Vec<&str> = once.split('/').collect();
            proptest::prop_assert!(!segments.contains(&".."));
            proptest::prop_assert!(!segments.contains(&"."));
        }
    }
}
