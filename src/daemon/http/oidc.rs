//! Sign-in through the company's OpenID Connect provider (`auth.oidc`): the authorization code
//! flow with PKCE, state and nonce.
//!
//! ```text
//!   GET /login/oidc?next=/x      flow cookie (sealed: state, nonce, PKCE verifier, next; 10 min,
//!        │                       SameSite=Lax: it must come back on the provider's redirect)
//!        └─ 303 ─> provider's authorization_endpoint?response_type=code&…&code_challenge=S256(verifier)
//!   GET /login/oidc/callback?code&state     state == the flow cookie's
//!        ├─ POST token_endpoint (code, verifier, client secret)  ─> id_token [, access_token]
//!        ├─ the ID token checked ([`validate`]): signed by a key of the provider's JWKS (RS*, PS*,
//!        │  ES256/384, EdDSA; never `none` or HMAC), iss, aud (and azp), exp and iat within
//!        │  [`SKEW`], nonce
//!        ├─ groups from `groups_claim` (the ID token, else the userinfo answer for the same sub)
//!        └─ session cookie, then a page of this site that goes on to `next` (a Strict cookie is
//!           not sent on a navigation that a cross-site redirect started)
//! ```
//!
//! Discovery and JWKS are fetched from the issuer through strata's own HTTP client (the host's
//! proxy rules; `auth.oidc.ca_file`, `system_roots`), discovery once an hour, the JWKS again
//! whenever a token names a key it does not hold. Any replica finishes a flow any replica
//! started: the flow is in the sealed cookie, not in memory.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http_body_util::Full;
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::session::{hex, random};
use crate::config::{OidcConfig, read_secret};
use crate::net::{Network, Settings, Timeouts};

/// How far the provider's clock and ours may disagree.
pub const SKEW: Duration = Duration::from_secs(60);
/// An ID token issued longer ago than this is not from the flow that just ended.
const MAX_AGE: Duration = Duration::from_secs(600);
/// How long a sign-in at the provider may take.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(600);
/// Discovery is read again after this.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// The most a provider's answer may hold.
const MAX_ANSWER: usize = 1024 * 1024;

/// The provider's endpoints, from `{issuer}/.well-known/openid-configuration`.
#[derive(Clone, Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// A public key of the provider's JWKS (RFC 7517), as far as verifying needs.
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Value>,
}

struct Cache {
    discovery: Discovery,
    read: Instant,
    keys: Vec<Jwk>,
}

/// What a started sign-in carries to its callback, in the sealed flow cookie.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flow {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub next: String,
    /// Until when (seconds since the epoch).
    pub exp: i64,
}

/// Who the provider says signed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub sub: String,
    pub name: String,
    pub groups: Vec<String>,
}

/// Why a sign-in through the OpenID provider failed: what strata was doing and what went wrong,
/// said for the log and the audit record. The lower error (the HTTP client's, serde's, the URL
/// parser's, the ID token's refusal) is the source when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OidcError {
    message: String,
    #[source]
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl OidcError {
    fn caused(message: impl Into<String>, cause: impl std::error::Error + Send + Sync + 'static) -> OidcError {
        OidcError { message: message.into(), cause: Some(Box::new(cause)) }
    }
}

impl From<String> for OidcError {
    fn from(message: String) -> OidcError {
        OidcError { message, cause: None }
    }
}

impl From<&str> for OidcError {
    fn from(message: &str) -> OidcError {
        OidcError::from(message.to_string())
    }
}

pub struct Oidc {
    pub config: OidcConfig,
    cache: tokio::sync::Mutex<Option<Cache>>,
}

fn now() -> i64 {
    crate::daemon::store::now_ms() / 1000
}

impl Oidc {
    pub fn new(config: OidcConfig) -> Oidc {
        Oidc { config, cache: tokio::sync::Mutex::new(None) }
    }

    fn client(&self, network: &Network) -> Result<crate::net::Client, OidcError> {
        network
            .client(&self.config.tls, "auth.oidc.", Settings::section("auth.oidc", "issuer"), Timeouts::FORGE)
            .map_err(|e| OidcError::caused(e.to_string(), e))
    }

