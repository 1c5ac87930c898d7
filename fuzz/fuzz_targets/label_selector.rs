//! The label-selector parser: never panics, and whatever it accepts prints
//! in a canonical form that parses back to an equal selector.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wva_metrics_server::k8s::selector::LabelSelector;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(selector) = LabelSelector::parse(text) {
        let printed = selector.to_string();
        let again = LabelSelector::parse(&printed).unwrap_or_else(|e| {
            panic!("canonical form {printed:?} of {text:?} does not parse: {e}")
        });
        assert_eq!(again, selector, "round trip of {text:?} via {printed:?}");
    }
});
