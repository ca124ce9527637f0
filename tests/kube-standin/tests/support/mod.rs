//! Shared helpers of the HTTP-level tests: a stand-in with a kube client,
//! Status access, and raw requests for what the typed client hides.
#![allow(dead_code)]

use std::time::Duration;

use http_body_util::BodyExt;
use kube::core::Status;
use kube::{Client, Config};
use kube_standin::{RunningServer, StandIn};

/// How long a test waits for something to happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// A served stand-in and clients for it.
pub struct Api {
    pub standin: StandIn,
    pub server: RunningServer,
    /// kube's default client (retries 429/503/504).
    pub client: Client,
    /// A client without retries, for observing error answers.
    pub no_retry: Client,
}

pub async fn start() -> Api {
    let standin = StandIn::new();
    let server = standin.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = Client::try_from(Config::new(server.url.parse().unwrap())).unwrap();
    let mut config = Config::new(server.url.parse().unwrap());
    config.default_retry = false;
    let no_retry = Client::try_from(config).unwrap();
    Api {
        standin,
        server,
        client,
        no_retry,
    }
}

/// The Status of an API error (panics on other errors).
pub fn status(err: kube::Error) -> Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// (code, reason, message) of an API error.
pub fn crm(err: kube::Error) -> (u16, String, String) {
    let s = status(err);
    (s.code, s.reason, s.message)
}

/// The `field` and `message` of the causes of an Invalid Status.
pub fn causes(s: &Status) -> Vec<(String, String)> {
    s.details
        .as_ref()
        .map(|d| {
            d.causes
                .iter()
                .map(|c| (c.field.clone(), c.message.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A raw HTTP answer.
pub struct Raw {
    pub code: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Raw {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Send a raw request (no retries, no error mapping).
pub async fn raw(
    api: &Api,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Raw {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", api.server.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = api
        .no_retry
        .send(req.body(kube::client::Body::from(body)).unwrap())
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Raw {
        code,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The message of a name that is not a DNS-1123 subdomain.
pub const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// The message of an invalid qualified name part (label keys).
pub const NAME_PART_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start \
and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation \
is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