    /// Starts a sign-in: the URL to send the browser to, and the flow to keep in its cookie.
    pub async fn start(&self, network: &Network, next: &str) -> Result<(String, Flow), OidcError> {
        let client = self.client(network)?;
        let discovery = self.discovery(&client, false).await?;
        let flow = Flow {
            state: hex(&random::<16>()),
            nonce: hex(&random::<16>()),
            verifier: B64.encode(random::<32>()),
            next: next.to_string(),
            exp: now() + FLOW_LIFETIME.as_secs() as i64,
        };
        let challenge = B64.encode(Sha256::digest(flow.verifier.as_bytes()));
        let mut url = url::Url::parse(&discovery.authorization_endpoint)
            .map_err(|e| OidcError::caused(format!("the provider's authorization_endpoint is not a URL: {e}"), e))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_url)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &flow.state)
            .append_pair("nonce", &flow.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok((url.to_string(), flow))
    }

    /// Ends a sign-in: the code exchanged, the ID token checked, who signed in.
    pub async fn finish(&self, network: &Network, flow: &Flow, code: &str) -> Result<Person, OidcError> {
        let client = self.client(network)?;
        let discovery = self.discovery(&client, false).await?;
        let tokens = self.exchange(&client, &discovery, flow, code).await?;
        let id_token = tokens["id_token"].as_str().ok_or("the provider's token answer has no id_token")?;
        let header = header(id_token)?;
        let mut keys = self.keys().await;
        if !keys.iter().any(|k| fits(k, &header)) {
            // A key the provider rotated in since the JWKS was read.
            keys = self.refresh_keys(&client, &discovery).await?;
        }
        let claims = validate(id_token, &keys, &self.config.issuer, &self.config.client_id, &flow.nonce, now())
            .map_err(|e| OidcError::caused(format!("the ID token is refused: {e}"), e))?;
        let sub = claims["sub"].as_str().unwrap_or_default().to_string();
        let mut groups = claims.get(&self.config.groups_claim).cloned();
        let mut named = name_of(&claims);
        if (groups.is_none() || named.is_none())
            && let (Some(userinfo), Some(access)) = (&discovery.userinfo_endpoint, tokens["access_token"].as_str())
        {
            let info = get_json(&client, userinfo, Some(access)).await?;
            if info["sub"].as_str() != Some(sub.as_str()) {
                return Err("the provider's userinfo answer is about another subject".into());
            }
            groups = groups.or_else(|| info.get(&self.config.groups_claim).cloned());
            named = named.or_else(|| name_of(&info));
        }
        let groups = match groups {
            Some(Value::Array(items)) => items.into_iter().filter_map(|g| g.as_str().map(str::to_string)).collect(),
            Some(Value::String(one)) => vec![one],
            _ => Vec::new(),
        };
        let name = named.unwrap_or_else(|| sub.clone());
        let name = super::approve::clean_name(&name).unwrap_or_else(|| sub.chars().take(100).collect());
        Ok(Person { sub, name, groups: super::session::clean_groups(groups) })
    }

    async fn discovery(&self, client: &crate::net::Client, fresh: bool) -> Result<Discovery, OidcError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| !fresh && c.read.elapsed() < DISCOVERY_TTL) {
            return Ok(c.discovery.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
        let value = get_json(client, &url, None).await?;
        let discovery: Discovery = serde_json::from_value(value)
            .map_err(|e| OidcError::caused(format!("the provider's discovery document at {url}: {e}"), e))?;
        if discovery.issuer != self.config.issuer {
            return Err(format!(
                "the provider's discovery document names issuer {:?}, not auth.oidc.issuer {:?}",
                discovery.issuer, self.config.issuer
            )
            .into());
        }
        let keys = fetch_keys(client, &discovery.jwks_uri).await?;
        *cache = Some(Cache { discovery: discovery.clone(), read: Instant::now(), keys });
        Ok(discovery)
    }

    async fn keys(&self) -> Vec<Jwk> {
        self.cache.lock().await.as_ref().map(|c| c.keys.clone()).unwrap_or_default()
    }

    async fn refresh_keys(&self, client: &crate::net::Client, discovery: &Discovery) -> Result<Vec<Jwk>, OidcError> {
        let keys = fetch_keys(client, &discovery.jwks_uri).await?;
        if let Some(cache) = self.cache.lock().await.as_mut() {
            cache.keys = keys.clone();
        }
        Ok(keys)
    }

    async fn exchange(
        &self,
        client: &crate::net::Client,
        discovery: &Discovery,
        flow: &Flow,
        code: &str,
    ) -> Result<Value, OidcError> {
        let secret = match &self.config.client_secret_file {
            Some(file) => Some(read_secret(file).map_err(|e| OidcError::caused(e.to_string(), e))?),
            None => None,
        };
        let methods = discovery.token_endpoint_auth_methods_supported.as_deref().unwrap_or_default();
        let basic = methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic");
        let request = self.token_request(&discovery.token_endpoint, flow, code, secret.as_deref(), basic)?;
        let (parts, body) = client.exchange(request).await.map_err(|e| OidcError::caused(e.to_string(), e))?;
        let value: Value = parse_answer(&body, "token endpoint")?;
        if !parts.status.is_success() {
            return Err(format!(
                "the provider's token endpoint answered {}: {} {}",
                parts.status,
                value["error"].as_str().unwrap_or(""),
                value["error_description"].as_str().unwrap_or("")
            )
            .into());
        }
        Ok(value)
    }
}

