//! Configuration of the Prometheus backend. The flags and environment
//! variables that fill it are `cli::PrometheusArgs` (clap reads both);
//! what cannot be checked value by value is checked here, at start, with a
//! message that names the flag and the variable.

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
pub(crate) const DEFAULT_TENANT_HEADER: &str = "X-Scope-OrgID";

/// Parses one extra header, `Name: value` or `Name=@/path/to/file` (value
/// read from the file). `variable` names the option in errors.
pub(crate) fn parse_header(
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

/// The names errors give each setting: its flag and its environment
/// variable (`cli::PrometheusArgs`), so that a user finds it either way.
pub(crate) mod option {
    pub(crate) const URL: &str = "--prometheus-url (PROMETHEUS_URL)";
    pub(crate) const CA_CERT: &str = "--prometheus-ca-cert (PROMETHEUS_CA_CERT_PATH)";
    pub(crate) const BEARER_TOKEN_FILE: &str =
        "--prometheus-bearer-token-file (PROMETHEUS_BEARER_TOKEN_FILE)";
    pub(crate) const BACKGROUND_FETCH: &str = "METRICS_BACKGROUND_FETCH";
    pub(crate) const BEARER_TOKEN: &str = "PROMETHEUS_BEARER_TOKEN (upstream WVA)";
    pub(crate) const SERVER_NAME: &str = "PROMETHEUS_SERVER_NAME (upstream WVA)";
    pub(crate) const HEADER: &str = "--prometheus-header";
    pub(crate) const HEADERS: &str = "--prometheus-headers (PROMETHEUS_HEADERS)";
    pub(crate) const TENANT: &str = "--prometheus-tenant (PROMETHEUS_TENANT)";
    pub(crate) const TENANT_HEADER: &str = "--prometheus-tenant-header (PROMETHEUS_TENANT_HEADER)";
    pub(crate) const BASIC_AUTH_USERNAME: &str =
        "--prometheus-basic-auth-username (PROMETHEUS_BASIC_AUTH_USERNAME)";
    pub(crate) const BASIC_AUTH_PASSWORD_FILE: &str =
        "--prometheus-basic-auth-password-file (PROMETHEUS_BASIC_AUTH_PASSWORD_FILE)";
    pub(crate) const CLIENT_CERT: &str = "--prometheus-client-cert (PROMETHEUS_CLIENT_CERT_PATH)";
    pub(crate) const CLIENT_KEY: &str = "--prometheus-client-key (PROMETHEUS_CLIENT_KEY_PATH)";
}

/// An invalid setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable} {value:?}: {reason}")]
pub struct ConfigError {
    pub(crate) variable: &'static str,
    pub(crate) value: String,
    pub(crate) reason: String,
}

fn invalid(variable: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

impl PrometheusConfig {
    /// Checks what cannot be checked per variable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.url.is_empty() {
            return Err(invalid(
                option::URL,
                "",
                "required with --metrics-backend prometheus (or pass --prometheus-url)",
            ));
        }
        // `localhost:9090` parses as a URL of scheme `localhost`: say what
        // was probably meant.
        let hint = if !self.url.contains("://")
            && !self.url.is_empty()
            && !self.url.contains(char::is_whitespace)
        {
            format!(" (did you mean \"http://{}\"?)", self.url)
        } else {
            String::new()
        };
        let parsed = reqwest::Url::parse(&self.url).map_err(|e| {
            invalid(
                option::URL,
                &self.url,
                format!("not a URL: {e}; give an http:// or https:// URL{hint}"),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(invalid(
                option::URL,
                &self.url,
                format!("must be an http:// or https:// URL with a host{hint}"),
            ));
        }
        if !self.background_fetch {
            return Err(invalid(
                option::BACKGROUND_FETCH,
                "false",
                "not supported: this server fetches metrics only in the background, so that no request waits on Prometheus; remove the variable",
            ));
        }
        let header_files = self.headers.iter().filter_map(|(_, s)| match s {
            HeaderSource::File(p) => Some((option::HEADERS, p)),
            HeaderSource::Value(_) => None,
        });
        for (variable, p) in [
            (option::CA_CERT, &self.ca_cert_path),
            (option::BEARER_TOKEN_FILE, &self.bearer_token_file),
            (
                option::BASIC_AUTH_PASSWORD_FILE,
                &self.basic_auth_password_file,
            ),
            (option::CLIENT_CERT, &self.client_cert_path),
            (option::CLIENT_KEY, &self.client_key_path),
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
                    option::BASIC_AUTH_PASSWORD_FILE,
                    "",
                    "required with PROMETHEUS_BASIC_AUTH_USERNAME",
                ))
            }
            (false, true) => {
                return Err(invalid(
                    option::BASIC_AUTH_USERNAME,
                    "",
                    "required with PROMETHEUS_BASIC_AUTH_PASSWORD_FILE",
                ))
            }
            _ => {}
        }
        if self.basic_auth_username.is_some() && self.bearer_token_file.is_some() {
            return Err(invalid(
                option::BASIC_AUTH_USERNAME,
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
                    option::CLIENT_KEY,
                    "",
                    "required with PROMETHEUS_CLIENT_CERT_PATH",
                ))
            }
            (false, true) => {
                return Err(invalid(
                    option::CLIENT_CERT,
                    "",
                    "required with PROMETHEUS_CLIENT_KEY_PATH",
                ))
            }
            _ => {}
        }
        if let Some(tenant) = &self.tenant {
            if http::HeaderName::from_bytes(self.tenant_header.as_bytes()).is_err() {
                return Err(invalid(
                    option::TENANT_HEADER,
                    &self.tenant_header,
                    "not a header name",
                ));
            }
            if tenant.is_empty() || http::HeaderValue::from_str(tenant).is_err() {
                return Err(invalid(option::TENANT, tenant, "not a header value"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid configuration to vary, with `f` an existing file.
    fn base() -> PrometheusConfig {
        PrometheusConfig {
            url: "http://127.0.0.1:1".to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn background_fetch_off_is_refused() {
        let c = PrometheusConfig {
            background_fetch: false,
            ..base()
        };
        assert_eq!(c.validate().unwrap_err().variable, option::BACKGROUND_FETCH);
        assert!(base().validate().is_ok());
    }

    #[test]
    fn validate_rejects_bad_urls_and_missing_files() {
        for url in ["", "not a url", "ftp://x", "http://"] {
            let c = PrometheusConfig {
                url: url.to_owned(),
                ..Default::default()
            };
            let e = c.validate().unwrap_err();
            assert_eq!(e.variable, option::URL, "{url}");
            // The message names the flag and the variable.
            let m = e.to_string();
            assert!(
                m.contains("--prometheus-url") && m.contains("PROMETHEUS_URL"),
                "{m}"
            );
        }
        let c = PrometheusConfig {
            ca_cert_path: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..base()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.variable, option::CA_CERT);
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
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
            let got = parse_header(option::HEADERS, spec);
            match want {
                Ok((n, src)) => assert_eq!(got, Ok((n.to_owned(), src)), "{spec}"),
                Err(()) => {
                    let e = got.unwrap_err();
                    assert_eq!(e.variable, option::HEADERS, "{spec}");
                    assert_eq!(e.value, spec);
                }
            }
        }
    }

    #[test]
    fn tenant_basic_auth_and_client_certificate_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let some = || Some(f.clone());
        let missing = || Some(PathBuf::from("/nonexistent"));
        let good = PrometheusConfig {
            tenant: Some("team-a".to_owned()),
            basic_auth_username: Some("wva".to_owned()),
            basic_auth_password_file: some(),
            client_cert_path: some(),
            client_key_path: some(),
            ..base()
        };
        assert!(good.validate().is_ok());
        // (settings, the option the error must name)
        let cases: Vec<(PrometheusConfig, &str)> = vec![
            (
                PrometheusConfig {
                    basic_auth_username: Some("wva".to_owned()),
                    ..base()
                },
                option::BASIC_AUTH_PASSWORD_FILE,
            ),
            (
                PrometheusConfig {
                    basic_auth_password_file: some(),
                    ..base()
                },
                option::BASIC_AUTH_USERNAME,
            ),
            (
                PrometheusConfig {
                    basic_auth_username: Some("wva".to_owned()),
                    basic_auth_password_file: missing(),
                    ..base()
                },
                option::BASIC_AUTH_PASSWORD_FILE,
            ),
            (
                PrometheusConfig {
                    basic_auth_username: Some("wva".to_owned()),
                    basic_auth_password_file: some(),
                    bearer_token_file: some(),
                    ..base()
                },
                option::BASIC_AUTH_USERNAME,
            ),
            (
                PrometheusConfig {
                    client_cert_path: some(),
                    ..base()
                },
                option::CLIENT_KEY,
            ),
            (
                PrometheusConfig {
                    client_key_path: some(),
                    ..base()
                },
                option::CLIENT_CERT,
            ),
            (
                PrometheusConfig {
                    client_cert_path: missing(),
                    client_key_path: some(),
                    ..base()
                },
                option::CLIENT_CERT,
            ),
            (
                PrometheusConfig {
                    headers: vec![(
                        "X-K".to_owned(),
                        HeaderSource::File(PathBuf::from("/nonexistent")),
                    )],
                    ..base()
                },
                option::HEADERS,
            ),
            (
                PrometheusConfig {
                    tenant: Some("t".to_owned()),
                    tenant_header: "not a header".to_owned(),
                    ..base()
                },
                option::TENANT_HEADER,
            ),
            (
                PrometheusConfig {
                    tenant: Some(String::new()),
                    ..base()
                },
                option::TENANT,
            ),
        ];
        for (config, variable) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.variable, variable, "{config:?}: {err}");
        }
    }
}
