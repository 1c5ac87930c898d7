//! Configuration of the Prometheus backend from the environment variables
//! the WVA seeds define. Every invalid value is rejected at start with a
//! message that names the variable.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of the Prometheus backend.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusConfig {
    /// `PROMETHEUS_URL`: base URL of the Prometheus (or Thanos querier) API.
    pub url: String,
    /// `PROMETHEUS_CA_CERT_PATH`: PEM CA bundle that signs Prometheus' certificate.
    pub ca_cert_path: Option<PathBuf>,
    /// `PROMETHEUS_BEARER_TOKEN_FILE`: token sent as `Authorization: Bearer`, re-read every cycle
    /// so that projected service-account tokens can rotate.
    pub bearer_token_file: Option<PathBuf>,
    /// `PROMETHEUS_QUERY_TIMEOUT`: bound of one fetch cycle's queries, retries included.
    pub query_timeout: Duration,
    /// `METRICS_CACHE_TTL`: no longer used (requests never refresh on the
    /// network); kept so that manifests setting it still start, with a
    /// warning.
    pub cache_ttl: Option<Duration>,
    /// `METRICS_BACKGROUND_FETCH`: no longer used (the background fetcher is
    /// the only way metrics are fetched); `false` is refused at start.
    pub background_fetch: bool,
    /// `METRICS_FETCH_INTERVAL`: the floor of the adaptive gap between two
    /// background fetch cycles (see `collector::fetcher::FetchSchedule`).
    pub fetch_interval: Duration,
    /// `PROMETHEUS_TLS_INSECURE_SKIP_VERIFY` (upstream WVA's name): accept
    /// any certificate from Prometheus. Off by default; logged loudly.
    pub tls_insecure_skip_verify: bool,
    /// `PROMETHEUS_HEADERS` (one `Name: value` per line) and
    /// `--prometheus-header`: extra headers sent with every query.
    pub headers: Vec<(String, HeaderSource)>,
    /// `PROMETHEUS_TENANT`: the tenant (org) id, sent in `tenant_header`.
    pub tenant: Option<String>,
    /// `PROMETHEUS_TENANT_HEADER`: header that carries the tenant;
    /// `X-Scope-OrgID` (Mimir, Cortex, Loki) unless set (Thanos: `THANOS-TENANT`).
    pub tenant_header: String,
    /// `PROMETHEUS_BASIC_AUTH_USERNAME`: user of HTTP basic auth.
    pub basic_auth_username: Option<String>,
    /// `PROMETHEUS_BASIC_AUTH_PASSWORD_FILE`: its password, re-read every query.
    pub basic_auth_password_file: Option<PathBuf>,
    /// `PROMETHEUS_CLIENT_CERT_PATH`: PEM client certificate (chain) for mTLS.
    pub client_cert_path: Option<PathBuf>,
    /// `PROMETHEUS_CLIENT_KEY_PATH`: PEM private key of the client certificate.
    pub client_key_path: Option<PathBuf>,
}

/// Where an extra header's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    /// Given inline.
    Value(String),
    /// Read from a file (trailing newline trimmed) at every query, so that a
    /// mounted Secret can rotate.
    File(PathBuf),
}

/// The default tenant header: Mimir's and Cortex's.
pub const DEFAULT_TENANT_HEADER: &str = "X-Scope-OrgID";