impl Oidc {
    /// The token request: the code, the PKCE verifier, and the client's credentials
    /// (client_secret_basic when the provider takes it, else in the form; a public client names
    /// itself only).
    fn token_request(
        &self,
        endpoint: &str,
        flow: &Flow,
        code: &str,
        secret: Option<&str>,
        basic: bool,
    ) -> Result<hyper::Request<Full<Bytes>>, OidcError> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &self.config.redirect_url)
            .append_pair("code_verifier", &flow.verifier);
        let mut request = hyper::Request::post(endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json");
        match secret {
            Some(secret) if basic => {
                // RFC 6749 §2.3.1: each form-encoded, then Basic.
                let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", enc(&self.config.client_id), enc(secret));
                let basic = base64::engine::general_purpose::STANDARD.encode(pair);
                request = request.header("authorization", format!("Basic {basic}"));
            }
            Some(secret) => {
                form.append_pair("client_id", &self.config.client_id).append_pair("client_secret", secret);
            }
            None => {
                form.append_pair("client_id", &self.config.client_id);
            }
        }
        request
            .body(Full::new(Bytes::from(form.finish())))
            .map_err(|e| OidcError::caused(format!("the token request: {e}"), e))
    }
}

fn parse_answer(body: &[u8], what: &str) -> Result<Value, OidcError> {
    if body.len() > MAX_ANSWER {
        return Err(format!("the provider's {what} answered more than {MAX_ANSWER} bytes").into());
    }
    serde_json::from_slice(body)
        .map_err(|e| OidcError::caused(format!("the provider's {what} answered no JSON: {e}"), e))
}

async fn get_json(client: &crate::net::Client, url: &str, bearer: Option<&str>) -> Result<Value, OidcError> {
    let mut request = hyper::Request::get(url).header("accept", "application/json");
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(Full::new(Bytes::new())).map_err(|e| OidcError::caused(format!("{url}: {e}"), e))?;
    let (parts, body) = client.exchange(request).await.map_err(|e| OidcError::caused(e.to_string(), e))?;
    if !parts.status.is_success() {
        return Err(format!("the provider answered {} at {url}", parts.status).into());
    }
    parse_answer(&body, url)
}

