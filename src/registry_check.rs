//! The credential check (`spec.verify`): log in once to a registry with the credentials a
//! Secret holds, the way a container runtime would before pulling, and say whether the
//! registry accepted them.
//!
//! One request per registry host: `GET https://<host>/v2/`, the
//! [API version check](https://distribution.github.io/distribution/spec/api/#api-version-check)
//! of the Docker Registry HTTP API v2, with
//! - `Authorization: Basic base64(AWS:<password>)` for private ECR registries, which answer
//!   200 to valid credentials and 401 (with a `Basic` challenge) to others
//!   ([ECR registry authentication](https://docs.aws.amazon.com/AmazonECR/latest/userguide/registry_auth.html));
//! - `Authorization: Bearer <authorizationToken>` for ECR Public (`public.ecr.aws`), which
//!   refuses `Basic` (400 `DENIED`) and takes the `GetAuthorizationToken` token, the base64
//!   of `AWS:<password>`, as a bearer token.
//!
//! The credentials never leave the request header: not in spans, logs, errors or `Debug`.
//! Spans (`registry_check`) carry the host, the HTTP status and the outcome only.
//!
//! TLS is rustls with aws-lc-rs and the system's trust roots, the stack kube and the AWS
//! SDK already use. For tests, [`VerifySettings::endpoint`] sends every check to one base
//! URL instead (the `Host` header still names the registry), like `AWS_ENDPOINT_URL_ECR`
//! does for the ECR API.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};

use crate::api::PUBLIC_HOST;

/// The path every check asks for.
pub const CHECK_PATH: &str = "/v2/";

/// How the credential check runs (built from the operator config's `verify` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySettings {
    /// `spec.verify` of resources that do not set it. Default `false`.
    pub default: bool,
    /// How long one check (connect, TLS, request and answer headers) may take before the
    /// registry counts as unreachable. Default 10 s.
    pub timeout: Duration,
    /// How soon a check that could not reach a registry (or that the registry could not
    /// answer, 5xx or 429) is tried again. Default 5 min.
    pub recheck: Duration,
    /// Base URL (`http://127.0.0.1:5000`) every check is sent to instead of
    /// `https://<host>`; the `Host` header still names the registry. `None` (the default):
    /// the registry itself.
    pub endpoint: Option<Uri>,
}

impl Default for VerifySettings {
    fn default() -> Self {
        Self {
            default: false,
            timeout: Duration::from_secs(10),
            recheck: Duration::from_secs(300),
            endpoint: None,
        }
    }
}

/// Why [`VerifySettings::endpoint`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL.
    #[error("{0:?} is not a URL")]
    NotAUrl(String),
    /// Not `http` or `https`, or without a host.
    #[error("{0:?} must be an http:// or https:// URL with a host")]
    NotHttp(String),
    /// It has a path, query or fragment (the check asks for `/v2/` on it).
    #[error("{0:?} must be a base URL without a path or query (the check asks for /v2/ on it)")]
    HasPath(String),
}

/// Parses a base URL for [`VerifySettings::endpoint`]: `http(s)://host[:port]`, with at
/// most a trailing `/`.
///
/// # Errors
/// [`EndpointError`] saying what is wrong with it.
pub fn parse_endpoint(s: &str) -> Result<Uri, EndpointError> {
    let uri: Uri = s
        .parse()
        .map_err(|_| EndpointError::NotAUrl(s.to_string()))?;
    let http = matches!(uri.scheme_str(), Some("http" | "https"));
    if !http || uri.host().is_none_or(str::is_empty) {
        return Err(EndpointError::NotHttp(s.to_string()));
    }
    let path_ok = uri
        .path_and_query()
        .is_none_or(|pq| pq.query().is_none() && matches!(pq.path(), "" | "/"));
    if !path_ok || s.contains('#') {
        return Err(EndpointError::HasPath(s.to_string()));
    }
    Ok(uri)
}

/// How one registry answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// A 2xx answer: the registry accepted the credentials.
    Accepted {
        /// The HTTP status.
        status: StatusCode,
    },
    /// The registry answered and did not accept them (401, 403, 400, 404, …).
    Rejected {
        /// The HTTP status.
        status: StatusCode,
    },
    /// The registry answered that it cannot decide now (5xx, 429).
    Unavailable {
        /// The HTTP status.
        status: StatusCode,
    },
    /// No answer.
    Unreachable {
        /// Why, as a fixed word: `timeout`, `connect` (DNS, TCP or TLS), `protocol`,
        /// `no_trust_roots` (the system has no CA certificates), `invalid_request`.
        class: &'static str,
    },
}