/// Parses one extra header, `Name: value` or `Name=@/path/to/file` (value
/// read from the file). `variable` names the option in errors.
pub fn parse_header(
    variable: &'static str,
    spec: &str,
) -> Result<(String, HeaderSource), ConfigError> {
    let (name, source) = match (spec.find(':'), spec.find('=')) {
        (Some(c), e) if e.is_none_or(|e| c < e) => {
            let (n, v) = spec.split_at(c);
            (n.trim(), HeaderSource::Value(v[1..].trim().to_owned()))
        }
        (_, Some(e)) => {
            let (n, v) = spec.split_at(e);
            match v[1..].trim().strip_prefix('@') {
                Some(path) if !path.is_empty() => {
                    (n.trim(), HeaderSource::File(PathBuf::from(path)))
                }
                _ => {
                    return Err(invalid(
                        variable,
                        spec,
                        "expected `Name: value` or `Name=@/path/to/file`",
                    ))
                }
            }
        }
        _ => {
            return Err(invalid(
                variable,
                spec,
                "expected `Name: value` or `Name=@/path/to/file`",
            ))
        }
    };
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(invalid(
            variable,
            spec,
            format!("{name:?} is not a header name"),
        ));
    }
    if let HeaderSource::Value(v) = &source {
        if http::HeaderValue::from_str(v).is_err() {
            return Err(invalid(
                variable,
                spec,
                "the value holds characters not allowed in a header",
            ));
        }
    }
    let lower = name.to_ascii_lowercase();
    if lower == "authorization" || lower == "host" || lower == "content-length" {
        return Err(invalid(
            variable,
            spec,
            format!("{name} is set by the client itself (use PROMETHEUS_BEARER_TOKEN_FILE or PROMETHEUS_BASIC_AUTH_* for credentials)"),
        ));
    }
    Ok((name.to_owned(), source))
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: String::new(),
            ca_cert_path: None,
            bearer_token_file: None,
            query_timeout: Duration::from_secs(30),
            cache_ttl: None,
            background_fetch: true,
            fetch_interval: Duration::from_secs(1),
            tls_insecure_skip_verify: false,
            headers: Vec::new(),
            tenant: None,
            tenant_header: DEFAULT_TENANT_HEADER.to_owned(),
            basic_auth_username: None,
            basic_auth_password_file: None,
            client_cert_path: None,
            client_key_path: None,
        }
    }
}

/// An invalid setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

fn invalid(variable: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn duration(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        invalid(
            variable,
            value,
            format!("not a duration like 10s or 1m: {e}"),
        )
    })?;
    if d.is_zero() {
        return Err(invalid(variable, value, "must be greater than zero"));
    }
    Ok(d)
}

fn boolean(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid(variable, value, "expected true or false")),
    }
}

/// Upstream WVA's environment names for ours, as (ours, upstream): a
/// ConfigMap written for upstream keeps working. Ours win when both are set.
pub const UPSTREAM_ENV_ALIASES: &[(&str, &str)] = &[
    ("PROMETHEUS_URL", "PROMETHEUS_BASE_URL"),
    ("PROMETHEUS_BEARER_TOKEN_FILE", "PROMETHEUS_TOKEN_PATH"),
    ("METRICS_CACHE_TTL", "PROMETHEUS_METRICS_CACHE_TTL"),
];

/// `lookup` that answers our names from upstream's when ours are unset; when
/// both are set, ours win and a warning names both.
pub fn with_upstream_aliases(
    lookup: impl Fn(&str) -> Option<String>,
) -> impl Fn(&str) -> Option<String> {
    move |name: &str| {
        let set = |n: &str| lookup(n).filter(|v| !v.trim().is_empty());
        let ours = set(name);
        let Some(&(_, alias)) = UPSTREAM_ENV_ALIASES.iter().find(|(o, _)| *o == name) else {
            return ours;
        };
        match (ours, set(alias)) {
            (Some(v), Some(upstream)) => {
                tracing::warn!(
                    variable = name,
                    alias,
                    used = %v,
                    ignored = %upstream,
                    "both {name} and upstream WVA's {alias} are set; {name} wins"
                );
                Some(v)
            }
            (None, Some(upstream)) => {
                tracing::info!(
                    variable = name,
                    alias,
                    "reading {name} from upstream WVA's {alias}"
                );
                Some(upstream)
            }
            (ours, None) => ours,
        }
    }
}

