//! Targets registered as Secrets in the management cluster, as Argo CD registers clusters.
//!
//! ```text
//!   Secret strata-system/<any name>, label strata.dev/target=<target name>
//!     data.kubeconfig (+ data.context)           a kubeconfig holding everything it needs
//!     data.server + data.config                  Argo CD's cluster secret: bearerToken or
//!                                                username/password, tlsClientConfig, proxyUrl
//!     data.server = https://kubernetes.default.svc, no config   the management cluster itself
//!   ──> TargetConfig (Secret or InCluster) | SecretError naming the Secret and the key
//! ```
//!
//! Pure: the watch that feeds it lives in the daemon. A Secret must carry everything in itself:
//! files on strata's host (`certificate-authority: /path`, `tokenFile`), exec plugins and auth
//! providers are refused, since whoever may write Secrets in strata's namespace must not get to
//! read strata's files or run programs in its pod. Messages name the Secret and the key, never a
//! value.

use std::collections::BTreeMap;
use std::fmt;

use kube::config::{AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::target::TargetConfig;

/// The label that registers a Secret as a target; its value is the target's name.
pub const TARGET_LABEL: &str = crate::render::object::TARGET_LABEL;

/// What Argo CD calls the management cluster from inside it.
pub const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";

/// A target's connection, read from a Secret.
pub struct ClusterSecret {
    /// `namespace/name` of the Secret.
    pub secret: String,
    kubeconfig: Kubeconfig,
    /// Of everything the connection was made from, so a changed Secret reconnects.
    digest: [u8; 32],
}

impl ClusterSecret {
    pub fn kubeconfig(&self) -> &Kubeconfig {
        &self.kubeconfig
    }
}

impl fmt::Display for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret {}", self.secret)
    }
}

/// Never the credentials.
impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret({})", self.secret)
    }
}

impl PartialEq for ClusterSecret {
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret && self.digest == other.digest
    }
}

impl Eq for ClusterSecret {}

/// Why a Secret labelled as a target cannot be used. Names the Secret and the key.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("Secret {secret} (label {TARGET_LABEL}={target}): {problem}")]
pub struct SecretError {
    pub secret: String,
    pub target: String,
    pub problem: String,
}

/// What in a Secret's kubeconfig (or Argo CD config) would reach beyond the Secret: said as
/// [`SecretError::problem`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum Unfit {
    #[error(
        "`config` asks for an exec provider or AWS auth: strata runs no programs named by a Secret; give a bearerToken or client certificate"
    )]
    ArgoProgram,
    #[error("{what} of {entry:?} names a file; a Secret must hold the data itself (use {what}-data)")]
    File { what: &'static str, entry: String },
    #[error("tokenFile of user {0:?} names a file; a Secret must hold the token itself")]
    TokenFile(String),
    #[error(
        "user {0:?} runs an exec plugin or auth provider: strata runs no programs named by a Secret; give a token or client certificate"
    )]
    Program(String),
    #[error("the kubeconfig has no current-context: set it, or name one with key `context`")]
    NoContext,
}

/// Argo CD's `config` key.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ArgoConfig {
    username: Option<String>,
    password: Option<String>,
    bearer_token: Option<String>,
    #[serde(default)]
    tls_client_config: ArgoTls,
    proxy_url: Option<String>,
    exec_provider_config: Option<serde_json::Value>,
    aws_auth_config: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ArgoTls {
    #[serde(default)]
    insecure: bool,
    server_name: Option<String>,
    ca_data: Option<String>,
    cert_data: Option<String>,
    key_data: Option<String>,
}

