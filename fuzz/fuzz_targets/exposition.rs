//! The exposition path of the scrape backend: any page either parses into
//! checked vLLM signals or is an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wva_metrics_server::collector::exposition::parse_vllm_page;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_vllm_page(text);
});
