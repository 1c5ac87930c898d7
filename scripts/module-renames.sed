# Module moves of issue 17 (one-way module dependencies). Re-apply to a
# branch written before them:
#   git ls-files '*.rs' | xargs sed -i -E -f scripts/module-renames.sed
# then fix by hand what a line-based script cannot: grouped imports that mix
# moved and unmoved items (`use crate::collector::{pod_key, MetricsCache}`,
# `use crate::cli::{Cli, ServeArgs}`), and `super::` paths inside src/api.
# The prefix is `crate::` inside the library and `wva_metrics_server::` in
# tests, benches, examples and fuzz targets.

# Kubernetes vocabulary: a leaf module, `k8s`.
s/\b(crate|wva_metrics_server)::api::(selector|quantity|status)\b/\1::k8s::\2/g
s/\bsuper::(selector|quantity|status)::/crate::k8s::\1::/g

# Status write-back out of `inventory`: `writeback` (status.rs -> mod.rs,
# write_queue.rs -> queue.rs).
s/\b(crate|wva_metrics_server)::inventory::status::/\1::writeback::/g
s/\b(crate|wva_metrics_server)::inventory::write_queue\b/\1::writeback::queue/g
s/\bsuper::write_queue\b/self::queue/g

# ConfigMap watches: from inventory::kube to kube_client::configmap.
s/\b(crate|wva_metrics_server)::inventory::kube::(watch_configmap|follow_configmap)\b/\1::kube_client::configmap::\2/g

# The metrics cache's pod key is the inventory's (ReplicaPod::key).
s/\b(crate|wva_metrics_server)::collector::(cache::)?(pod_key|PodKey)\b/\1::inventory::\3/g

# The limiter's view of free accelerators lives with its implementation.
s/\b(crate|wva_metrics_server)::decision::AcceleratorInventory\b/\1::inventory::accelerators::AcceleratorInventory/g

# The rustls crypto provider: from the crate root to `certs`.
s/\b(crate|wva_metrics_server)::install_crypto_provider\b/\1::certs::install_crypto_provider/g

# The pure vLLM replica model belongs to `simulate` (the emulator does not use it).
s/\b(crate|wva_metrics_server)::emulator::replica_model\b/\1::simulate::replica_model/g

# Each command owns its clap arguments; the top-level parser is `command`.
s/\b(crate|wva_metrics_server)::cli::(DemoArgs|DemoAnalyzer)\b/\1::demo::\2/g
s/\b(crate|wva_metrics_server)::cli::EmulateArgs\b/\1::emulator::EmulateArgs/g
s/\b(crate|wva_metrics_server)::cli::SimulateArgs\b/\1::simulate::SimulateArgs/g
s/\b(crate|wva_metrics_server)::cli::(Cli|Command)\b/\1::command::\2/g
s/\b(crate|wva_metrics_server)::cli::\{Cli, Command\}/\1::command::{Cli, Command}/g
