//! Image references: `host[:port]/repository:tag` or `host[:port]/repository@sha256:HEX`, with an
//! optional `oci://` prefix (as a manifest writes them).

use glint::ImageDigest;
use std::fmt;
use std::str::FromStr;

/// Why a text is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// No `/` between the registry and the repository.
    #[error("`{reference}` names no registry: write `host[:port]/repository:tag`")]
    NoRegistry {
        /// The text.
        reference: String,
    },
    /// The registry part is not `host[:port]`.
    #[error("`{registry}` in `{reference}` is not a registry host[:port]")]
    BadRegistry {
        /// The text.
        reference: String,
        /// The registry part.
        registry: String,
    },
    /// The repository is not lowercase path components of `[a-z0-9]` separated by `.`, `_`, `-`.
    #[error("`{repository}` in `{reference}` is not a repository name (lowercase letters, digits, `._-`, components separated by `/`)")]
    BadRepository {
        /// The text.
        reference: String,
        /// The repository part.
        repository: String,
    },
    /// The tag is not `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    #[error(
        "`{tag}` in `{reference}` is not a tag (letters, digits, `_.-`, at most 128, not starting with `.` or `-`)"
    )]
    BadTag {
        /// The text.
        reference: String,
        /// The tag part.
        tag: String,
    },
    /// Neither `:tag` nor `@sha256:...`.
    #[error("`{reference}` has neither a `:tag` nor an `@sha256:` digest")]
    NoTagOrDigest {
        /// The text.
        reference: String,
    },
    /// The digest after `@` is not a sha256 digest.
    #[error("bad digest in `{reference}`")]
    BadDigest {
        /// The text.
        reference: String,
        /// Why.
        #[source]
        source: glint::DigestParseError,
    },
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// `host[:port]`.
    pub registry: String,
    /// `team/hello`.
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The manifest digest (OCI: `@sha256:` addresses the manifest, not the guest file), if any.
    pub digest: Option<ImageDigest>,
}

impl ImageReference {
    /// The same repository at another tag (e.g. the signature tag).
    pub fn at_tag(&self, tag: impl Into<String>) -> ImageReference {
        ImageReference { tag: Some(tag.into()), digest: None, ..self.clone() }
    }

    /// As the registry client takes it.
    pub fn to_oci(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (Some(tag), Some(d)) => oci_client::Reference::with_tag_and_digest(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone(),
                d.to_string(),
            ),
            (_, Some(d)) => {
                oci_client::Reference::with_digest(self.registry.clone(), self.repository.clone(), d.to_string())
            }
            (tag, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone().unwrap_or_else(|| "latest".to_owned()),
            ),
        }
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageReference {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<ImageReference, ReferenceError> {
        let reference = text.chars().take(300).collect::<String>();
        let body = text.strip_prefix("oci://").unwrap_or(text);
        let Some((registry, rest)) = body.split_once('/') else {
            return Err(ReferenceError::NoRegistry { reference });
        };
        if !valid_registry(registry) {
            return Err(ReferenceError::BadRegistry { reference, registry: registry.to_owned() });
        }
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, d)) => {
                let d =
                    d.parse().map_err(|source| ReferenceError::BadDigest { reference: reference.clone(), source })?;
                (rest, Some(d))
            }
            None => (rest, None),
        };
        // A `:` after the last `/` starts the tag.
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (rest, None),
        };
        if !valid_repository(repository) {
            return Err(ReferenceError::BadRepository { reference, repository: repository.to_owned() });
        }
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(ReferenceError::BadTag { reference, tag: tag.to_owned() });
            }
        }
        if tag.is_none() && digest.is_none() {
            return Err(ReferenceError::NoTagOrDigest { reference });
        }
        Ok(ImageReference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }
}

fn valid_registry(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

fn valid_repository(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('/').all(|component| {
            let b = component.as_bytes();
            let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            b.first().is_some_and(alnum)
                && b.last().is_some_and(alnum)
                && b.iter().all(|c| alnum(c) || matches!(c, b'.' | b'_' | b'-'))
        })
}

fn valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=128).contains(&b.len())
        && b.first().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_print() {
        let r: ImageReference = "127.0.0.1:5000/team/hello:1.2".parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/hello");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/hello:1.2");
        let d = glint::ImageDigest::of(b"x");
        let r: ImageReference = format!("oci://registry.example/hello@{d}").parse().unwrap();
        assert_eq!((r.tag, r.digest), (None, Some(d)));
        let r: ImageReference = format!("localhost/a/b:v1@{d}").parse().unwrap();
        assert_eq!(r.to_string(), format!("localhost/a/b:v1@{d}"));
    }

    #[test]
    fn bad_references_are_typed() {
        let e = |s: &str| s.parse::<ImageReference>().unwrap_err();
        assert!(matches!(e("hello:1"), ReferenceError::NoRegistry { .. }));
        assert!(matches!(e("bad_host:5000/hello:1"), ReferenceError::BadRegistry { .. }));
        assert!(matches!(e("host:99999/hello:1"), ReferenceError::BadRegistry { .. }));
        assert!(matches!(e("host/Hello:1"), ReferenceError::BadRepository { .. }));
        assert!(matches!(e("host/hello:-x"), ReferenceError::BadTag { .. }));
        assert!(matches!(e("host/hello"), ReferenceError::NoTagOrDigest { .. }));
        assert!(matches!(e("host/hello@sha256:12"), ReferenceError::BadDigest { .. }));
        // A port is not a tag.
        assert!(matches!(e("host:5000/hello"), ReferenceError::NoTagOrDigest { .. }));
    }
}
