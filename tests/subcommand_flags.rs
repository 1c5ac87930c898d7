//! Flags of the subcommands other than `serve` that no other test shows
//! changing anything: `certs --namespace/--service` (and what `certs`
//! leaves out without `--keda-client`), every flag of `emulate`, and the
//! top-level `--version`. tests/flags.rs lists, for every flag of every
//! subcommand, the test that shows its effect.

mod common;

use std::process::Command;

use common::BIN;

/// The DNS names in a PEM certificate's subjectAltName.
fn dns_names(pem: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).expect("a PEM block");
    let cert = pem.parse_x509().expect("an X.509 certificate");
    let san = cert
        .subject_alternative_name()
        .expect("a valid subjectAltName")
        .expect("a subjectAltName");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect()
}

/// The service (namespace, name) of each APIService in a YAML stream.
fn apiservice_targets(path: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_json::Value = serde::Deserialize::deserialize(d).unwrap();
            let svc = &v["spec"]["service"];
            (
                svc["namespace"].as_str().unwrap_or_default().to_owned(),
                svc["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `certs --namespace N --service S`: the serving certificate is for S in
/// N, and the APIServices point at Service N/S; two runs with different
/// names give different certificates and manifests. `--out` is where all
/// of it is. Without `--keda-client` no KEDA client files are written
/// (keda_limits.rs shows the ones written with it accepted on the KEDA port).
#[test]
fn certs_names_the_service_in_the_certificate_and_the_apiservices() {
    let dir = tempfile::tempdir().unwrap();
    for (namespace, service) in [("team-a", "metrics"), ("wva-system", "wva-metrics-server")] {
        let out = dir.path().join(format!("{namespace}-{service}"));
        let o = Command::new(BIN)
            .args([
                "certs",
                "--namespace",
                namespace,
                "--service",
                service,
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let pem = std::fs::read(out.join("tls.crt")).unwrap();
        assert_eq!(
            dns_names(&pem),
            [
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
                format!("{service}.{namespace}"),
                service.to_owned(),
            ]
        );
        let want = (namespace.to_owned(), service.to_owned());
        assert_eq!(
            apiservice_targets(&out.join("apiservice.yaml")),
            std::slice::from_ref(&want)
        );
        assert_eq!(
            apiservice_targets(&out.join("apiservice-custom.yaml")),
            [want.clone(), want]
        );
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "apiservice-custom.yaml",
                "apiservice.yaml",
                "ca.crt",
                "ca.key",
                "tls.crt",
                "tls.key"
            ],
            "no keda-client files without --keda-client"
        );
    }
}

/// `--version` prints the name and the package's version.
#[test]
fn version_prints_the_package_version() {
    let o = Command::new(BIN).arg("--version").output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("wva-metrics-server {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The value of the sample `name{labels...}` whose labels contain all of
/// `with`, in an exposition text.
#[cfg(feature = "emulator")]
fn sample(text: &str, name: &str, with: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
        .filter(|l| with.iter().all(|w| l.contains(w)))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no value: {l}"))
        })
        .reduce(|a, b| a + b)
}

/// `emulate --prefill-tokens-per-second` sets the prefill time of each
/// finished request (`vllm:request_prefill_time_seconds`: its 512 prompt
/// tokens over the throughput), and `prefill_tokens_per_second` in
/// `POST /admin/state` changes it for the requests that finish afterwards;
/// a throughput that is not a finite number > 0 is refused by both.
#[cfg(feature = "emulator")]
#[tokio::test]
async fn emulate_prefill_throughput_sets_the_prefill_time() {
    use common::{eventually, free_port, http_client, Proc};
    use std::time::Duration;

    let bad = Command::new(BIN)
        .args(["emulate", "--port", "1", "--model-name", "m"])
        .args(["--prefill-tokens-per-second", "0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--prefill-tokens-per-second"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let port = free_port();
    let port_s = port.to_string();
    let _e = Proc::spawn(
        "emulate-prefill",
        &[
            "emulate",
            "--port",
            &port_s,
            "--model-name",
            "m",
            "--request-rate",
            "20",
            "--prefill-tokens-per-second",
            "1024",
        ],
    );
    let client = http_client();
    // (sum, count) of the prefill-time histogram.
    let prefill = || {
        let client = client.clone();
        async move {
            let text =
                common::text_of(&client, &format!("http://127.0.0.1:{port}/metrics")).await?;
            Some((
                sample(&text, "vllm:request_prefill_time_seconds_sum", &[])?,
                sample(&text, "vllm:request_prefill_time_seconds_count", &[])?,
            ))
        }
    };
    let (sum, count) = eventually(Duration::from_secs(30), "finished requests", || async {
        prefill().await.filter(|(_, count)| *count >= 2.0)
    })
    .await;
    // 512 tokens at 1,024 tokens/s: half a second each.
    assert_eq!(sum / count, 0.5, "{sum} / {count}");

    let post = |body: &'static str| {
        let client = client.clone();
        async move {
            client
                .post(format!("http://127.0.0.1:{port}/admin/state"))
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    for bad in [
        r#"{"prefill_tokens_per_second":0}"#,
        r#"{"prefill_tokens_per_second":-5}"#,
        r#"{"prefill_tokens_per_second":"+Inf"}"#,
    ] {
        assert_eq!(post(bad).await.status(), 400, "{bad}");
    }
    let r = post(r#"{"prefill_tokens_per_second":256}"#).await;
    assert_eq!(r.status(), 200);
    let state: serde_json::Value = r.json().await.unwrap();
    assert_eq!(state["prefill_tokens_per_second"], 256.0);
    let (sum0, count0) = prefill().await.unwrap();
    let (sum1, count1) = eventually(
        Duration::from_secs(30),
        "requests finished after the change",
        || async { prefill().await.filter(|(_, c)| *c >= count0 + 2.0) },
    )
    .await;
    // Those requests took 512 / 256 = 2 s of prefill each.
    assert_eq!(
        (sum1 - sum0) / (count1 - count0),
        2.0,
        "{sum0} -> {sum1}, {count0} -> {count1}"
    );
}

/// Every flag of `emulate` shows in its /metrics: two replicas, one with
/// each flag set and one with the defaults, answer different numbers and
/// labels. `--bind-address 127.0.0.2` listens there and not on 127.0.0.1;
/// `--request-rate 0` completes no request while the default (running / 2)
/// completes some.
#[cfg(feature = "emulator")]
#[tokio::test]
async fn emulate_flags_set_what_its_metrics_say() {
    use common::{eventually, free_port, http_client, Proc};
    use std::time::Duration;

    let (set_port, default_port) = (free_port(), free_port());
    let (set_s, default_s) = (set_port.to_string(), default_port.to_string());
    let _set = Proc::spawn(
        "emulate-set",
        &[
            "emulate",
            "--port",
            &set_s,
            "--model-name",
            "alpha",
            "--kv",
            "0.25",
            "--waiting",
            "3",
            "--running",
            "4",
            "--request-rate",
            "0",
            "--num-gpu-blocks",
            "100",
            "--block-size",
            "32",
        ],
    );
    let _default = Proc::spawn(
        "emulate-default",
        &[
            "emulate",
            "--port",
            &default_s,
            "--bind-address",
            "127.0.0.2",
            "--model-name",
            "beta",
            "--running",
            "4",
        ],
    );
    let client = http_client();
    let metrics = |host: &'static str, port: u16| {
        let client = client.clone();
        async move { common::text_of(&client, &format!("http://{host}:{port}/metrics")).await }
    };
    let first = eventually(Duration::from_secs(30), "the emulator with flags", || {
        metrics("127.0.0.1", set_port)
    })
    .await;
    // The default rate (4 running / 2 = 2 per second) completes requests.
    let defaults = eventually(
        Duration::from_secs(30),
        "completed requests on 127.0.0.2",
        || async {
            let text = metrics("127.0.0.2", default_port).await?;
            (sample(&text, "vllm:request_success_total", &[])? >= 2.0).then_some(text)
        },
    )
    .await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", default_port))
            .await
            .is_err(),
        "nothing on 127.0.0.1:{default_port}"
    );
    // Started first, asked later: still none completed at rate 0.
    let set = metrics("127.0.0.1", set_port).await.unwrap();
    assert_eq!(
        sample(&set, "vllm:request_success_total", &[]),
        Some(0.0),
        "{set}"
    );
    assert!(first.contains("model_name=\"alpha\""), "{first}");
    for (text, model, kv, waiting, blocks, block) in [
        (&set, "alpha", 0.25, 3.0, "100", "32"),
        (&defaults, "beta", 0.0, 0.0, "8192", "16"),
    ] {
        let label = format!("model_name=\"{model}\"");
        let label = label.as_str();
        let get = |name: &str| sample(text, name, &[label]);
        assert_eq!(get("vllm:kv_cache_usage_perc"), Some(kv), "{text}");
        assert_eq!(get("vllm:num_requests_waiting"), Some(waiting), "{text}");
        assert_eq!(get("vllm:num_requests_running"), Some(4.0), "{text}");
        let info = format!("num_gpu_blocks=\"{blocks}\"");
        let size = format!("block_size=\"{block}\"");
        assert_eq!(
            sample(text, "vllm:cache_config_info", &[&info, &size]),
            Some(1.0),
            "{text}"
        );
    }
}