impl PrometheusConfig {
    /// Reads the variables through `lookup` (the process environment in
    /// production, a table in tests), over the defaults. Unset or empty
    /// variables keep their default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let lookup = with_upstream_aliases(lookup);
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut c = PrometheusConfig::default();
        if let Some(v) = get("PROMETHEUS_URL") {
            c.url = v;
        }
        c.ca_cert_path = get("PROMETHEUS_CA_CERT_PATH").map(PathBuf::from);
        c.bearer_token_file = get("PROMETHEUS_BEARER_TOKEN_FILE").map(PathBuf::from);
        if let Some(v) = get("PROMETHEUS_QUERY_TIMEOUT") {
            c.query_timeout = duration("PROMETHEUS_QUERY_TIMEOUT", &v)?;
        }
        if let Some(v) = get("METRICS_CACHE_TTL") {
            c.cache_ttl = Some(duration("METRICS_CACHE_TTL", &v)?);
        }
        if let Some(v) = get("METRICS_BACKGROUND_FETCH") {
            c.background_fetch = boolean("METRICS_BACKGROUND_FETCH", &v)?;
        }
        if let Some(v) = get("METRICS_FETCH_INTERVAL") {
            c.fetch_interval = duration("METRICS_FETCH_INTERVAL", &v)?;
        }
        if let Some(v) = get("PROMETHEUS_TLS_INSECURE_SKIP_VERIFY") {
            c.tls_insecure_skip_verify = boolean("PROMETHEUS_TLS_INSECURE_SKIP_VERIFY", &v)?;
        }
        if let Some(v) = get("PROMETHEUS_HEADERS") {
            for line in v.lines().map(str::trim).filter(|l| !l.is_empty()) {
                c.headers.push(parse_header("PROMETHEUS_HEADERS", line)?);
            }
        }
        c.tenant = get("PROMETHEUS_TENANT").map(|v| v.trim().to_owned());
        if let Some(v) = get("PROMETHEUS_TENANT_HEADER") {
            c.tenant_header = v.trim().to_owned();
        }
        c.basic_auth_username = get("PROMETHEUS_BASIC_AUTH_USERNAME");
        c.basic_auth_password_file = get("PROMETHEUS_BASIC_AUTH_PASSWORD_FILE").map(PathBuf::from);
        c.client_cert_path = get("PROMETHEUS_CLIENT_CERT_PATH").map(PathBuf::from);
        c.client_key_path = get("PROMETHEUS_CLIENT_KEY_PATH").map(PathBuf::from);
        Ok(c)
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Checks what cannot be checked per variable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.url.is_empty() {
            return Err(invalid(
                "PROMETHEUS_URL",
                "",
                "required with --metrics-backend prometheus (or pass --prometheus-url)",
            ));
        }
        let parsed = reqwest::Url::parse(&self.url)
            .map_err(|e| invalid("PROMETHEUS_URL", &self.url, format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(invalid(
                "PROMETHEUS_URL",
                &self.url,
                "must be an http:// or https:// URL with a host",
            ));
        }
        if !self.background_fetch {
            return Err(invalid(
                "METRICS_BACKGROUND_FETCH",
                "false",
                "not supported: this server fetches metrics only in the background, so that no request waits on Prometheus; remove the variable",
            ));
        }
        let header_files = self.headers.iter().filter_map(|(_, s)| match s {
            HeaderSource::File(p) => Some(("PROMETHEUS_HEADERS", p)),
            HeaderSource::Value(_) => None,
        });
        for (variable, p) in [
            ("PROMETHEUS_CA_CERT_PATH", &self.ca_cert_path),
            ("PROMETHEUS_BEARER_TOKEN_FILE", &self.bearer_token_file),
            (
                "PROMETHEUS_BASIC_AUTH_PASSWORD_FILE",
                &self.basic_auth_password_file,
            ),
            ("PROMETHEUS_CLIENT_CERT_PATH", &self.client_cert_path),
            ("PROMETHEUS_CLIENT_KEY_PATH", &self.client_key_path),
        ]
        .iter()
        .filter_map(|(v, p)| p.as_ref().map(|p| (*v, p)))
        .chain(header_files)
        {
            if !p.is_file() {
                return Err(invalid(variable, &p.display().to_string(), "no such file"));
            }
        }
        match (
            self.basic_auth_username.is_some(),
            self.basic_auth_password_file.is_some(),
        ) {
            (true, false) => {
                return Err(invalid(
                    "PROMETHEUS_BASIC_AUTH_PASSWORD_FILE",
                    "",
                    "required with PROMETHEUS_BASIC_AUTH_USERNAME",
                ))
            }
            (false, true) => {
                return Err(invalid(
                    "PROMETHEUS_BASIC_AUTH_USERNAME",
                    "",
                    "required with PROMETHEUS_BASIC_AUTH_PASSWORD_FILE",
                ))
            }
            _ => {}
        }
        if self.basic_auth_username.is_some() && self.bearer_token_file.is_some() {
            return Err(invalid(
                "PROMETHEUS_BASIC_AUTH_USERNAME",
                self.basic_auth_username.as_deref().unwrap_or_default(),
                "both basic auth and PROMETHEUS_BEARER_TOKEN_FILE set: a request carries one Authorization header; choose one",
            ));
        }
        match (
            self.client_cert_path.is_some(),
            self.client_key_path.is_some(),
        ) {
            (true, false) => {
                return Err(invalid(
                    "PROMETHEUS_CLIENT_KEY_PATH",
                    "",
                    "required with PROMETHEUS_CLIENT_CERT_PATH",
                ))
            }
            (false, true) => {
                return Err(invalid(
                    "PROMETHEUS_CLIENT_CERT_PATH",
                    "",
                    "required with PROMETHEUS_CLIENT_KEY_PATH",
                ))
            }
            _ => {}
        }
        if let Some(tenant) = &self.tenant {
            if http::HeaderName::from_bytes(self.tenant_header.as_bytes()).is_err() {
                return Err(invalid(
                    "PROMETHEUS_TENANT_HEADER",
                    &self.tenant_header,
                    "not a header name",
                ));
            }
            if tenant.is_empty() || http::HeaderValue::from_str(tenant).is_err() {
                return Err(invalid("PROMETHEUS_TENANT", tenant, "not a header value"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<PrometheusConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PrometheusConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_unset() {
        let c = from(&[]).unwrap();
        assert_eq!(c.query_timeout, Duration::from_secs(30));
        assert_eq!(c.cache_ttl, None);
        assert!(c.background_fetch);
        assert_eq!(c.fetch_interval, Duration::from_secs(1));
    }

    #[test]
    fn reads_every_variable() {
        let c = from(&[
            ("PROMETHEUS_URL", "https://thanos:9091"),
            ("PROMETHEUS_QUERY_TIMEOUT", "5s"),
            ("METRICS_CACHE_TTL", "30s"),
            ("METRICS_BACKGROUND_FETCH", "false"),
            ("METRICS_FETCH_INTERVAL", "1m"),
        ])
        .unwrap();
        assert_eq!(c.url, "https://thanos:9091");
        assert_eq!(c.query_timeout, Duration::from_secs(5));
        assert_eq!(c.cache_ttl, Some(Duration::from_secs(30)));
        assert!(!c.background_fetch);
        assert_eq!(c.fetch_interval, Duration::from_secs(60));
        // Turning the background fetch off would leave nothing that fetches.
        assert_eq!(
            c.validate().unwrap_err().variable,
            "METRICS_BACKGROUND_FETCH"
        );
        let on = PrometheusConfig {
            background_fetch: true,
            ..c
        };
        assert!(on.validate().is_ok());
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let cases = [
            ("PROMETHEUS_QUERY_TIMEOUT", "soon"),
            ("PROMETHEUS_QUERY_TIMEOUT", "0s"),
            ("METRICS_CACHE_TTL", "-1s"),
            ("METRICS_BACKGROUND_FETCH", "maybe"),
            ("METRICS_FETCH_INTERVAL", "10 parsecs"),
        ];
        for (var, value) in cases {
            let err = from(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var);
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn upstream_names_are_aliases_and_ours_win() {
        // (variables set, expected url, token file, cache ttl)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<&'a str>, u64);
        let cases: &[Case] = &[
            (
                &[
                    ("PROMETHEUS_BASE_URL", "https://upstream:9090"),
                    ("PROMETHEUS_TOKEN_PATH", "/var/run/token"),
                    ("PROMETHEUS_METRICS_CACHE_TTL", "30s"),
                ],
                "https://upstream:9090",
                Some("/var/run/token"),
                30,
            ),
            (
                &[
                    ("PROMETHEUS_BASE_URL", "https://upstream:9090"),
                    ("PROMETHEUS_URL", "https://ours:9090"),
                    ("PROMETHEUS_TOKEN_PATH", "/upstream"),
                    ("PROMETHEUS_BEARER_TOKEN_FILE", "/ours"),
                    ("PROMETHEUS_METRICS_CACHE_TTL", "30s"),
                    ("METRICS_CACHE_TTL", "5s"),
                ],
                "https://ours:9090",
                Some("/ours"),
                5,
            ),
            (
                &[
                    ("PROMETHEUS_BASE_URL", "  "),
                    ("PROMETHEUS_URL", "https://ours:9090"),
                ],
                "https://ours:9090",
                None,
                0,
            ),
        ];
        for (vars, url, token, ttl) in cases {
            let c = from(vars).unwrap();
            assert_eq!(c.url, *url, "{vars:?}");
            assert_eq!(
                c.bearer_token_file.as_deref(),
                token.map(std::path::Path::new),
                "{vars:?}"
            );
            // 0: unset (the cache TTL is accepted for old manifests only).
            let want = (*ttl > 0).then(|| Duration::from_secs(*ttl));
            assert_eq!(c.cache_ttl, want, "{vars:?}");
        }
        assert!(
            from(&[("PROMETHEUS_TLS_INSECURE_SKIP_VERIFY", "true")])
                .unwrap()
                .tls_insecure_skip_verify
        );
        assert!(!from(&[]).unwrap().tls_insecure_skip_verify);
        assert_eq!(
            from(&[("PROMETHEUS_TLS_INSECURE_SKIP_VERIFY", "sure")])
                .unwrap_err()
                .variable,
            "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY"
        );
        // A bad value under the upstream name is rejected too (named by ours).
        assert_eq!(
            from(&[("PROMETHEUS_METRICS_CACHE_TTL", "soon")])
                .unwrap_err()
                .variable,
            "METRICS_CACHE_TTL"
        );
    }

    #[test]
    fn validate_rejects_bad_urls_and_missing_files() {
        let cases = [
            ("", "PROMETHEUS_URL"),
            ("not a url", "PROMETHEUS_URL"),
            ("ftp://x", "PROMETHEUS_URL"),
        ];
        for (url, var) in cases {
            let c = PrometheusConfig {
                url: url.to_owned(),
                ..Default::default()
            };
            assert_eq!(c.validate().unwrap_err().variable, var, "{url}");
        }
        let c = PrometheusConfig {
            url: "http://127.0.0.1:9090".to_owned(),
            ca_cert_path: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().variable,
            "PROMETHEUS_CA_CERT_PATH"
        );
    }

    #[test]
    fn headers_parse_inline_and_from_files() {
        type Want<'a> = Result<(&'a str, HeaderSource), ()>;
        let file = |p: &str| HeaderSource::File(PathBuf::from(p));
        let value = |v: &str| HeaderSource::Value(v.to_owned());
        let cases: Vec<(&str, Want)> = vec![
            (
                "X-Scope-OrgID: team-a",
                Ok(("X-Scope-OrgID", value("team-a"))),
            ),
            ("THANOS-TENANT:t1", Ok(("THANOS-TENANT", value("t1")))),
            // A value may hold `=` and `:` after the first separator.
            ("X-Sig: a=b:c", Ok(("X-Sig", value("a=b:c")))),
            (
                "X-Key=@/etc/secret/key",
                Ok(("X-Key", file("/etc/secret/key"))),
            ),
            ("X-Key = @/etc/k", Ok(("X-Key", file("/etc/k")))),
            ("X-Key=/etc/k", Err(())),
            ("X-Key=@", Err(())),
            ("no separator", Err(())),
            ("bad name: v", Err(())),
            ("Authorization: Bearer x", Err(())),
            ("X-A: bad\u{7f}", Err(())),
        ];
        for (spec, want) in cases {
            let got = parse_header("PROMETHEUS_HEADERS", spec);
            match want {
                Ok((n, src)) => assert_eq!(got, Ok((n.to_owned(), src)), "{spec}"),
                Err(()) => {
                    let e = got.unwrap_err();
                    assert_eq!(e.variable, "PROMETHEUS_HEADERS", "{spec}");
                }
            }
        }
        let c = from(&[("PROMETHEUS_HEADERS", "X-A: 1\n\n  X-B=@/run/b\n")]).unwrap();
        assert_eq!(
            c.headers,
            vec![
                ("X-A".to_owned(), value("1")),
                ("X-B".to_owned(), file("/run/b"))
            ]
        );
    }

    #[test]
    fn tenant_basic_auth_and_client_certificate_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let f = f.to_str().unwrap();
        let c = from(&[
            ("PROMETHEUS_URL", "http://127.0.0.1:1"),
            ("PROMETHEUS_TENANT", "team-a"),
            ("PROMETHEUS_BASIC_AUTH_USERNAME", "wva"),
            ("PROMETHEUS_BASIC_AUTH_PASSWORD_FILE", f),
            ("PROMETHEUS_CLIENT_CERT_PATH", f),
            ("PROMETHEUS_CLIENT_KEY_PATH", f),
        ])
        .unwrap();
        assert_eq!(c.tenant.as_deref(), Some("team-a"));
        assert_eq!(c.tenant_header, "X-Scope-OrgID");
        assert_eq!(c.basic_auth_username.as_deref(), Some("wva"));
        assert!(c.validate().is_ok());
        assert_eq!(
            from(&[("PROMETHEUS_TENANT_HEADER", "THANOS-TENANT")])
                .unwrap()
                .tenant_header,
            "THANOS-TENANT"
        );
        // (settings, the variable the error must name)
        let base = [("PROMETHEUS_URL", "http://127.0.0.1:1")];
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("PROMETHEUS_BASIC_AUTH_USERNAME", "wva")],
                "PROMETHEUS_BASIC_AUTH_PASSWORD_FILE",
            ),
            (
                &[("PROMETHEUS_BASIC_AUTH_PASSWORD_FILE", f)],
                "PROMETHEUS_BASIC_AUTH_USERNAME",
            ),
            (
                &[
                    ("PROMETHEUS_BASIC_AUTH_USERNAME", "wva"),
                    ("PROMETHEUS_BASIC_AUTH_PASSWORD_FILE", "/nonexistent"),
                ],
                "PROMETHEUS_BASIC_AUTH_PASSWORD_FILE",
            ),
            (
                &[
                    ("PROMETHEUS_BASIC_AUTH_USERNAME", "wva"),
                    ("PROMETHEUS_BASIC_AUTH_PASSWORD_FILE", f),
                    ("PROMETHEUS_BEARER_TOKEN_FILE", f),
                ],
                "PROMETHEUS_BASIC_AUTH_USERNAME",
            ),
            (
                &[("PROMETHEUS_CLIENT_CERT_PATH", f)],
                "PROMETHEUS_CLIENT_KEY_PATH",
            ),
            (
                &[("PROMETHEUS_CLIENT_KEY_PATH", f)],
                "PROMETHEUS_CLIENT_CERT_PATH",
            ),
            (
                &[
                    ("PROMETHEUS_CLIENT_CERT_PATH", "/nonexistent"),
                    ("PROMETHEUS_CLIENT_KEY_PATH", f),
                ],
                "PROMETHEUS_CLIENT_CERT_PATH",
            ),
            (
                &[("PROMETHEUS_HEADERS", "X-K=@/nonexistent")],
                "PROMETHEUS_HEADERS",
            ),
            (
                &[
                    ("PROMETHEUS_TENANT", "t"),
                    ("PROMETHEUS_TENANT_HEADER", "not a header"),
                ],
                "PROMETHEUS_TENANT_HEADER",
            ),
        ];
        for (vars, variable) in cases {
            let all: Vec<_> = base.iter().chain(vars.iter()).copied().collect();
            let err = from(&all).unwrap().validate().unwrap_err();
            assert_eq!(err.variable, *variable, "{vars:?}: {err}");
        }
    }
}
