//! What strata reaches out to besides the repository and clusters: `status` (where commit
//! statuses go) and `proxy` (the HTTP proxy outbound connections take).

use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::reader::{RawTls, Reader};
use super::{Proxy, StatusConfig, StatusSink};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatus {
    provider: String,
    api: Option<String>,
    repo: Option<String>,
    token_file: Option<String>,
    target_url: Option<String>,
    min_interval: Option<Spanned<String>>,
    #[serde(default)]
    pull_requests: bool,
    ca_file: Option<String>,
    system_roots: Option<bool>,
    client_cert_file: Option<String>,
    client_key_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    url: String,
    #[serde(default)]
    no_proxy: Option<RawList>,
    username: Option<String>,
    password_file: Option<String>,
}

/// A list written as YAML (`[a, b]`) or as NO_PROXY is (`"a,b"`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawList {
    List(Vec<String>),
    Text(String),
}

impl RawList {
    fn items(self) -> Vec<String> {
        let all = match self {
            RawList::List(items) => items,
            RawList::Text(text) => text.split(',').map(str::to_string).collect(),
        };
        all.into_iter().map(|i| i.trim().to_string()).filter(|i| !i.is_empty()).collect()
    }
}

/// `status`: a forge (with its repository and token) or Git notes; `None` when absent or when
/// the sink cannot be built.
pub(super) fn status(cx: &mut Reader, raw: Option<Spanned<RawStatus>>) -> Option<StatusConfig> {
    let st = raw?;
    let resolve = cx.resolver();
    let line = st.referenced.line() as usize;
    let r = st.value;
    let min_interval = cx.duration(&r.min_interval, "status.min_interval", Duration::from_secs(1));
    let raw_tls = RawTls {
        ca_file: r.ca_file,
        system_roots: r.system_roots,
        client_cert_file: r.client_cert_file,
        client_key_file: r.client_key_file,
    };
    let tls = cx.tls(line, "status", raw_tls);
    let sink = if r.provider == "git-notes" {
        Some(StatusSink::Notes)
    } else {
        match (crate::report::Provider::parse(&r.provider), r.repo, r.token_file) {
            (Some(provider), Some(repo), Some(token_file)) => Some(StatusSink::Forge {
                forge: crate::report::Forge {
                    provider,
                    api: r.api.unwrap_or_else(|| provider.default_api().to_string()).trim_end_matches('/').to_string(),
                    repo,
                },
                token_file: resolve(&token_file),
            }),
            (None, _, _) => {
                cx.schema(
                    line,
                    format!("status.provider `{}` is not supported", r.provider),
                    "use github, gitea, forgejo, gitlab, bitbucket or git-notes",
                );
                None
            }
            _ => {
                cx.schema(line, "status needs `repo` and `token_file` for a forge", "e.g. status: { provider: github, repo: platform/fleet, token_file: /run/credentials/strata.service/github-token }");
                None
            }
        }
    };
    sink.map(|sink| StatusConfig { sink, target_url: r.target_url, min_interval, pull_requests: r.pull_requests, tls })
}

/// `proxy`: a URL the proxy router accepts, and basic auth whole or not at all.
pub(super) fn proxy(cx: &mut Reader, raw: Option<Spanned<RawProxy>>) -> Option<Proxy> {
    let p = raw?;
    let resolve = cx.resolver();
    let line = p.referenced.line() as usize;
    let p = p.value;
    if p.username.is_some() != p.password_file.is_some() {
        cx.schema(
            line,
            "proxy: username and password_file go together",
            "the proxy's basic-auth password is read from password_file, never written in strata.yaml",
        );
    }
    if let Err(e) = crate::net::proxy::Router::from_config(&Proxy { url: p.url.clone(), ..Proxy::default() }) {
        cx.schema(
            line,
            e.to_string(),
            "e.g. proxy: { url: http://proxy.example.com:3128, no_proxy: [.example.com, 10.0.0.0/8] }",
        );
    }
    Some(Proxy {
        url: p.url,
        no_proxy: p.no_proxy.map(RawList::items).unwrap_or_default(),
        username: p.username,
        password_file: p.password_file.as_deref().map(resolve),
    })
}
