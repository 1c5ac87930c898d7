//! Errors as `metav1.Status` objects: what every client of a Kubernetes API
//! (the HPA, kubectl, the aggregator) expects instead of a bare text body.

use http::StatusCode;
use serde::Serialize;

/// An API error: HTTP code, Kubernetes reason and a message that says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub(crate) code: StatusCode,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    /// Seconds a client should wait before retrying (the `Retry-After`
    /// header of a 429).
    pub(crate) retry_after: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    message: &'a str,
    reason: &'static str,
    code: u16,
}

#[derive(Serialize)]
struct Empty {}

impl ApiError {
    pub(crate) fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub(crate) fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("method {method} is not supported on {path}; this API is read-only (GET)"),
        )
    }

    #[cfg(test)]
    pub(crate) fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, "NotAcceptable", message)
    }

    pub(crate) fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The `metav1.Status` JSON body.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let body = StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            code: self.code.as_u16(),
        };
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_has_kubernetes_shape() {
        let e = ApiError::not_found("no variant in namespace \"a\" matches selector \"x=y\"");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["code"], 404);
        assert_eq!(
            v["message"],
            "no variant in namespace \"a\" matches selector \"x=y\""
        );
    }

    #[test]
    fn each_constructor_maps_to_its_reason() {
        let cases = [
            (ApiError::bad_request("m"), 400, "BadRequest"),
            (ApiError::unauthorized("m"), 401, "Unauthorized"),
            (ApiError::forbidden("m"), 403, "Forbidden"),
            (ApiError::not_found("m"), 404, "NotFound"),
            (
                ApiError::method_not_allowed(&http::Method::POST, "/x"),
                405,
                "MethodNotAllowed",
            ),
            (ApiError::not_acceptable("m"), 406, "NotAcceptable"),
            (
                ApiError::service_unavailable("m"),
                503,
                "ServiceUnavailable",
            ),
            (ApiError::timeout("m"), 504, "Timeout"),
            (ApiError::internal("m"), 500, "InternalError"),
        ];
        for (e, code, reason) in cases {
            assert_eq!(e.code.as_u16(), code);
            assert_eq!(e.reason, reason);
        }
    }
}