impl CheckResult {
    /// The metric label: `verified`, `rejected`, `unavailable` or `unreachable`.
    pub fn label(&self) -> &'static str {
        match self {
            CheckResult::Accepted { .. } => "verified",
            CheckResult::Rejected { .. } => "rejected",
            CheckResult::Unavailable { .. } => "unavailable",
            CheckResult::Unreachable { .. } => "unreachable",
        }
    }

    /// What a registry's HTTP status means for the check.
    pub fn of_status(status: StatusCode) -> Self {
        if status.is_success() {
            CheckResult::Accepted { status }
        } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            CheckResult::Unavailable { status }
        } else {
            CheckResult::Rejected { status }
        }
    }
}

/// The check of one registry host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The registry host, e.g. `123456789012.dkr.ecr.us-east-1.amazonaws.com`.
    pub host: String,
    /// How it answered.
    pub result: CheckResult,
}

impl std::fmt::Display for Check {
    /// `<host> answered 401 Unauthorized to GET /v2/`, or `<host> could not be reached
    /// (timeout)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.result {
            CheckResult::Accepted { status }
            | CheckResult::Rejected { status }
            | CheckResult::Unavailable { status } => {
                write!(f, "{} answered {} to GET {CHECK_PATH}", self.host, status)
            }
            CheckResult::Unreachable { class } => {
                write!(f, "{} could not be reached ({class})", self.host)
            }
        }
    }
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Runs credential checks; one client (and its connection pool) shared by all reconciles.
/// Cheap to build: the TLS trust roots are loaded on the first check.
pub struct RegistryChecker {
    settings: VerifySettings,
    client: OnceLock<Result<HttpsClient, &'static str>>,
}

impl std::fmt::Debug for RegistryChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryChecker")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RegistryChecker {
    /// A checker with `settings`.
    pub fn new(settings: VerifySettings) -> Self {
        Self {
            settings,
            client: OnceLock::new(),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &VerifySettings {
        &self.settings
    }

    fn client(&self) -> Result<&HttpsClient, &'static str> {
        self.client
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_provider_and_native_roots(provider)
                    .map_err(|error| {
                        tracing::warn!(%error, "no TLS trust roots: registry checks cannot run");
                        "no_trust_roots"
                    })?
                    .https_or_http()
                    .enable_http1()
                    .build();
                Ok(Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(connector))
            })
            .as_ref()
            .map_err(|class| *class)
    }

    /// The URL a check of `host` goes to: `https://<host>/v2/`, or the endpoint override's.
    pub fn url(&self, host: &str) -> String {
        match &self.settings.endpoint {
            Some(base) => format!(
                "{}://{}{CHECK_PATH}",
                base.scheme_str().unwrap_or("https"),
                base.authority().map(|a| a.as_str()).unwrap_or(host)
            ),
            None => format!("https://{host}{CHECK_PATH}"),
        }
    }

    /// Checks `host` with `username` and `password` (the Docker login of the Secret):
    /// one `GET /v2/`, bounded by [`VerifySettings::timeout`].
    #[tracing::instrument(
        name = "registry_check",
        skip_all,
        fields(host = %host, status = tracing::field::Empty, outcome = tracing::field::Empty)
    )]
    pub async fn check(&self, host: &str, username: &str, password: &SecretString) -> Check {
        let result = self.ask(host, username, password).await;
        let span = tracing::Span::current();
        if let CheckResult::Accepted { status }
        | CheckResult::Rejected { status }
        | CheckResult::Unavailable { status } = &result
        {
            span.record("status", status.as_u16());
        }
        span.record("outcome", result.label());
        tracing::debug!(outcome = result.label(), "registry checked");
        Check {
            host: host.to_string(),
            result,
        }
    }

    async fn ask(&self, host: &str, username: &str, password: &SecretString) -> CheckResult {
        let client = match self.client() {
            Ok(c) => c,
            Err(class) => return CheckResult::Unreachable { class },
        };
        let Ok(request) = request(&self.url(host), host, username, password) else {
            return CheckResult::Unreachable {
                class: "invalid_request",
            };
        };
        match tokio::time::timeout(self.settings.timeout, client.request(request)).await {
            Err(_) => CheckResult::Unreachable { class: "timeout" },
            Ok(Err(error)) if error.is_connect() => CheckResult::Unreachable { class: "connect" },
            Ok(Err(_)) => CheckResult::Unreachable { class: "protocol" },
            // The body is not read: the status says it all (and is dropped with the answer).
            Ok(Ok(answer)) => CheckResult::of_status(answer.status()),
        }
    }
}

