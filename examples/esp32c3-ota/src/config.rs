//! What the firmware is built with: the Wi-Fi network it joins and the URL it updates from,
//! compiled in from environment variables at build time (`option_env!`), each with a default.
//! The values are checked while compiling: a bad one stops the build with a message naming
//! the variable. `tests/firmware_c3.rs` includes this file too, to look for the URL in the
//! firmware's `.rodata`.
//!
//! ```text
//! OTA_WIFI_SSID=office OTA_WIFI_PASSWORD=secret \
//!   OTA_UPDATE_URL=http://192.168.1.20:8080/esp32c3-ota.bin cargo build --release
//! ```

/// `OTA_WIFI_SSID`: the network to join in station mode. Default `myssid`, the default of
/// ESP-IDF's example connection settings (`CONFIG_EXAMPLE_WIFI_SSID`, esp-idf
/// `examples/common_components/protocol_examples_common/Kconfig.projbuild`).
pub const WIFI_SSID: &str = env_or(option_env!("OTA_WIFI_SSID"), "myssid");

/// `OTA_WIFI_PASSWORD`: its WPA2-Personal passphrase; empty joins an open network. Default
/// `mypassword` (`CONFIG_EXAMPLE_WIFI_PASSWORD`, same file).
pub const WIFI_PASSWORD: &str = env_or(option_env!("OTA_WIFI_PASSWORD"), "mypassword");

/// `OTA_UPDATE_URL`: the app image to download (`http://`, host name or IPv4 address, optional
/// port, path). Default: `ota serve` on its default port 8080 on a PC at 192.168.0.3, the
/// address of ESP-IDF's OTA examples' `CONFIG_EXAMPLE_FIRMWARE_UPGRADE_URL`
/// (esp-idf `examples/system/ota/*/main/Kconfig.projbuild`).
pub const UPDATE_URL: &str = env_or(
    option_env!("OTA_UPDATE_URL"),
    "http://192.168.0.3:8080/esp32c3-ota.bin",
);

/// Longest SSID: 32 bytes (`wifi_sta_config_t.ssid[32]`, esp-idf
/// `components/esp_wifi/include/esp_wifi_types_generic.h`).
pub const SSID_MAX: usize = 32;
/// WPA2-Personal passphrase: 8 to 63 characters (IEEE 802.11i; 64 would be a raw hex key,
/// not accepted here), `wifi_sta_config_t.password[64]` in the same file.
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 63;
/// Longest URL: `OTA_URL_SIZE` of ESP-IDF's native OTA example (esp-idf
/// `examples/system/ota/native_ota_example/main/native_ota_example.c`).
pub const URL_MAX: usize = 256;
/// The only scheme this build speaks (no TLS in it).
pub const URL_SCHEME: &str = "http://";

const fn env_or(value: Option<&'static str>, default: &'static str) -> &'static str {
    match value {
        Some(v) => v,
        None => default,
    }
}

const fn starts_with(s: &str, prefix: &str) -> bool {
    let (s, p) = (s.as_bytes(), prefix.as_bytes());
    if s.len() < p.len() {
        return false;
    }
    let mut i = 0;
    while i < p.len() {
        if s[i] != p[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Printable ASCII only, no space (what a URL may hold unescaped, RFC 3986).
const fn url_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] <= b' ' || b[i] > b'~' {
            return false;
        }
        i += 1;
    }
    true
}

/// After `http://`: a host before the first `/`, and that `/` (the path) present.
const fn url_has_host_and_path(s: &str) -> bool {
    let b = s.as_bytes();
    let start = URL_SCHEME.len();
    let mut i = start;
    while i < b.len() && b[i] != b'/' {
        i += 1;
    }
    i > start && i < b.len() && b[start] != b':'
}

const _: () = {
    assert!(
        !WIFI_SSID.is_empty() && WIFI_SSID.len() <= SSID_MAX,
        "OTA_WIFI_SSID must be 1 to 32 bytes"
    );
    assert!(
        WIFI_PASSWORD.is_empty()
            || (WIFI_PASSWORD.len() >= PASSWORD_MIN && WIFI_PASSWORD.len() <= PASSWORD_MAX),
        "OTA_WIFI_PASSWORD must be empty (open network) or 8 to 63 bytes"
    );
    assert!(
        starts_with(UPDATE_URL, URL_SCHEME),
        "OTA_UPDATE_URL must start with http:// (this build has no TLS)"
    );
    assert!(
        UPDATE_URL.len() <= URL_MAX,
        "OTA_UPDATE_URL is longer than 256 bytes"
    );
    assert!(
        url_chars_ok(UPDATE_URL),
        "OTA_UPDATE_URL holds a space, a control or a non-ASCII byte"
    );
    assert!(
        url_has_host_and_path(UPDATE_URL),
        "OTA_UPDATE_URL needs a host and a path: http://HOST[:PORT]/PATH"
    );
};
