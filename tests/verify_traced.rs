//! The credential check is traced: one `registry_check` span per registry host with the
//! host, the HTTP status and the outcome, and never a credential in a span or log event.
//!
//! This binary holds a single test: it installs the global subscriber (tracing caches
//! each callsite's interest process-wide, so a scoped one could miss spans).

mod common;

use std::sync::{Arc, Mutex};

use common::registry::Registry;
use ecr_token_refresh::registry_check::{
    CheckResult, RegistryChecker, VerifySettings, parse_endpoint,
};
use secrecy::SecretString;
use tracing_subscriber::layer::SubscriberExt;

const GOOD: &str = "issued-password:1";
const BAD: &str = "never-issued-password:2";
const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// A span's id, name and fields (name, value).
type SpanSeen = (u64, String, Vec<(String, String)>);

/// Span names with their fields, and every log event's fields, as text.
#[derive(Clone, Default)]
struct Seen {
    spans: Arc<Mutex<Vec<SpanSeen>>>,
    events: Arc<Mutex<Vec<String>>>,
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
}

impl<S> tracing_subscriber::Layer<S> for Seen
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        self.spans.lock().unwrap().push((
            id.into_u64(),
            attrs.metadata().name().to_string(),
            fields,
        ));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut spans = self.spans.lock().unwrap();
        if let Some((_, _, fields)) = spans.iter_mut().rev().find(|(i, _, _)| *i == id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        self.events.lock().unwrap().push(format!("{fields:?}"));
    }
}

#[tokio::test]
async fn each_check_is_a_span_with_host_status_and_outcome_and_no_credential() {
    let seen = Seen::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(seen.clone()))
        .unwrap();

    let registry = Registry::start(|_, pw| pw == GOOD).await;
    let checker = RegistryChecker::new(VerifySettings {
        endpoint: Some(parse_endpoint(&registry.url).unwrap()),
        ..VerifySettings::default()
    });
    let good = checker
        .check(HOST, "AWS", &SecretString::from(GOOD.to_string()))
        .await;
    let bad = checker
        .check(HOST, "AWS", &SecretString::from(BAD.to_string()))
        .await;
    assert!(
        matches!(good.result, CheckResult::Accepted { .. }),
        "{good}"
    );
    assert!(matches!(bad.result, CheckResult::Rejected { .. }), "{bad}");

    let spans = seen.spans.lock().unwrap().clone();
    let checks: Vec<_> = spans
        .iter()
        .filter(|(_, name, _)| name == "registry_check")
        .map(|(_, _, fields)| fields.clone())
        .collect();
    let field = |fields: &[(String, String)], k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(checks.len(), 2, "{spans:?}");
    for (fields, status, outcome) in [
        (&checks[0], "200", "\"verified\""),
        (&checks[1], "401", "\"rejected\""),
    ] {
        assert_eq!(field(fields, "host"), HOST, "{fields:?}");
        assert_eq!(field(fields, "status"), status, "{fields:?}");
        assert_eq!(field(fields, "outcome"), outcome, "{fields:?}");
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["host", "status", "outcome"], "host and status only");
    }
    let everything = format!("{spans:?}{:?}", seen.events.lock().unwrap());
    use base64::Engine as _;
    let b64 = |pw: &str| base64::engine::general_purpose::STANDARD.encode(format!("AWS:{pw}"));
    for secret in [GOOD.to_string(), BAD.to_string(), b64(GOOD), b64(BAD)] {
        assert!(!everything.contains(&secret), "a credential was traced");
    }
}
