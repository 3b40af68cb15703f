//! Checks made before a cloud store is used: an endpoint that is a URL, plain `http://`
//! only when allowed, and a source of credentials other than a guess.
//!
//! object_store's S3, GCS and Azure clients fall back to the cloud's instance metadata
//! service (169.254.169.254) when nothing else gives credentials. Off that cloud, the
//! lookup times out (and is retried) before failing with an error that does not say
//! "no credentials"; so tablesafe only lets it happen when this host is an instance of
//! that cloud (its DMI data says so: `/sys/class/dmi/id`, read locally, no request) or
//! the operator asked for it with `TABLESAFE_INSTANCE_METADATA=1` (`=0` forbids it,
//! e.g. for a host that merely looks like one). An EC2 instance with a role, a GCE VM
//! with a service account and an Azure VM with a managed identity work as before.

use std::path::{Path, PathBuf};

use object_store::ClientConfigKey;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};

use super::error::StoreError;

/// The environment variable that allows (`1`) or forbids (`0`) credentials from the
/// instance metadata service, whatever the host looks like.
pub const INSTANCE_METADATA_ENV: &str = "TABLESAFE_INSTANCE_METADATA";

fn truthy(v: Option<String>) -> bool {
    v.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn dmi(field: &str) -> String {
    std::fs::read_to_string(Path::new("/sys/class/dmi/id").join(field))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The clouds whose instance metadata service object_store may ask for credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cloud {
    Aws,
    Google,
    Azure,
}

/// Whether the instance metadata service may be asked (see the module documentation).
fn metadata_allowed(cloud: Cloud) -> bool {
    if let Some(v) = env(INSTANCE_METADATA_ENV) {
        return truthy(Some(v));
    }
    match cloud {
        Cloud::Aws => {
            dmi("sys_vendor") == "Amazon EC2"
                || dmi("product_uuid").to_ascii_lowercase().starts_with("ec2")
                || std::fs::read_to_string("/sys/hypervisor/uuid")
                    .is_ok_and(|u| u.to_ascii_lowercase().starts_with("ec2"))
        }
        Cloud::Google => {
            dmi("product_name") == "Google Compute Engine" || dmi("bios_vendor") == "Google"
        }
        // Azure's VMs all carry this asset tag.
        Cloud::Azure => dmi("chassis_asset_tag") == "7783-7084-3265-9085",
    }
}

fn missing(url: &str, what: &str, hint: &str) -> StoreError {
    StoreError::MissingCredentials {
        url: url.to_string(),
        detail: format!(
            "no {what} credentials found: {hint}; on a cloud instance whose role should be used, set {INSTANCE_METADATA_ENV}=1"
        ),
    }
}

/// An endpoint must be an absolute http(s) URL with a host; plain http only when
/// `allow_http`. `flag` says what to do to allow it.
fn check_endpoint(
    endpoint: &str,
    allow_http: bool,
    flag: &str,
    what: &str,
) -> Result<(), StoreError> {
    let parsed = ::url::Url::parse(endpoint).ok();
    let ok = parsed.as_ref().is_some_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    });
    if !ok {
        return Err(StoreError::Misconfigured(format!(
            "{what} {endpoint:?} is not a URL: give one like https://s3.example.com or http://127.0.0.1:9000"
        )));
    }
    if parsed.is_some_and(|u| u.scheme() == "http") && !allow_http {
        return Err(StoreError::Misconfigured(format!(
            "{what} {endpoint} is plain http: {flag} to allow unencrypted connections, or use https://"
        )));
    }
    Ok(())
}

