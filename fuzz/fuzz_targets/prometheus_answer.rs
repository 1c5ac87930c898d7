//! Decoding of Prometheus API answers: any body is a vector, another
//! result type, an API error or a decode error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wva_metrics_server::collector::prometheus::results::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
});