/// The `Authorization` header value for `host`: `Bearer base64(user:password)` for ECR
/// Public, `Basic base64(user:password)` otherwise. Marked sensitive.
fn authorization(host: &str, username: &str, password: &SecretString) -> Option<HeaderValue> {
    let login = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose_secret()));
    let scheme = if host == PUBLIC_HOST {
        "Bearer"
    } else {
        "Basic"
    };
    let mut value = HeaderValue::from_str(&format!("{scheme} {login}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The `GET /v2/` request of a check. Its error says nothing about the credentials.
fn request(
    url: &str,
    host: &str,
    username: &str,
    password: &SecretString,
) -> Result<Request<Empty<Bytes>>, ()> {
    let auth = authorization(host, username, password).ok_or(())?;
    Request::builder()
        .method(Method::GET)
        .uri(url)
        .header(HOST, HeaderValue::from_str(host).map_err(|_| ())?)
        .header(AUTHORIZATION, auth)
        .header(http::header::USER_AGENT, "ecr-token-refresh")
        .body(Empty::new())
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    #[test]
    fn statuses_are_classified() {
        for (code, label) in [
            (200, "verified"),
            (204, "verified"),
            (401, "rejected"),
            (403, "rejected"),
            (400, "rejected"),
            (404, "rejected"),
            (301, "rejected"),
            (429, "unavailable"),
            (500, "unavailable"),
            (503, "unavailable"),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(CheckResult::of_status(status).label(), label, "{code}");
        }
    }

    #[test]
    fn messages_name_the_host_and_the_status() {
        let rejected = Check {
            host: HOST.into(),
            result: CheckResult::Rejected {
                status: StatusCode::UNAUTHORIZED,
            },
        };
        assert_eq!(
            rejected.to_string(),
            format!("{HOST} answered 401 Unauthorized to GET /v2/")
        );
        let unreachable = Check {
            host: HOST.into(),
            result: CheckResult::Unreachable { class: "timeout" },
        };
        assert_eq!(
            unreachable.to_string(),
            format!("{HOST} could not be reached (timeout)")
        );
    }

    #[test]
    fn the_header_is_basic_for_private_registries_bearer_for_ecr_public_and_sensitive() {
        let pw = SecretString::from("pa:ss".to_string());
        let basic = authorization(HOST, "AWS", &pw).unwrap();
        // base64("AWS:pa:ss"), as in the Secret's `auth`.
        assert_eq!(basic.to_str().unwrap(), "Basic QVdTOnBhOnNz");
        assert!(basic.is_sensitive());
        let bearer = authorization(PUBLIC_HOST, "AWS", &pw).unwrap();
        assert_eq!(bearer.to_str().unwrap(), "Bearer QVdTOnBhOnNz");
        // A Debug print of the request never shows the credentials.
        let req = request(&format!("https://{HOST}/v2/"), HOST, "AWS", &pw).unwrap();
        let shown = format!("{req:?}");
        assert!(
            !shown.contains("QVdTOnBhOnNz") && !shown.contains("pa:ss"),
            "{shown}"
        );
    }

    #[test]
    fn the_url_is_the_registry_or_the_endpoint_override() {
        let direct = RegistryChecker::new(VerifySettings::default());
        assert_eq!(direct.url(HOST), format!("https://{HOST}/v2/"));
        let overridden = RegistryChecker::new(VerifySettings {
            endpoint: Some(parse_endpoint("http://127.0.0.1:5000/").unwrap()),
            ..VerifySettings::default()
        });
        assert_eq!(overridden.url(HOST), "http://127.0.0.1:5000/v2/");
        let req = request(&overridden.url(HOST), HOST, "AWS", &"x".to_string().into()).unwrap();
        assert_eq!(
            req.headers()[http::header::HOST],
            HOST,
            "the Host header names the registry"
        );
    }

    #[test]
    fn endpoints_must_be_base_urls() {
        assert!(parse_endpoint("http://127.0.0.1:5000").is_ok());
        assert!(parse_endpoint("https://registry.example").is_ok());
        for bad in [
            "127.0.0.1:5000",
            "ftp://x",
            "http://x/v2/",
            "http://x?y=1",
            "not a url",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_silent_one_times_out() {
        // A port nothing listens on (bound, then released).
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let checker = RegistryChecker::new(VerifySettings {
            endpoint: Some(parse_endpoint(&format!("http://{addr}")).unwrap()),
            ..VerifySettings::default()
        });
        let pw = SecretString::from("pw".to_string());
        let check = checker.check(HOST, "AWS", &pw).await;
        assert_eq!(check.result, CheckResult::Unreachable { class: "connect" });

        // Accepts the connection, never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let checker = RegistryChecker::new(VerifySettings {
            endpoint: Some(parse_endpoint(&format!("http://{addr}")).unwrap()),
            timeout: Duration::from_millis(200),
            ..VerifySettings::default()
        });
        let check = checker.check(HOST, "AWS", &pw).await;
        assert_eq!(check.result, CheckResult::Unreachable { class: "timeout" });
        drop(silent);
    }
}