/// The target a labelled Secret registers. `data` is the Secret's data, decoded.
pub fn target(
    namespace: &str,
    name: &str,
    label: &str,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<TargetConfig, SecretError> {
    let secret = format!("{namespace}/{name}");
    let refuse = |problem: String| SecretError { secret: secret.clone(), target: label.to_string(), problem };
    let text = |key: &str| -> Result<Option<String>, SecretError> {
        data.get(key)
            .map(|bytes| String::from_utf8(bytes.clone()).map_err(|_| refuse(format!("`{key}` is not UTF-8 text"))))
            .transpose()
    };
    let kubeconfig = match (text("kubeconfig")?, text("server")?) {
        (Some(_), Some(_)) => {
            return Err(refuse("has both `kubeconfig` and `server`: keep one way of reaching the cluster".into()));
        }
        (Some(yaml), None) => {
            let mut kubeconfig = Kubeconfig::from_yaml(&yaml).map_err(|_| {
                refuse("`kubeconfig` is not a kubeconfig (YAML with clusters, users and contexts)".into())
            })?;
            if let Some(context) = text("context")? {
                if !kubeconfig.contexts.iter().any(|c| c.name == context) {
                    return Err(refuse(format!("`context` names {context:?}, which the kubeconfig does not have")));
                }
                kubeconfig.current_context = Some(context);
            }
            kubeconfig
        }
        (None, Some(server)) => {
            let config = text("config")?.filter(|c| !c.trim().is_empty());
            if server.trim_end_matches('/') == IN_CLUSTER_SERVER && config.is_none() {
                return Ok(TargetConfig::InCluster);
            }
            let config: ArgoConfig = match &config {
                Some(json) => serde_json::from_str(json).map_err(|e| {
                    // serde names the field and position, never the value.
                    refuse(format!("`config` is not Argo CD's cluster config JSON: {e}"))
                })?,
                None => ArgoConfig::default(),
            };
            argo_kubeconfig(label, server.trim(), config).map_err(|unfit| refuse(unfit.to_string()))?
        }
        (None, None) => {
            return Err(refuse(
                "holds neither `kubeconfig` nor `server` + `config`: add the cluster's kubeconfig as key `kubeconfig`"
                    .into(),
            ));
        }
    };
    self_contained(&kubeconfig).map_err(|unfit| refuse(unfit.to_string()))?;
    let mut digest = Sha256::new();
    for (key, value) in
        data.iter().filter(|(k, _)| matches!(k.as_str(), "kubeconfig" | "context" | "server" | "config"))
    {
        digest.update((key.len() as u64).to_le_bytes());
        digest.update(key.as_bytes());
        digest.update((value.len() as u64).to_le_bytes());
        digest.update(value);
    }
    Ok(TargetConfig::Secret(std::sync::Arc::new(ClusterSecret {
        secret,
        kubeconfig,
        digest: digest.finalize().into(),
    })))
}

/// The kubeconfig Argo CD's `server` and `config` describe.
fn argo_kubeconfig(name: &str, server: &str, config: ArgoConfig) -> Result<Kubeconfig, Unfit> {
    if config.exec_provider_config.is_some() || config.aws_auth_config.is_some() {
        return Err(Unfit::ArgoProgram);
    }
    let tls = config.tls_client_config;
    let cluster = Cluster {
        server: Some(server.to_string()),
        insecure_skip_tls_verify: tls.insecure.then_some(true),
        certificate_authority_data: tls.ca_data,
        proxy_url: config.proxy_url,
        tls_server_name: tls.server_name,
        ..Cluster::default()
    };
    let user = AuthInfo {
        username: config.username,
        password: config.password.map(Into::into),
        token: config.bearer_token.map(Into::into),
        client_certificate_data: tls.cert_data,
        client_key_data: tls.key_data.map(Into::into),
        ..AuthInfo::default()
    };
    Ok(Kubeconfig {
        clusters: vec![NamedCluster { name: name.to_string(), cluster: Some(cluster), ..NamedCluster::default() }],
        auth_infos: vec![NamedAuthInfo { name: name.to_string(), auth_info: Some(user), ..NamedAuthInfo::default() }],
        contexts: vec![NamedContext {
            name: name.to_string(),
            context: Some(Context { cluster: name.to_string(), user: Some(name.to_string()), ..Context::default() }),
            ..NamedContext::default()
        }],
        current_context: Some(name.to_string()),
        ..Kubeconfig::default()
    })
}

/// Refuses what would reach beyond the Secret: files on strata's host and programs to run.
fn self_contained(kubeconfig: &Kubeconfig) -> Result<(), Unfit> {
    let file = |what: &'static str, entry: &str| Unfit::File { what, entry: entry.to_string() };
    for named in &kubeconfig.clusters {
        if named.cluster.as_ref().is_some_and(|c| c.certificate_authority.is_some()) {
            return Err(file("certificate-authority", &named.name));
        }
    }
    for named in &kubeconfig.auth_infos {
        let Some(user) = &named.auth_info else { continue };
        if user.client_certificate.is_some() {
            return Err(file("client-certificate", &named.name));
        }
        if user.client_key.is_some() {
            return Err(file("client-key", &named.name));
        }
        if user.token_file.is_some() {
            return Err(Unfit::TokenFile(named.name.clone()));
        }
        if user.exec.is_some() || user.auth_provider.is_some() {
            return Err(Unfit::Program(named.name.clone()));
        }
    }
    if kubeconfig.current_context.is_none() && kubeconfig.contexts.len() != 1 {
        return Err(Unfit::NoContext);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    }

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: LS0t\nusers:\n- name: u\n  user:\n    token: s3cr3t-token\ncontexts:\n- name: ctx\n  context: {cluster: c, user: u}\n- name: other\n  context: {cluster: c, user: u}\ncurrent-context: ctx\n";

    #[test]
    fn a_kubeconfig_secret_with_an_optional_context() {
        let t = target("strata-system", "aws", "aws-cluster", &data(&[("kubeconfig", KUBECONFIG)])).unwrap();
        let TargetConfig::Secret(secret) = &t else { panic!("{t:?}") };
        assert_eq!(secret.kubeconfig().current_context.as_deref(), Some("ctx"));
        assert_eq!(secret.to_string(), "Secret strata-system/aws");
        assert!(!format!("{t:?}").contains("s3cr3t"), "{t:?}");
        let other =
            target("strata-system", "aws", "aws-cluster", &data(&[("kubeconfig", KUBECONFIG), ("context", "other")]))
                .unwrap();
        let TargetConfig::Secret(with_context) = &other else { panic!() };
        assert_eq!(with_context.kubeconfig().current_context.as_deref(), Some("other"));
        assert_ne!(t, other, "a changed Secret is another connection");
        assert_eq!(t, target("strata-system", "aws", "aws-cluster", &data(&[("kubeconfig", KUBECONFIG)])).unwrap());
        let e = target("strata-system", "aws", "aws-cluster", &data(&[("kubeconfig", KUBECONFIG), ("context", "x")]))
            .unwrap_err();
        assert!(e.to_string().contains("`context` names \"x\""), "{e}");
    }

    #[test]
    fn argo_cd_cluster_secrets_and_the_management_cluster() {
        let config = r#"{"bearerToken": "s3cr3t-token", "tlsClientConfig": {"insecure": false, "caData": "LS0t", "serverName": "api.internal"}}"#;
        let t = target(
            "strata-system",
            "edge",
            "edge-lab",
            &data(&[("name", "edge"), ("server", "https://1.2.3.4:6443"), ("config", config)]),
        )
        .unwrap();
        let TargetConfig::Secret(secret) = &t else { panic!("{t:?}") };
        let k = secret.kubeconfig();
        let cluster = k.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://1.2.3.4:6443"));
        assert_eq!(cluster.tls_server_name.as_deref(), Some("api.internal"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("LS0t"));
        assert_eq!(k.current_context.as_deref(), Some("edge-lab"));
        let in_cluster =
            target("strata-system", "mgmt", "mgmt", &data(&[("server", "https://kubernetes.default.svc")]));
        assert_eq!(in_cluster.unwrap(), TargetConfig::InCluster);
    }

    #[test]
    fn secrets_that_reach_beyond_themselves_are_refused_without_their_values() {
        let exec = KUBECONFIG.replace("    token: s3cr3t-token\n", "    exec: {command: /bin/sh, args: [-c, id]}\n");
        let file =
            KUBECONFIG.replace("certificate-authority-data: LS0t", "certificate-authority: /var/run/secrets/ca.crt");
        let token_file = KUBECONFIG.replace(
            "    token: s3cr3t-token\n",
            "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n",
        );
        for (bad, expected) in [
            (data(&[("kubeconfig", &exec)]), "exec plugin"),
            (data(&[("kubeconfig", &file)]), "certificate-authority of \"c\" names a file"),
            (data(&[("kubeconfig", &token_file)]), "tokenFile"),
            (data(&[("kubeconfig", "s3cr3t-token: [")]), "is not a kubeconfig"),
            (
                data(&[("server", "https://x"), ("config", r#"{"execProviderConfig": {"command": "aws"}}"#)]),
                "exec provider",
            ),
            (
                data(&[("server", "https://x"), ("config", r#"{"bearerToken": 5s3cr3t}"#)]),
                "not Argo CD's cluster config",
            ),
            (data(&[("kubeconfig", KUBECONFIG), ("server", "https://x")]), "both"),
            (data(&[("token", "s3cr3t-token")]), "neither"),
        ] {
            let e = target("strata-system", "bad", "lab", &bad).unwrap_err().to_string();
            assert!(e.starts_with("Secret strata-system/bad (label strata.dev/target=lab): "), "{e}");
            assert!(e.contains(expected), "{expected}: {e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }
}