async fn fetch_keys(client: &crate::net::Client, url: &str) -> Result<Vec<Jwk>, OidcError> {
    let jwks: Jwks = serde_json::from_value(get_json(client, url, None).await?)
        .map_err(|e| OidcError::caused(format!("the provider's JWKS at {url}: {e}"), e))?;
    // Keys of kinds this does not know are skipped, not fatal.
    Ok(jwks.keys.into_iter().filter_map(|k| serde_json::from_value::<Jwk>(k).ok()).collect())
}

/// preferred_username, else email.
fn name_of(claims: &Value) -> Option<String> {
    ["preferred_username", "email"]
        .iter()
        .find_map(|k| claims[*k].as_str().filter(|s| !s.is_empty()).map(str::to_string))
}

/// A JWS header, as far as choosing the key goes.
#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn header(token: &str) -> Result<Header, OidcError> {
    let first = token.split('.').next().unwrap_or_default();
    let bytes = B64.decode(first).map_err(|e| OidcError::caused("the ID token is not a JWS (header)", e))?;
    serde_json::from_slice(&bytes).map_err(|e| OidcError::caused(format!("the ID token's header: {e}"), e))
}

/// The key type an algorithm needs.
fn kty_of(alg: &str) -> Option<&'static str> {
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => Some("RSA"),
        "ES256" | "ES384" => Some("EC"),
        "EdDSA" => Some("OKP"),
        _ => None,
    }
}

/// Whether `key` could have made a signature with `header`'s algorithm and key id.
fn fits(key: &Jwk, header: &Header) -> bool {
    kty_of(&header.alg) == Some(key.kty.as_str())
        && key.alg.as_ref().is_none_or(|a| *a == header.alg)
        && key.use_.as_ref().is_none_or(|u| u == "sig")
        && match (&header.kid, &key.kid) {
            (Some(wanted), Some(kid)) => wanted == kid,
            (Some(_), None) => false,
            (None, _) => true,
        }
}

fn b64(field: &Option<String>, what: &str) -> Result<Vec<u8>, OidcError> {
    B64.decode(field.as_deref().ok_or(format!("the key has no {what}"))?)
        .map_err(|e| OidcError::caused(format!("the key's {what} is not base64url"), e))
}

/// Whether `key` signed `message` with `alg`.
fn verify(key: &Jwk, alg: &str, message: &[u8], signature: &[u8]) -> Result<bool, OidcError> {
    use ring::signature as sig;
    let ok = match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
            let (n, e) = (b64(&key.n, "n")?, b64(&key.e, "e")?);
            let params: &sig::RsaParameters = match alg {
                "RS256" => &sig::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &sig::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &sig::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &sig::RSA_PSS_2048_8192_SHA256,
                "PS384" => &sig::RSA_PSS_2048_8192_SHA384,
                _ => &sig::RSA_PSS_2048_8192_SHA512,
            };
            sig::RsaPublicKeyComponents { n: &n, e: &e }.verify(params, message, signature).is_ok()
        }
        "ES256" | "ES384" => {
            let (curve, params, size): (&str, &'static sig::EcdsaVerificationAlgorithm, usize) = match alg {
                "ES256" => ("P-256", &sig::ECDSA_P256_SHA256_FIXED, 32),
                _ => ("P-384", &sig::ECDSA_P384_SHA384_FIXED, 48),
            };
            if key.crv.as_deref() != Some(curve) {
                return Ok(false);
            }
            let (x, y) = (b64(&key.x, "x")?, b64(&key.y, "y")?);
            if x.len() != size || y.len() != size {
                return Err("the key's point is not on its curve's size".into());
            }
            let point = [&[4u8][..], &x, &y].concat();
            sig::UnparsedPublicKey::new(params, point).verify(message, signature).is_ok()
        }
        "EdDSA" => {
            if key.crv.as_deref() != Some("Ed25519") {
                return Ok(false);
            }
            sig::UnparsedPublicKey::new(&sig::ED25519, b64(&key.x, "x")?).verify(message, signature).is_ok()
        }
        other => return Err(format!("algorithm {other:?} is not taken").into()),
    };
    Ok(ok)
}

