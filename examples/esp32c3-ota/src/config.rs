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

const fn starts_with(s: &[u8], prefix: &[u8]) -> bool {
    if s.len() < prefix.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if s[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Why `(ssid, password, url)` cannot be built in, or `Ok`. The rules: an SSID of 1 to 32
/// bytes; a password that is empty (open network) or 8 to 63 bytes; a URL of at most
/// [`URL_MAX`] bytes, `http://HOST[:PORT]/PATH`, HOST a DNS name or IPv4 address (letters,
/// digits, `.`, `-`), PORT 1 to 65535, only printable ASCII without spaces. Evaluated while
/// compiling the firmware (a bad value stops the build with this message).
pub const fn check(ssid: &str, password: &str, url: &str) -> Result<(), &'static str> {
    if ssid.is_empty() || ssid.len() > SSID_MAX {
        return Err("OTA_WIFI_SSID must be 1 to 32 bytes");
    }
    if !password.is_empty() && (password.len() < PASSWORD_MIN || password.len() > PASSWORD_MAX) {
        return Err("OTA_WIFI_PASSWORD must be empty (open network) or 8 to 63 bytes");
    }
    let u = url.as_bytes();
    if u.len() > URL_MAX {
        return Err("OTA_UPDATE_URL is longer than 256 bytes");
    }
    if !starts_with(u, URL_SCHEME.as_bytes()) {
        return Err("OTA_UPDATE_URL must start with http:// (this build has no TLS)");
    }
    let mut i = 0;
    while i < u.len() {
        if u[i] <= b' ' || u[i] > b'~' {
            return Err("OTA_UPDATE_URL holds a space, a control character or a non-ASCII byte");
        }
        i += 1;
    }
    // HOST
    let mut i = URL_SCHEME.len();
    let host = i;
    while i < u.len() && (u[i].is_ascii_alphanumeric() || u[i] == b'.' || u[i] == b'-') {
        i += 1;
    }
    if i == host {
        return Err("OTA_UPDATE_URL has no host: http://HOST[:PORT]/PATH");
    }
    // [:PORT]
    if i < u.len() && u[i] == b':' {
        i += 1;
        let (digits, mut port) = (i, 0u32);
        while i < u.len() && u[i].is_ascii_digit() {
            port = port * 10 + (u[i] - b'0') as u32;
            if port > u16::MAX as u32 {
                return Err("OTA_UPDATE_URL: the port must be 1 to 65535");
            }
            i += 1;
        }
        if i == digits || port == 0 {
            return Err("OTA_UPDATE_URL: the port must be 1 to 65535");
        }
    }
    // /PATH
    if i == u.len() || u[i] != b'/' {
        return Err(
            "OTA_UPDATE_URL: after the host (letters, digits, '.', '-') and port comes the path: http://HOST[:PORT]/PATH",
        );
    }
    Ok(())
}

const _: () = {
    if let Err(why) = check(WIFI_SSID, WIFI_PASSWORD, UPDATE_URL) {
        panic!("{}", why);
    }
};