/// S3: the endpoint, and some credentials (keys, web identity, container credentials,
/// unsigned requests, or the instance metadata service where allowed).
pub(crate) fn check_s3(b: &AmazonS3Builder, url: &str) -> Result<(), StoreError> {
    let get = |k: AmazonS3ConfigKey| b.get_config_value(&k).filter(|v| !v.trim().is_empty());
    if let Some(endpoint) = get(AmazonS3ConfigKey::Endpoint) {
        let allow = truthy(get(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)));
        check_endpoint(
            &endpoint,
            allow,
            "add --s3-allow-http (or allow_http = true in [s3])",
            "S3 endpoint",
        )?;
    }
    let has_keys = get(AmazonS3ConfigKey::AccessKeyId).is_some()
        && get(AmazonS3ConfigKey::SecretAccessKey).is_some();
    let other = get(AmazonS3ConfigKey::WebIdentityTokenFile).is_some()
        || get(AmazonS3ConfigKey::ContainerCredentialsRelativeUri).is_some()
        || get(AmazonS3ConfigKey::ContainerCredentialsFullUri).is_some()
        || get(AmazonS3ConfigKey::MetadataEndpoint).is_some()
        || truthy(get(AmazonS3ConfigKey::SkipSignature));
    let disabled = truthy(env("AWS_EC2_METADATA_DISABLED"));
    if has_keys || other || (!disabled && metadata_allowed(Cloud::Aws)) {
        return Ok(());
    }
    let file_only = home().is_some_and(|h| h.join(".aws/credentials").is_file());
    let hint = if file_only {
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (tablesafe does not read ~/.aws/credentials), or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN"
    } else {
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN"
    };
    Err(missing(url, "S3", hint))
}

fn home() -> Option<PathBuf> {
    env("HOME").map(PathBuf::from)
}

/// GCS: a service account, application default credentials (the gcloud file), a
/// bearer token, or the metadata service where allowed.
pub(crate) fn check_gcs(b: &GoogleCloudStorageBuilder, url: &str) -> Result<(), StoreError> {
    let get = |k: GoogleConfigKey| b.get_config_value(&k).filter(|v| !v.trim().is_empty());
    let adc = home().is_some_and(|h| {
        h.join(".config/gcloud/application_default_credentials.json")
            .is_file()
    });
    let has = get(GoogleConfigKey::ServiceAccount).is_some()
        || get(GoogleConfigKey::ServiceAccountKey).is_some()
        || get(GoogleConfigKey::ApplicationCredentials).is_some()
        || get(GoogleConfigKey::BearerToken).is_some()
        || truthy(get(GoogleConfigKey::SkipSignature))
        || adc;
    if has || metadata_allowed(Cloud::Google) {
        return Ok(());
    }
    Err(missing(
        url,
        "Google Cloud Storage",
        "set GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT) to a service account key file, or run `gcloud auth application-default login`",
    ))
}

/// Azure: the endpoint, and a key, SAS, token, service principal, federated token,
/// the Azure CLI, the emulator, or a managed identity where allowed.
pub(crate) fn check_azure(b: &MicrosoftAzureBuilder, url: &str) -> Result<(), StoreError> {
    let get = |k: AzureConfigKey| b.get_config_value(&k).filter(|v| !v.trim().is_empty());
    let emulator = truthy(get(AzureConfigKey::UseEmulator));
    if let Some(endpoint) = get(AzureConfigKey::Endpoint) {
        let allow = emulator || truthy(get(AzureConfigKey::Client(ClientConfigKey::AllowHttp)));
        check_endpoint(
            &endpoint,
            allow,
            "set AZURE_ALLOW_HTTP=true",
            "Azure endpoint",
        )?;
    }
    let has = get(AzureConfigKey::AccessKey).is_some()
        || get(AzureConfigKey::SasKey).is_some()
        || get(AzureConfigKey::Token).is_some()
        || (get(AzureConfigKey::ClientId).is_some()
            && (get(AzureConfigKey::ClientSecret).is_some()
                || get(AzureConfigKey::FederatedTokenFile).is_some()))
        || truthy(get(AzureConfigKey::UseAzureCli))
        || truthy(get(AzureConfigKey::SkipSignature))
        || emulator
        || get(AzureConfigKey::MsiEndpoint).is_some()
        || env("IDENTITY_ENDPOINT").is_some()
        || env("MSI_ENDPOINT").is_some();
    if has || metadata_allowed(Cloud::Azure) {
        return Ok(());
    }
    Err(missing(
        url,
        "Azure",
        "set AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY, or AZURE_CLIENT_ID with AZURE_CLIENT_SECRET and AZURE_TENANT_ID)",
    ))
}
