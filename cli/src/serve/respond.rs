//! Every way a request can fail, the status it gets, and the JSON error body.
//!
//! Guest errors map to a status through [`glint::Error::kind`] only (one function,
//! [`status_of_kind`]). The body is `{"error": KIND, "request_id": ID}`, plus `"message"` when
//! the client caused the failure (400, 404, 405, 413) and the text is the server's own; what a
//! guest wrote never reaches the client in an error (it goes to the log).

use super::route::PathError;
use super::typed::ArgError;
use bytes::Bytes;
use glint::ErrorKind;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};

/// A request that could not be answered normally.
#[derive(Debug)]
pub enum Failure {
    /// The request path is malformed.
    BadPath(PathError),
    /// The typed-call arguments do not fit the signature.
    BadArguments(ArgError),
    /// The request is otherwise malformed (unencodable target, broken chunked body).
    BadRequest(String),
    /// No route, or no such export.
    NotFound(String),
    /// The route exists but not for this method.
    MethodNotAllowed {
        /// The `Allow` header value.
        allow: &'static str,
    },
    /// The body did not arrive within `body_read_timeout`.
    BodyTimeout,
    /// The body is larger than `max_body_bytes`.
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The function is full (N running, Q waiting).
    Overloaded,
    /// The server is stopping.
    ShuttingDown,
    /// The guest's response is larger than `max_response_bytes`.
    ResponseTooLarge {
        /// What the guest returned.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The guest's handler returned something that is not a valid response.
    BadResponse(String),
    /// The guest call failed.
    Guest(glint::Error),
}

/// The status of a guest error, by its kind (see the README table).
pub fn status_of_kind(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Killed | ErrorKind::ResourceLimit | ErrorKind::HostUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::HostFunction => StatusCode::BAD_GATEWAY,
        ErrorKind::GuestFault | ErrorKind::GuestError | ErrorKind::ImageRefused | ErrorKind::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Failure {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::BadPath(_) | Failure::BadArguments(_) | Failure::BadRequest(_) => StatusCode::BAD_REQUEST,
            Failure::NotFound(_) => StatusCode::NOT_FOUND,
            Failure::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Failure::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Failure::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::Overloaded | Failure::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Failure::ResponseTooLarge { .. } | Failure::BadResponse(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Failure::Guest(e) => status_of_kind(e.kind()),
        }
    }

    /// The stable error kind in the body and the logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::BadPath(_) | Failure::BadArguments(_) | Failure::BadRequest(_) => "bad_request",
            Failure::NotFound(_) => "not_found",
            Failure::MethodNotAllowed { .. } => "method_not_allowed",
            Failure::BodyTimeout => "body_timeout",
            Failure::BodyTooLarge { .. } => "body_too_large",
            Failure::Overloaded => "overloaded",
            Failure::ShuttingDown => "shutting_down",
            Failure::ResponseTooLarge { .. } => "response_too_large",
            Failure::BadResponse(_) => "bad_response",
            Failure::Guest(e) => e.kind().as_str(),
        }
    }

    /// Text safe to show the client: only for failures the client caused, in the server's words.
    pub fn public_message(&self) -> Option<String> {
        match self {
            Failure::BadPath(e) => Some(e.to_string()),
            Failure::BadArguments(e) => Some(e.to_string()),
            Failure::BadRequest(m) | Failure::NotFound(m) => Some(m.clone()),
            Failure::MethodNotAllowed { allow } => Some(format!("this route answers {allow}")),
            Failure::BodyTooLarge { limit } => Some(format!("the body is larger than {limit} bytes")),
            Failure::BodyTimeout => Some("the body did not arrive in time".into()),
            // BadRequest errors of glint are about the caller's call (no such function, a
            // signature mismatch, arguments too large): its own text, no guest bytes.
            Failure::Guest(e) if e.kind() == ErrorKind::BadRequest => Some(e.to_string()),
            _ => None,
        }
    }

    /// Whether the connection must close after the answer (the body was not read to its end).
    pub fn closes_connection(&self) -> bool {
        matches!(self, Failure::BodyTooLarge { .. } | Failure::BodyTimeout | Failure::BadRequest(_))
    }

    /// The response: JSON body, `Retry-After` for an overload, `Connection: close` when needed.
    pub fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut body = serde_json::json!({ "error": self.kind(), "request_id": request_id });
        if let Some(m) = self.public_message() {
            body["message"] = serde_json::Value::from(m);
        }
        let mut r = json_response(status, &body);
        let h = r.headers_mut();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Failure::MethodNotAllowed { allow } = self {
            h.insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.closes_connection() {
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A plain-text response.
pub fn text_response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_errors_map_by_kind_and_never_show_guest_text() {
        let e = glint::Error::GuestPanic { message: "secret=hunter2".into() };
        let f = Failure::Guest(e);
        assert_eq!(f.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(f.kind(), "guest_error");
        assert_eq!(f.public_message(), None);
        let timeout = Failure::Guest(glint::Error::Timeout(std::time::Duration::from_millis(5)));
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        let nf = Failure::Guest(glint::Error::NoSuchFunction { name: "x".into() });
        assert_eq!(nf.status(), StatusCode::BAD_REQUEST);
        assert!(nf.public_message().unwrap().contains("`x`"));
    }

    #[test]
    fn overload_carries_retry_after_and_the_request_id() {
        let r = Failure::Overloaded.into_response("abc-1");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        let r = Failure::BodyTooLarge { limit: 10 }.into_response("abc-2");
        assert_eq!(r.headers()[CONNECTION], "close");
    }
}
