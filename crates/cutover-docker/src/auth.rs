//! Registry credentials from `~/.docker/config.json` (`auths.<registry>.auth`, the
//! base64 `user:password` that `docker login` writes). Credential helpers (`credsStore`)
//! are not consulted yet: an image behind one must be pulled by `docker pull` first.

use std::path::PathBuf;

use base64::Engine as _;
use bollard::auth::DockerCredentials;

/// The registry part of an image reference: `registry.example.org:5000/app:1` →
/// `registry.example.org:5000`; Docker Hub references → `https://index.docker.io/v1/`.
pub fn registry_of(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "https://index.docker.io/v1/".to_string(),
    }
}

fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// Credentials for the registry of `reference`, when `docker login` stored some.
pub fn credentials_for(reference: &str) -> Option<DockerCredentials> {
    let text = std::fs::read_to_string(config_path()?).ok()?;
    credentials_in(&text, &registry_of(reference))
}

fn credentials_in(config_json: &str, registry: &str) -> Option<DockerCredentials> {
    let config: serde_json::Value = serde_json::from_str(config_json).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let entry = auths.iter().find_map(|(key, v)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let want = registry
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        (host == want || host.split('/').next() == want.split('/').next()).then_some(v)
    })?;
    let encoded = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some(DockerCredentials {
        username: Some(user.to_string()),
        password: Some(password.to_string()),
        serveraddress: Some(registry.to_string()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_the_first_component_when_it_looks_like_a_host() {
        assert_eq!(
            registry_of("registry.example.org:5000/app:1"),
            "registry.example.org:5000"
        );
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("127.0.0.1:5000/app"), "127.0.0.1:5000");
        assert_eq!(
            registry_of("library/postgres:15"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(registry_of("postgres"), "https://index.docker.io/v1/");
    }

    #[test]
    fn credentials_are_decoded_from_the_auth_field() {
        // base64("ci:s3cret")
        let cfg = r#"{"auths":{"registry.example.org:5000":{"auth":"Y2k6czNjcmV0"}}}"#;
        let c = credentials_in(cfg, "registry.example.org:5000").expect("found");
        assert_eq!(c.username.as_deref(), Some("ci"));
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert!(credentials_in(cfg, "other.example.org").is_none());
        let hub = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"Y2k6czNjcmV0"}}}"#;
        assert!(credentials_in(hub, "https://index.docker.io/v1/").is_some());
    }
}
