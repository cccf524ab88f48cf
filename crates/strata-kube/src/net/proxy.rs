//! Which proxy a connection goes through, and where that choice came from.
//!
//! ```text
//!   strata.yaml `proxy:` ──┐  (wins: the environment is not read at all)
//!   HTTPS_PROXY, HTTP_PROXY,├─> Router ── route(destination) ─> direct | Route { proxy, auth, source }
//!   ALL_PROXY, NO_PROXY     ┘
//!   (upper case first, then lower case, as Go and kubectl read them; empty means unset)
//! ```
//!
//! NO_PROXY entries follow curl's rules, implemented by hyper-util's matcher: host names match
//! themselves and their subdomains (`example.com` and `.example.com` both cover
//! `git.example.com`), IP addresses and CIDR ranges (`10.0.0.0/8`) match addresses, `*` matches
//! everything. Only `http://` proxies are spoken to (CONNECT for HTTPS destinations, absolute-form
//! requests for plain HTTP ones). Proxy credentials come from the URL's userinfo or from
//! `proxy.password_file`; they are never part of what [`Route`] displays.

use std::fmt;

use base64::Engine as _;
use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};

use super::settings::Proxy as ProxyConfig;

/// Where the proxy setting was read from: named in every error about the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `proxy:` in the host config.
    Config,
    /// An environment variable, by the name it was found under.
    Env(&'static str),
    /// A kubeconfig cluster's `proxy-url`.
    Kubeconfig(String),
}

impl Source {
    /// The setting to change the proxy itself.
    pub fn setting(&self) -> String {
        match self {
            Source::Config => "proxy.url".into(),
            Source::Env(name) => (*name).into(),
            Source::Kubeconfig(file) => format!("proxy-url in the kubeconfig {file}"),
        }
    }

    /// The setting that sends a host around the proxy.
    pub fn bypass_setting(&self) -> &'static str {
        match self {
            Source::Config => "proxy.no_proxy",
            Source::Env(_) => "NO_PROXY",
            Source::Kubeconfig(_) => "the kubeconfig (remove proxy-url)",
        }
    }

    /// The setting holding the proxy's credentials.
    pub fn auth_setting(&self) -> String {
        match self {
            Source::Config => "proxy.username and proxy.password_file".into(),
            Source::Env(name) => format!("the user:password in {name}"),
            Source::Kubeconfig(file) => format!("the user:password in proxy-url of {file}"),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Config => f.write_str("proxy.url in strata.yaml"),
            Source::Env(name) => f.write_str(name),
            Source::Kubeconfig(file) => write!(f, "proxy-url in {file}"),
        }
    }
}

/// How one connection leaves the machine through a proxy.
#[derive(Clone)]
pub struct Route {
    /// `http://host:port/` of the proxy, without credentials.
    pub proxy: Uri,
    /// `Proxy-Authorization`, when credentials are configured.
    pub auth: Option<HeaderValue>,
    pub source: Source,
}

impl Route {
    /// `host:port` of the proxy, for messages.
    pub fn address(&self) -> String {
        let host = self.proxy.host().unwrap_or("?");
        let port = self.proxy.port_u16().unwrap_or(80);
        format!("{host}:{port}")
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials.
        f.debug_struct("Route").field("proxy", &self.proxy).field("source", &self.source).finish()
    }
}

/// Decides, per destination, whether and through which proxy to connect.
pub struct Router {
    matcher: Option<Matcher>,
    /// Where `https://` and `http://` destinations' proxies were found.
    https_source: Source,
    http_source: Source,
    /// Replaces whatever the matcher parsed from userinfo (`proxy.password_file`).
    auth: Option<HeaderValue>,
}

/// The proxy environment variables, looked up through `lookup` so tests need not touch the
/// process environment.
fn first(lookup: &dyn Fn(&str) -> Option<String>, names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|name| lookup(name).filter(|v| !v.trim().is_empty()).map(|v| (*name, v)))
}

/// A problem with a proxy setting, found when it is loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{setting}: {problem}")]
pub struct ProxyError {
    pub setting: String,
    pub problem: String,
}

