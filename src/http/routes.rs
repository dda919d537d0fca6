//! What the endpoint answers: `GET /metrics` (the registry as OpenMetrics text) and, with a
//! node, `GET /peers` (JSON), `GET /network.json` (JSON) and `GET /network` (a page drawing the
//! network, [`PAGE`]). Every answer is bounded: the node is asked with a timeout, a few at a
//! time, and a JSON body past [`MAX_BODY`] is refused.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header, header::HeaderValue};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    metrics::{CONTENT_TYPE, Registry},
    node::Node,
    view,
};

/// The page of `GET /network`: self-contained (inline style and script, no other resource);
/// `{{NONCE}}` is replaced per answer with the nonce its Content-Security-Policy allows.
pub const PAGE: &str = include_str!("network.html");
/// How long the node may take to answer one question.
const NODE_TIMEOUT: Duration = Duration::from_secs(3);
/// Answers that ask the node, at once, from the question until the answer is written (or its
/// connection ends); more get 503. With [`MAX_BODY`], this bounds the memory of JSON answers.
const NODE_QUERIES: usize = 4;
/// Largest JSON body served.
pub const MAX_BODY: usize = 8 << 20;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// What every connection's answers are made from.
#[derive(Debug)]
pub(super) struct Context {
    registry: Arc<Registry>,
    node: Option<Node>,
    queries: Arc<Semaphore>,
}

/// Where an answer that asked the node keeps its place among [`NODE_QUERIES`]: held by the
/// connection until it ends.
pub(super) type Slot = Mutex<Option<OwnedSemaphorePermit>>;

impl Context {
    pub(super) fn new(registry: Arc<Registry>, node: Option<Node>) -> Context {
        Context {
            registry,
            node,
            queries: Arc::new(Semaphore::new(NODE_QUERIES)),
        }
    }

    /// The answer to `request`; one that asks the node keeps its place in `slot`.
    pub(super) async fn respond<B>(
        &self,
        request: Request<B>,
        slot: &Slot,
    ) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        let known = matches!(path, "/metrics" | "/peers" | "/network" | "/network.json");
        if !known || (path != "/metrics" && self.node.is_none()) {
            let paths = if self.node.is_some() {
                "/metrics, /peers, /network, /network.json"
            } else {
                "/metrics"
            };
            return reply(
                StatusCode::NOT_FOUND,
                TEXT,
                format!("not found: try {paths}\n"),
            );
        }
        if request.method() != Method::GET {
            let mut response = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "only GET is served\n".into(),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        match (path, &self.node) {
            ("/network", Some(_)) => page(),
            ("/peers" | "/network.json", Some(node)) => self.ask(node, path, slot).await,
            _ => self.metrics(),
        }
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let mut body = String::new();
        match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
            Ok(()) => reply(StatusCode::OK, CONTENT_TYPE, body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("cannot encode the metrics: {e}\n"),
            ),
        }
    }

    /// The JSON of `/peers` or `/network.json`, from `node`.
    async fn ask(&self, node: &Node, path: &str, slot: &Slot) -> Response<Full<Bytes>> {
        let Ok(permit) = self.queries.clone().try_acquire_owned() else {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                "busy: try again\n".into(),
            );
        };
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(permit);
        let json = tokio::time::timeout(NODE_TIMEOUT, async {
            match path {
                "/peers" => node
                    .peers()
                    .await
                    .map(|peers| view::peers_json(node.node_id(), &peers)),
                _ => node.view().await.map(|v| v.to_json()),
            }
        })
        .await;
        let json = match json {
            Ok(Ok(json)) => json,
            Ok(Err(e)) => {
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("the node cannot answer: {e}\n"),
                );
            }
            Err(_) => {
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    "the node did not answer in time\n".into(),
                );
            }
        };
        let body = json.to_string();
        if body.len() > MAX_BODY {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("the answer is larger than {MAX_BODY} bytes\n"),
            );
        }
        reply(StatusCode::OK, JSON, body)
    }
}

/// The page, with a fresh nonce in its script and style tags and its Content-Security-Policy:
/// only that inline script and style run, and it may fetch from this origin only.
fn page() -> Response<Full<Bytes>> {
    let nonce = format!("{:032x}", rand::random::<u128>());
    let mut response = reply(
        StatusCode::OK,
        "text/html; charset=utf-8",
        PAGE.replace("{{NONCE}}", &nonce),
    );
    let policy = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn without_a_node_only_metrics_are_served() {
        let context = Context::new(Arc::new(Registry::default()), None);
        let slot = Slot::default();
        let metrics = context.respond(get("/metrics"), &slot).await;
        assert_eq!(metrics.status(), StatusCode::OK);
        assert_eq!(metrics.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        for path in ["/peers", "/network", "/network.json", "/", "/metrics/x"] {
            let r = context.respond(get(path), &slot).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let post = Request::post("/metrics").body(()).unwrap();
        let r = context.respond(post, &slot).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET");
    }

    #[test]
    fn the_page_runs_only_its_own_nonced_script_and_style() {
        let (a, b) = (page(), page());
        let policy = |r: &Response<Full<Bytes>>| {
            r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_ne!(policy(&a), policy(&b), "a nonce per answer");
        let p = policy(&a);
        let nonce = p
            .split("'nonce-")
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .unwrap();
        assert_eq!(nonce.len(), 32);
        let html = PAGE.replace("{{NONCE}}", nonce);
        assert!(!PAGE.contains("src=\"http") && !PAGE.contains("href=\"http"));
        assert_eq!(
            html.matches("<script").count(),
            html.matches(&format!("<script nonce=\"{nonce}\">")).count()
        );
        assert!(html.contains(&format!("<style nonce=\"{nonce}\">")));
        assert!(p.contains("default-src 'none'") && p.contains("connect-src 'self'"));
    }
}
