//! The request parser (route and query-string selectors): any method, path
//! and query either parses or yields a Status error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wva_metrics_server::api::router::route;

const METHODS: [http::Method; 5] = [
    http::Method::GET,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::OPTIONS,
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let method = &METHODS[usize::from(first) % METHODS.len()];
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    let _ = route(method, path, query);
});
