//! A tiny OTLP trace receiver on 127.0.0.1 for tests: OTLP/HTTP (`POST /v1/traces`,
//! protobuf) and OTLP/gRPC (`TraceService/Export` over h2c), decoding with
//! `opentelemetry-proto` and keeping every span in a flat, easy-to-assert form.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use axum::routing::post;
use http_body_util::StreamBody;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::sync::{Notify, oneshot};

/// One received span.
#[derive(Debug, Clone)]
pub struct RecordedSpan {
    pub name: String,
    /// Hex.
    pub trace_id: String,
    /// Hex.
    pub span_id: String,
    /// Hex; empty for a root span.
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
    /// Span events: (name, attributes).
    pub events: Vec<(String, BTreeMap<String, String>)>,
    /// The resource attributes of the batch the span came in.
    pub resource: BTreeMap<String, String>,
    /// Which transport delivered it: `http` or `grpc`.
    pub transport: &'static str,
}

impl RecordedSpan {
    /// Every string this span carries (names, keys, values), for leak checks.
    pub fn all_text(&self) -> String {
        let mut out = format!("{} ", self.name);
        for (k, v) in self.attributes.iter().chain(self.resource.iter()) {
            out.push_str(&format!("{k}={v} "));
        }
        for (name, attrs) in &self.events {
            out.push_str(&format!("{name} "));
            for (k, v) in attrs {
                out.push_str(&format!("{k}={v} "));
            }
        }
        out
    }
}

#[derive(Default)]
struct Shared {
    spans: Mutex<Vec<RecordedSpan>>,
    notify: Notify,
}

/// The running receiver; stops on drop.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Shared {
    fn record(&self, request: ExportTraceServiceRequest, transport: &'static str) {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.resource_spans {
            let resource = rs
                .resource
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(RecordedSpan {
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        attributes: attrs(&s.attributes),
                        events: s
                            .events
                            .iter()
                            .map(|e| (e.name.clone(), attrs(&e.attributes)))
                            .collect(),
                        resource: resource.clone(),
                        transport,
                    });
                }
            }
        }
        drop(spans);
        self.notify.notify_waiters();
    }
}

async fn http_export(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            shared.record(request, "http");
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// Unary gRPC: a 5-byte frame header (compression flag, big-endian length) and the message;
/// the answer is an empty `ExportTraceServiceResponse` and a `grpc-status: 0` trailer.
async fn grpc_export(State(shared): State<Arc<Shared>>, body: Bytes) -> Response<Body> {
    let ok = body.len() >= 5 && body[0] == 0 && {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        body.len() == 5 + len
            && ExportTraceServiceRequest::decode(&body[5..])
                .map(|r| shared.record(r, "grpc"))
                .is_ok()
    };
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "grpc-status",
        HeaderValue::from_static(if ok { "0" } else { "3" }),
    );
    let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(Body::new(StreamBody::new(futures::stream::iter(frames))))
        .unwrap()
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/traces", post(http_export))
            .route(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                post(grpc_export),
            )
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            shared,
            stop: Some(stop),
        }
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<RecordedSpan> {
        self.shared.spans.lock().unwrap().clone()
    }

    /// Waits (woken by each export) until `f(spans)` holds; false after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, f: impl Fn(&[RecordedSpan]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            if f(&self.spans()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return f(&self.spans());
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
