//! What a release is made of, parsed once where it enters: the API handler builds these
//! from a request, and the log's records are read back through the same parsers, so a
//! release the CLI, the dashboard or a replayed log brings in has passed the same checks.

use crate::api::CreateRelease;
use crate::error::ApiError;
use serde::{Deserialize, Serialize};

/// The longest version name.
pub const MAX_VERSION_LEN: usize = 128;
/// The longest artifact URL.
pub const MAX_ARTIFACT_LEN: usize = 4096;
/// The schemes an artifact may be fetched with.
pub const ARTIFACT_SCHEMES: [&str; 3] = ["https", "http", "file"];

/// A version name: 1 to 128 characters of ASCII letters, digits, `.`, `_` and `-`,
/// starting with a letter or a digit. It is safe as a path segment (never `.` or
/// `..`), as a command's argument (never an option such as `-rf`) and inside a URL
/// or a query's label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(String);

impl Version {
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(first) = text.chars().next() else { return Err("a version must not be empty".to_owned()) };
        if text.len() > MAX_VERSION_LEN {
            return Err(format!("a version has at most {MAX_VERSION_LEN} characters, this one has {}", text.len()));
        }
        if !first.is_ascii_alphanumeric() {
            return Err(format!("a version starts with a letter or a digit, not {first:?}"));
        }
        if let Some(bad) = text.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(format!("{bad:?} is not allowed in a version; use letters, digits, '.', '_' and '-'"));
        }
        Ok(Version(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where an agent fetches a release's artifact: an `https`, `http` or `file` URL made
/// of the characters RFC 3986 allows (so no space, `"`, `<`, `>`, `{`, `}`, `|`, `\`,
/// `^` or backtick: the parser would have to escape them), kept in the URL parser's
/// normal form. Credentials in the URL are refused: every read of the release shows it.
/// For a service of functions the artifact is instead the function version to ship: its
/// number (`7`) or its ARN (`arn:aws:lambda:REGION:ACCOUNT:function:NAME:7`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArtifactUrl(String);

impl ArtifactUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_ARTIFACT_LEN {
            return Err(format!("an artifact URL has at most {MAX_ARTIFACT_LEN} characters"));
        }
        if rollwave_aws::version_of_artifact(text).is_ok() {
            return Ok(ArtifactUrl(text.to_owned()));
        }
        if let Some(bad) = text.chars().find(|&c| !is_uri_char(c)) {
            return Err(format!("{bad:?} is not allowed in a URL; percent-encode it"));
        }
        let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if !ARTIFACT_SCHEMES.contains(&url.scheme()) {
            return Err(format!("the scheme {:?} is not allowed; use https, http or file", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("an artifact URL must not carry credentials".to_owned());
        }
        Ok(ArtifactUrl(url.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 3986's unreserved and reserved characters, and `%` for escapes.
fn is_uri_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

/// An artifact's SHA-256: 64 hexadecimal digits, kept in lower case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256(String);

impl Sha256 {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("sha256 must be 64 hexadecimal digits".to_owned());
        }
        Ok(Sha256(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_conversions {
    ($($name:ident),*) => {$(
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                Self::parse(&text)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
text_conversions!(Version, ArtifactUrl, Sha256);

/// The largest flag document a flag release may carry, as JSON text.
pub const MAX_FLAGS_LEN: usize = 1 << 20;

/// A flag release's payload: a whole flagd document that compiles (every flag, variant,
/// evaluator and rule checked by `rollwave-flags`), kept as the JSON it came as so that
/// hosts and relays serve exactly what was released.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub struct FlagDocument(std::sync::Arc<serde_json::Value>);

impl FlagDocument {
    /// The document, or every error found in it (places as JSON pointers).
    pub fn parse(doc: &serde_json::Value) -> Result<Self, Vec<rollwave_flags::Diagnostic>> {
        let len = serde_json::to_vec(doc).map(|v| v.len()).unwrap_or(usize::MAX);
        if len > MAX_FLAGS_LEN {
            return Err(vec![rollwave_flags::Diagnostic {
                origin: "flags".into(),
                line: 0,
                col: 0,
                message: format!("a flag document has at most {MAX_FLAGS_LEN} bytes of JSON, this one has {len}"),
                pointer: String::new(),
            }]);
        }
        rollwave_flags::FlagSet::from_value("flags", doc)?;
        Ok(FlagDocument(std::sync::Arc::new(doc.clone())))
    }

    pub fn value(&self) -> &serde_json::Value {
        &self.0
    }
}

impl TryFrom<serde_json::Value> for FlagDocument {
    type Error = String;
    fn try_from(doc: serde_json::Value) -> Result<Self, String> {
        FlagDocument::parse(&doc)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    }
}

impl From<FlagDocument> for serde_json::Value {
    fn from(doc: FlagDocument) -> serde_json::Value {
        std::sync::Arc::unwrap_or_clone(doc.0)
    }
}

/// A new release's parts, or a 422 that names the field at fault (`details.field`).
pub struct NewRelease {
    pub version: Version,
    pub artifact: Option<ArtifactUrl>,
    pub sha256: Option<Sha256>,
    pub flags: Option<FlagDocument>,
}

impl NewRelease {
    pub fn parse(request: &CreateRelease) -> Result<Self, ApiError> {
        let flags = match &request.flags {
            None => None,
            Some(doc) => Some(FlagDocument::parse(doc).map_err(|errors| {
                let details: Vec<serde_json::Value> =
                    errors.iter().map(|e| serde_json::json!({ "pointer": e.pointer, "message": e.message })).collect();
                let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
                ApiError::invalid(format!("flags: {} error(s), the first: {first}", errors.len()))
                    .with_details(serde_json::json!({ "field": "flags", "errors": details }))
            })?),
        };
        if flags.is_some() && (request.artifact.is_some() || request.sha256.is_some()) {
            field(
                "flags",
                Err::<(), _>("a flag release carries its flags only: leave out artifact and sha256".into()),
            )?;
        }
        Ok(NewRelease {
            version: field("version", Version::parse(&request.version))?,
            artifact: request.artifact.as_deref().map(|a| field("artifact", ArtifactUrl::parse(a))).transpose()?,
            sha256: request.sha256.as_deref().map(|s| field("sha256", Sha256::parse(s))).transpose()?,
            flags,
        })
    }
}

fn field<T>(name: &str, parsed: Result<T, String>) -> Result<T, ApiError> {
    parsed.map_err(|e| ApiError::invalid(format!("{name}: {e}")).with_details(serde_json::json!({ "field": name })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_that_could_act_as_paths_or_options_are_refused() {
        for bad in [".", "..", "-rf", "--help", ".hidden", "", "a/b", "a b", "v$1", "v;x", "ü"] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Version::parse(&"v".repeat(MAX_VERSION_LEN + 1)).is_err());
        for good in ["v2", "2026.12.01-rc.1", "build_17", "a..b", &"v".repeat(MAX_VERSION_LEN)] {
            assert_eq!(Version::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn artifacts_need_an_allowed_scheme_and_no_credentials() {
        for bad in [
            "https://e.x/a.tgz; id > /tmp/p; #",
            "ftp://e.x/a.tgz",
            "javascript:alert(1)",
            "a.tgz",
            "-rf",
            "https://user:pw@e.x/a.tgz",
            "https://e.x/a.tgz?x=${IFS}",
            "https://e.x/a`id`.tgz",
            "arn:aws:lambda:us-east-1:123456789012:function:checkout:$LATEST",
            "arn:aws:lambda:us-east-1:123:function:checkout:7; id",
        ] {
            assert!(ArtifactUrl::parse(bad).is_err(), "{bad:?}");
        }
        for good in [
            "https://e.x/a.tgz",
            "http://10.0.0.1:8080/v2.tgz?sig=abc",
            "file:///srv/a.tgz",
            "https://e.x/a.tgz?x=$(id);y",
            "7",
            "arn:aws:lambda:us-east-1:123456789012:function:checkout:7",
        ] {
            assert_eq!(ArtifactUrl::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn a_logged_release_is_read_back_through_the_same_checks() {
        assert!(serde_json::from_str::<Version>("\"--help\"").is_err());
        assert!(serde_json::from_str::<ArtifactUrl>("\"ftp://e.x/a\"").is_err());
        assert_eq!(serde_json::to_string(&Version::parse("v2").unwrap()).unwrap(), "\"v2\"");
        let record = |version: &str, artifact: &str| {
            let json = serde_json::json!({ "type": "create_release", "version": version, "artifact": artifact });
            serde_json::from_value::<crate::state::LogInput>(json)
        };
        assert!(record("v2", "https://e.x/a.tgz").is_ok());
        assert!(record("--help", "https://e.x/a.tgz").is_err());
        assert!(record("v2", "https://e.x/a.tgz; id > /tmp/p; #").is_err());
    }
}
