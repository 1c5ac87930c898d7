//! docs/examples/inventory.yaml works as its comment says: it loads without
//! a problem, and served over two emulated vLLM replicas (the worked example
//! kv 0.75/0.76, queue 2/2) it answers the README's selector with a scale-up
//! from 2 to 3 replicas.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use common::{Emulator, Server};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/inventory.yaml");

#[test]
fn the_example_loads_without_problems() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let objects =
        wva_metrics_server::inventory::file::parse_objects(std::path::Path::new(EXAMPLE), &text)
            .unwrap();
    let (snapshot, problems) = wva_metrics_server::inventory::resolve(&objects);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(snapshot.variants().len(), 1);
    assert_eq!(snapshot.pods().len(), 2);
    let v = &snapshot.variants()[0];
    assert_eq!(
        (
            v.namespace.as_str(),
            v.target_name.as_str(),
            v.model_id.as_str()
        ),
        (
            "llm-inference",
            "llama-8b-decode",
            "meta-llama/Llama-3.1-8B-Instruct"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_serves_the_worked_scale_up() {
    let model = "meta-llama/Llama-3.1-8B-Instruct";
    let a = Emulator::start(model, 0.75, 2.0).await;
    let b = Emulator::start(model, 0.76, 2.0).await;
    // The example's ports (8000, 8001: vLLM's) may be taken on a test machine.
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    assert_eq!(text.matches("prometheus.io/port: \"8000\"").count(), 1);
    assert_eq!(text.matches("prometheus.io/port: \"8001\"").count(), 1);
    let yaml = text
        .replace(
            "prometheus.io/port: \"8000\"",
            &format!("prometheus.io/port: \"{}\"", a.port),
        )
        .replace(
            "prometheus.io/port: \"8001\"",
            &format!("prometheus.io/port: \"{}\"", b.port),
        );
    let server = Server::with_inventory(&yaml, &["--metrics-backend", "scrape"]).await;
    server
        .wait_value(
            "llm-inference",
            "wva_desired_replicas",
            "target_name=llama-8b-decode",
            "3",
        )
        .await;
}