/// The claims of an ID token, once shown to be the provider's, for this client, current, and
/// from this flow (OpenID Connect Core §3.1.3.7).
pub fn validate(
    token: &str,
    keys: &[Jwk],
    issuer: &str,
    client_id: &str,
    nonce: &str,
    now: i64,
) -> Result<Value, OidcError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [head, body, signature] = parts.as_slice() else { return Err("not a JWS in compact form".into()) };
    let header = header(token)?;
    if kty_of(&header.alg).is_none() {
        // `none`, HS256 (a client secret as key) and anything unknown.
        return Err(format!("algorithm {:?} is not taken", header.alg).into());
    }
    let signature = B64.decode(signature).map_err(|e| OidcError::caused("the signature is not base64url", e))?;
    let message = format!("{head}.{body}");
    let candidates: Vec<&Jwk> = keys.iter().filter(|k| fits(k, &header)).collect();
    if candidates.is_empty() {
        return Err(format!("no key of the provider's JWKS fits (alg {}, kid {:?})", header.alg, header.kid).into());
    }
    let mut signed = false;
    for key in candidates {
        if verify(key, &header.alg, message.as_bytes(), &signature)? {
            signed = true;
            break;
        }
    }
    if !signed {
        return Err("the signature is not the provider's".into());
    }
    let payload = B64.decode(body).map_err(|e| OidcError::caused("the payload is not base64url", e))?;
    let claims: Value =
        serde_json::from_slice(&payload).map_err(|e| OidcError::caused(format!("the payload is not JSON: {e}"), e))?;
    if claims["iss"].as_str() != Some(issuer) {
        return Err(format!("issued by {}, not {issuer}", claims["iss"]).into());
    }
    let audiences: Vec<&str> = match &claims["aud"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&client_id) {
        return Err(format!("for audience {}, not this client", claims["aud"]).into());
    }
    if let Some(azp) = claims.get("azp").and_then(Value::as_str).or((audiences.len() > 1).then_some(""))
        && azp != client_id
    {
        return Err(format!("authorized party {azp:?}, not this client").into());
    }
    let skew = SKEW.as_secs() as i64;
    let exp = claims["exp"].as_i64().ok_or("no exp")?;
    if now >= exp + skew {
        return Err(format!("expired {}s ago", now - exp).into());
    }
    let iat = claims["iat"].as_i64().ok_or("no iat")?;
    if iat > now + skew {
        return Err("issued in the future".into());
    }
    if iat < now - MAX_AGE.as_secs() as i64 - skew {
        return Err(format!("issued {}s ago: not from this sign-in", now - iat).into());
    }
    let given = claims["nonce"].as_str().unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(nonce.as_bytes())) || nonce.is_empty() {
        return Err("the nonce is not this sign-in's".into());
    }
    if claims["sub"].as_str().is_none_or(str::is_empty) {
        return Err("no subject".into());
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::json;

    const ISSUER: &str = "https://login.example.com";
    const CLIENT: &str = "strata";

    struct Signer {
        ec: EcdsaKeyPair,
        ed: Ed25519KeyPair,
    }

    impl Signer {
        fn new() -> Signer {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            let ed = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            Signer { ec, ed }
        }

        fn keys(&self) -> Vec<Jwk> {
            let point = self.ec.public_key().as_ref();
            vec![
                Jwk {
                    kty: "EC".into(),
                    kid: Some("ec".into()),
                    crv: Some("P-256".into()),
                    x: Some(B64.encode(&point[1..33])),
                    y: Some(B64.encode(&point[33..])),
                    ..Jwk::default()
                },
                Jwk {
                    kty: "OKP".into(),
                    kid: Some("ed".into()),
                    crv: Some("Ed25519".into()),
                    x: Some(B64.encode(self.ed.public_key().as_ref())),
                    ..Jwk::default()
                },
            ]
        }

        fn sign(&self, header: Value, claims: Value) -> String {
            let message = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
            let signature = match header["alg"].as_str() {
                Some("EdDSA") => self.ed.sign(message.as_bytes()).as_ref().to_vec(),
                _ => self.ec.sign(&SystemRandom::new(), message.as_bytes()).unwrap().as_ref().to_vec(),
            };
            format!("{message}.{}", B64.encode(signature))
        }
    }

    fn claims(now: i64) -> Value {
        json!({"iss": ISSUER, "aud": CLIENT, "sub": "u1", "exp": now + 300, "iat": now, "nonce": "n1", "preferred_username": "alice", "groups": ["deployers"]})
    }

    #[test]
    fn id_tokens_are_taken_only_from_the_provider_for_this_client_and_sign_in() {
        let signer = Signer::new();
        let keys = signer.keys();
        let now = 1_700_000_000;
        let es = json!({"alg": "ES256", "kid": "ec"});
        let check = |token: &str| validate(token, &keys, ISSUER, CLIENT, "n1", now);
        let good = check(&signer.sign(es.clone(), claims(now))).unwrap();
        assert_eq!(good["preferred_username"], "alice");
        assert!(check(&signer.sign(json!({"alg": "EdDSA", "kid": "ed"}), claims(now))).is_ok());
        // Several audiences: this client must be the authorized party.
        let mut many = claims(now);
        many["aud"] = json!([CLIENT, "other"]);
        assert!(check(&signer.sign(es.clone(), many.clone())).unwrap_err().to_string().contains("authorized party"));
        many["azp"] = json!(CLIENT);
        assert!(check(&signer.sign(es.clone(), many)).is_ok());

        let refused = |claims: Value, why: &str| {
            let e = check(&signer.sign(json!({"alg": "ES256", "kid": "ec"}), claims)).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        };
        let mut c = claims(now);
        c["aud"] = json!("another-client");
        refused(c, "audience");
        let mut c = claims(now);
        c["iss"] = json!("https://evil.example.com");
        refused(c, "issued by");
        let mut c = claims(now);
        c["exp"] = json!(now - 61);
        refused(c, "expired");
        let mut c = claims(now);
        c["exp"] = json!(now - 30);
        assert!(check(&signer.sign(es.clone(), c)).is_ok(), "within the skew");
        let mut c = claims(now);
        c["iat"] = json!(now + 3600);
        refused(c, "future");
        let mut c = claims(now);
        c["iat"] = json!(now - 3600);
        c["exp"] = json!(now + 3600);
        refused(c, "not from this sign-in");
        let mut c = claims(now);
        c["nonce"] = json!("replayed");
        refused(c, "nonce");
        let mut c = claims(now);
        c.as_object_mut().unwrap().remove("nonce");
        refused(c, "nonce");

        // Signatures: another key, a changed payload, `none`, HMAC, a key id the JWKS lacks.
        let other = Signer::new();
        assert!(check(&other.sign(es.clone(), claims(now))).unwrap_err().to_string().contains("not the provider's"));
        let token = signer.sign(es.clone(), claims(now));
        let parts: Vec<&str> = token.split('.').collect();
        let mut changed = claims(now);
        changed["preferred_username"] = json!("admin");
        let forged = format!("{}.{}.{}", parts[0], B64.encode(changed.to_string()), parts[2]);
        assert!(check(&forged).unwrap_err().to_string().contains("not the provider's"));
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), parts[1]);
        assert!(check(&none).unwrap_err().to_string().contains("not taken"));
        let hs = format!("{}.{}.{}", B64.encode(r#"{"alg":"HS256"}"#), parts[1], parts[2]);
        assert!(check(&hs).unwrap_err().to_string().contains("not taken"));
        assert!(
            check(&signer.sign(json!({"alg": "ES256", "kid": "gone"}), claims(now)))
                .unwrap_err()
                .to_string()
                .contains("no key")
        );
        // An Ed25519 key does not verify an ES256 signature, whatever the header claims.
        assert!(
            check(&signer.sign(json!({"alg": "ES256", "kid": "ed"}), claims(now)))
                .unwrap_err()
                .to_string()
                .contains("no key")
        );
        assert!(check("a.b").is_err() && check("").is_err());
    }
}