/// Only `http://host:port` proxies: the scheme strata speaks to a proxy.
fn check_url(setting: &str, url: &str) -> Result<(), ProxyError> {
    let bad = |problem: String| ProxyError { setting: setting.to_string(), problem };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL (write http://HOST:PORT)".into()))?;
    match uri.scheme_str() {
        None | Some("http") => {}
        Some(other) => {
            return Err(bad(format!(
                "`{other}://` proxies are not supported; use an http:// proxy (HTTPS is tunnelled through it with CONNECT)"
            )));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("the URL names no host (write http://HOST:PORT)".into()));
    }
    Ok(())
}

impl Router {
    /// No proxy at all.
    pub fn direct() -> Router {
        Router { matcher: None, https_source: Source::Config, http_source: Source::Config, auth: None }
    }

    /// From the host config's `proxy:` when there is one, else from the environment.
    pub fn new(config: Option<&ProxyConfig>) -> Result<Router, ProxyError> {
        match config {
            Some(config) => Router::from_config(config),
            None => Router::from_env(&|name| std::env::var(name).ok()),
        }
    }

    pub fn from_config(config: &ProxyConfig) -> Result<Router, ProxyError> {
        check_url("proxy.url", &config.url)?;
        let matcher = Matcher::builder().all(config.url.clone()).no(config.no_proxy.join(",")).build();
        let auth = match (&config.username, &config.password_file) {
            (Some(user), Some(file)) => {
                let password = super::settings::read_secret(file).map_err(|problem| ProxyError {
                    setting: "proxy.password_file".into(),
                    problem: problem.to_string(),
                })?;
                Some(basic(user, &password))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(ProxyError {
                    setting: "proxy".into(),
                    problem: "username and password_file go together".into(),
                });
            }
            (None, None) => None,
        };
        Ok(Router { matcher: Some(matcher), https_source: Source::Config, http_source: Source::Config, auth })
    }

    /// HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY, upper case before lower case.
    pub fn from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Router, ProxyError> {
        let all = first(lookup, &["ALL_PROXY", "all_proxy"]);
        let https = first(lookup, &["HTTPS_PROXY", "https_proxy"]);
        let http = first(lookup, &["HTTP_PROXY", "http_proxy"]);
        let no = first(lookup, &["NO_PROXY", "no_proxy"]);
        for (name, value) in [&all, &https, &http].into_iter().flatten() {
            check_url(name, value).map_err(|e| ProxyError { problem: e.problem, setting: (*name).into() })?;
        }
        if all.is_none() && https.is_none() && http.is_none() {
            return Ok(Router::direct());
        }
        let source = |own: &Option<(&'static str, String)>| {
            Source::Env(own.as_ref().or(all.as_ref()).map(|(name, _)| *name).unwrap_or("ALL_PROXY"))
        };
        let (https_source, http_source) = (source(&https), source(&http));
        let value = |v: Option<(&'static str, String)>| v.map(|(_, v)| v).unwrap_or_default();
        let matcher = Matcher::builder().all(value(all)).https(value(https)).http(value(http)).no(value(no)).build();
        Ok(Router { matcher: Some(matcher), https_source, http_source, auth: None })
    }

    /// A single proxy for every destination (a kubeconfig's `proxy-url`: no NO_PROXY applies).
    pub fn fixed(url: &str, source: Source) -> Result<Router, ProxyError> {
        check_url(&source.setting(), url)?;
        let matcher = Matcher::builder().all(url.to_string()).build();
        Ok(Router { matcher: Some(matcher), https_source: source.clone(), http_source: source, auth: None })
    }

    /// The proxy for a destination, or `None` to connect directly.
    pub fn route(&self, destination: &Uri) -> Option<Route> {
        let intercept: Intercept = self.matcher.as_ref()?.intercept(destination)?;
        let source = if destination.scheme_str() == Some("https") { &self.https_source } else { &self.http_source };
        Some(Route {
            proxy: intercept.uri().clone(),
            auth: self.auth.clone().or_else(|| intercept.basic_auth().cloned()),
            source: source.clone(),
        })
    }
}

fn basic(user: &str, password: &str) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Router {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Router::from_env(&|name| map.get(name).cloned()).unwrap()
    }

    fn via(router: &Router, url: &str) -> Option<String> {
        router.route(&url.parse().unwrap()).map(|r| format!("{} ({})", r.address(), r.source))
    }

    #[test]
    fn upper_and_lower_case_variables_with_upper_case_first() {
        let lower = env(&[("https_proxy", "http://lower:3128"), ("http_proxy", "http://plain:3128")]);
        assert_eq!(via(&lower, "https://git.example.com/x").as_deref(), Some("lower:3128 (https_proxy)"));
        assert_eq!(via(&lower, "http://git.example.com/x").as_deref(), Some("plain:3128 (http_proxy)"));
        let both = env(&[("https_proxy", "http://lower:3128"), ("HTTPS_PROXY", "http://upper:3128")]);
        assert_eq!(via(&both, "https://git.example.com/").as_deref(), Some("upper:3128 (HTTPS_PROXY)"));
        assert_eq!(via(&both, "http://git.example.com/"), None, "HTTPS_PROXY is for https destinations only");
        let empty = env(&[("HTTPS_PROXY", ""), ("https_proxy", "http://lower:3128")]);
        assert_eq!(via(&empty, "https://a.example/").as_deref(), Some("lower:3128 (https_proxy)"), "empty is unset");
        let all = env(&[("all_proxy", "http://every:8080")]);
        assert_eq!(via(&all, "http://a.example/").as_deref(), Some("every:8080 (all_proxy)"));
        assert_eq!(via(&all, "https://a.example/").as_deref(), Some("every:8080 (all_proxy)"));
        assert_eq!(via(&env(&[]), "https://a.example/"), None);
    }

    #[test]
    fn no_proxy_takes_domain_suffixes_addresses_and_cidr_ranges_in_either_case() {
        for no in ["NO_PROXY", "no_proxy"] {
            let router = env(&[("HTTPS_PROXY", "http://proxy:3128"), (no, "corp.example, .internal,10.0.0.0/8, ::1")]);
            assert_eq!(via(&router, "https://corp.example/"), None);
            assert_eq!(via(&router, "https://git.corp.example/"), None, "a subdomain");
            assert!(via(&router, "https://notcorp.example/").is_some(), "not a suffix at a dot");
            assert_eq!(via(&router, "https://git.internal/"), None);
            assert_eq!(via(&router, "https://10.1.2.3:6443/"), None, "inside the CIDR range");
            assert!(via(&router, "https://11.1.2.3/").is_some());
            assert_eq!(via(&router, "https://[::1]:8443/"), None);
        }
        let star = env(&[("HTTPS_PROXY", "http://proxy:3128"), ("NO_PROXY", "*")]);
        assert_eq!(via(&star, "https://anything.example/"), None);
    }

    #[test]
    fn credentials_in_the_variable_become_proxy_authorization_and_are_never_displayed() {
        let router = env(&[("HTTPS_PROXY", "http://alice:s%40cret@proxy:3128")]);
        let route = router.route(&"https://git.example.com/".parse().unwrap()).unwrap();
        let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:s@cret"));
        assert_eq!(route.auth.as_ref().unwrap().to_str().unwrap(), expected);
        assert!(route.auth.as_ref().unwrap().is_sensitive());
        assert_eq!(route.proxy.to_string(), "http://proxy:3128/");
        assert!(!format!("{route:?}").contains("cret"));
    }

    #[test]
    fn the_host_config_wins_over_the_environment_and_reads_its_password_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("proxy-password");
        std::fs::write(&password, "hunter2\n").unwrap();
        let config = ProxyConfig {
            url: "http://configured:3128".into(),
            no_proxy: vec!["localhost".into(), "192.168.0.0/16".into()],
            username: Some("strata".into()),
            password_file: Some(password),
        };
        let router = Router::from_config(&config).unwrap();
        let route = router.route(&"https://git.example.com/".parse().unwrap()).unwrap();
        assert_eq!(route.address(), "configured:3128");
        assert_eq!(route.source, Source::Config);
        let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("strata:hunter2"));
        assert_eq!(route.auth.unwrap().to_str().unwrap(), expected);
        assert!(router.route(&"http://192.168.4.4/".parse().unwrap()).is_none());
        assert!(router.route(&"http://localhost:9477/".parse().unwrap()).is_none());
    }

    #[test]
    fn unusable_proxy_urls_are_refused_naming_the_setting() {
        let map: HashMap<&str, &str> = [("https_proxy", "socks5://proxy:1080")].into();
        let e = Router::from_env(&|n| map.get(n).map(|v| v.to_string())).err().unwrap();
        assert_eq!(e.setting, "https_proxy");
        assert!(e.problem.contains("`socks5://` proxies are not supported"), "{e}");
        let fixed = Router::fixed("https://proxy:443", Source::Kubeconfig("/k.yaml".into())).err().unwrap();
        assert_eq!(fixed.setting, "proxy-url in the kubeconfig /k.yaml");
        let config = ProxyConfig { url: "http://p:1".into(), username: Some("u".into()), ..ProxyConfig::default() };
        assert!(Router::from_config(&config).is_err());
    }
}
