//! Credentials in the example repository, to show that their values never leave strata except
//! through `strata render`: two Secrets (base64 `data` and plain `stringData`) and a custom
//! resource whose `spec.password` the profile declares sensitive.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::Repo;

/// In `app-credentials`' `data` (base64), and again in its `stringData` as `again`.
pub const PASSWORD: &str = "Hunter2-Pass-7f3a";
/// In `app-credentials`' `stringData`.
pub const TOKEN: &str = "tok-Ex4mple-91c2e";
/// In `app-config`'s `data`: it never changes, while the object around it does.
pub const API_KEY: &str = "ak-Unchanged-55d1";
/// The Database custom resource's `spec.password`, declared sensitive in the profile.
pub const DB_PASSWORD: &str = "db-Pa55word-0b9e";

/// What [`rotate`] changes them to.
pub const NEW_PASSWORD: &str = "Hunter3-Pass-c4d8";
pub const NEW_TOKEN: &str = "tok-Ex4mple-27ab0";
pub const NEW_DB_PASSWORD: &str = "db-Pa55word-e61f";

/// Values a test sets on live objects behind strata's back.
pub const LIVE_PASSWORD: &str = "Live-Edited-9a0c1";
pub const LIVE_DB_PASSWORD: &str = "db-Live-Edit-3d7f";

pub const MARKER: &str = "<redacted hmac:";

pub fn b64(text: &str) -> String {
    BASE64.encode(text)
}

fn manifests(password: &str, token: &str, db_password: &str, team: &str, immutable: bool) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: app-credentials
type: Opaque
data:
  password: {password_b64}
stringData:
  token: {token}
  again: {again}
---
apiVersion: v1
kind: Secret
metadata:
  name: app-config
  labels: {{ team: {team} }}
immutable: {immutable}
data:
  apiKey: {api_key}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: databases.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {{ kind: Database, plural: databases }}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {{ type: object, properties: {{ size: {{ type: integer }}, password: {{ type: string }} }} }}
---
apiVersion: example.com/v1
kind: Database
metadata:
  name: orders
spec:
  size: 1
  password: {db_password}
",
        password_b64 = b64(password),
        again = PASSWORD,
        api_key = b64(API_KEY),
    )
}

/// Adds the credentials to the hello-universe pack and declares the Database's password
/// sensitive in both aws-profile versions that use it (not committed).
pub fn add(repo: &Repo) {
    repo.write(
        "packs/hello-universe/manifests/credentials.yaml",
        &manifests(PASSWORD, TOKEN, DB_PASSWORD, "payments", false),
    );
    for version in ["1.0.0", "1.1.0"] {
        repo.edit(
            &format!("profiles/aws-profile/{version}/profile.yaml"),
            "      source: packs/hello-universe/manifests\n",
            "      source: packs/hello-universe/manifests\n      sensitive: [{ kind: Database, path: /spec/password }]\n",
        );
    }
}

/// New values for the password, the token and the database password; `app-config` keeps its
/// value and changes around it (a label, `immutable`) (not committed).
pub fn rotate(repo: &Repo) {
    repo.write(
        "packs/hello-universe/manifests/credentials.yaml",
        &manifests(NEW_PASSWORD, NEW_TOKEN, NEW_DB_PASSWORD, "billing", true),
    );
}

/// Every credential above that appears in `text`, plain or base64.
pub fn leaks(text: &str) -> Vec<String> {
    [PASSWORD, TOKEN, API_KEY, DB_PASSWORD, NEW_PASSWORD, NEW_TOKEN, NEW_DB_PASSWORD, LIVE_PASSWORD, LIVE_DB_PASSWORD]
        .into_iter()
        .flat_map(|v| [v.to_string(), b64(v)])
        .filter(|v| text.contains(v.as_str()))
        .collect()
}

/// Asserts that `text` holds none of the credentials.
#[track_caller]
pub fn assert_no_leak(what: &str, text: &str) {
    let leaked = leaks(text);
    assert!(leaked.is_empty(), "{what} shows {leaked:?}:\n{text}");
}
