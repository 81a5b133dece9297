//! How every Waveguide binary reads its configuration: one TOML file, with any key overridden
//! by an environment variable `WAVEGUIDE_<SECTION>_<KEY>` (values read as TOML, so numbers,
//! booleans and arrays keep their type). The binaries deserialize the result into their own
//! typed config with unknown keys refused.

use std::path::{Path, PathBuf};

/// Environment variables that override keys: `WAVEGUIDE_WEBRTC_UDP_PORT=9000` sets
/// `webrtc.udp_port`.
pub const ENV_PREFIX: &str = "WAVEGUIDE_";

/// Why the file and overrides cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or an environment override is not valid.
    #[error("{0}")]
    Invalid(String),
}

/// The file (if any) as a TOML table with the environment overrides of `sections` applied.
pub fn read_with_env(
    path: Option<&Path>,
    env: impl Iterator<Item = (String, String)>,
    sections: &[&str],
) -> Result<toml::Table, ConfigFileError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigFileError::Read {
            path: p.to_owned(),
            source,
        })?,
        None => String::new(),
    };
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigFileError::Invalid(format!("config file: {e}")))?;
    for (name, value) in env {
        let Some((section, key)) = name
            .strip_prefix(ENV_PREFIX)
            .and_then(|rest| rest.split_once('_'))
        else {
            continue;
        };
        let section = section.to_ascii_lowercase();
        if !sections.contains(&section.as_str()) {
            continue;
        }
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigFileError::Invalid(format!(
                "`{section}` must be a table"
            )));
        };
        section_table.insert(key.to_ascii_lowercase(), env_value(&value));
    }
    Ok(table)
}

/// An environment value as TOML: numbers, booleans and arrays keep their type, anything else
/// is a string.
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_keep_their_type_and_ignore_other_sections() {
        let env = [
            ("WAVEGUIDE_WEBRTC_UDP_PORT", "9000"),
            ("WAVEGUIDE_WEBRTC_BIND_IPS", "[\"10.0.0.5\"]"),
            ("WAVEGUIDE_CLUSTER_TOKEN", "s3cret"),
            ("WAVEGUIDE_OTHER_KEY", "1"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let t = read_with_env(None, env.into_iter(), &["webrtc", "cluster"]).unwrap();
        assert_eq!(t["webrtc"]["udp_port"].as_integer(), Some(9000));
        assert_eq!(t["webrtc"]["bind_ips"][0].as_str(), Some("10.0.0.5"));
        assert_eq!(t["cluster"]["token"].as_str(), Some("s3cret"));
        assert!(!t.contains_key("other"));
    }
}
