//! The cluster token: the shared secret that authenticates gRPC calls between orchestrators
//! and edges (`authorization: Bearer <token>`) and keys redirect tickets.

use subtle::ConstantTimeEq;

/// Whether an `authorization` header value is `Bearer <token>`; compares in constant time.
/// An empty configured token matches nothing.
pub fn bearer_matches(header: Option<&str>, token: &str) -> bool {
    let Some((scheme, presented)) = header.and_then(|h| h.split_once(' ')) else {
        return false;
    };
    !token.is_empty()
        && scheme.eq_ignore_ascii_case("bearer")
        && bool::from(presented.trim().as_bytes().ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::bearer_matches;

    #[test]
    fn only_the_exact_bearer_token_matches() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(Some("bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
        assert!(!bearer_matches(Some("Bearer "), ""));
    }
}
