//! What the firmware is built with: the Wi-Fi network it joins and the URLs of its upgrade
//! list (the tone bin of the data item, the app image of the app item), compiled in from environment variables at build time (`option_env!`), each with a default.
//! The values are checked while compiling: a bad one stops the build with a message naming
//! the variable. `tests/firmware_c3.rs` includes this file too, to look for the URL in the
//! firmware's `.rodata`. The upgrade list is compiled in rather than fetched as a catalogue:
//! a board needs a URL either way, and two URLs keep the list the ESP-ADF example's.
//!
//! ```text
//! OTA_WIFI_SSID=office OTA_WIFI_PASSWORD=secret \
//!   OTA_UPDATE_URL=http://192.168.1.20:8080/esp32c3-ota.bin \
//!   OTA_TONE_URL=http://192.168.1.20:8080/flash_tone.bin cargo build --release
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

/// `OTA_TONE_URL`: the ESP-ADF tone bin the data item writes into `flash_tone` (same rules as
/// `OTA_UPDATE_URL`). Default: `flash_tone.bin` (the file name of ESP-ADF's example,
/// `CONFIG_DATA_UPGRADE_URI`, esp-adf `examples/system/ota/main/Kconfig.projbuild`) from the
/// same server as the app.
pub const TONE_URL: &str = env_or(
    option_env!("OTA_TONE_URL"),
    "http://192.168.0.3:8080/flash_tone.bin",
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

/// What is wrong with a URL (see [`check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlFault {
    TooLong,
    NotHttp,
    BadByte,
    NoHost,
    BadPort,
    NoPath,
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
    match url_fault(url) {
        None => Ok(()),
        Some(UrlFault::TooLong) => Err("OTA_UPDATE_URL is longer than 256 bytes"),
        Some(UrlFault::NotHttp) => {
            Err("OTA_UPDATE_URL must start with http:// (this build has no TLS)")
        }
        Some(UrlFault::BadByte) => {
            Err("OTA_UPDATE_URL holds a space, a control character or a non-ASCII byte")
        }
        Some(UrlFault::NoHost) => Err("OTA_UPDATE_URL has no host: http://HOST[:PORT]/PATH"),
        Some(UrlFault::BadPort) => Err("OTA_UPDATE_URL: the port must be 1 to 65535"),
        Some(UrlFault::NoPath) => Err(
            "OTA_UPDATE_URL: after the host (letters, digits, '.', '-') and port comes the path: http://HOST[:PORT]/PATH",
        ),
    }
}

/// [`check`]'s URL rules for `OTA_TONE_URL`.
pub const fn check_tone_url(url: &str) -> Result<(), &'static str> {
    match url_fault(url) {
        None => Ok(()),
        Some(UrlFault::TooLong) => Err("OTA_TONE_URL is longer than 256 bytes"),
        Some(UrlFault::NotHttp) => Err("OTA_TONE_URL must start with http:// (this build has no TLS)"),
        Some(UrlFault::BadByte) => {
            Err("OTA_TONE_URL holds a space, a control character or a non-ASCII byte")
        }
        Some(UrlFault::NoHost) => Err("OTA_TONE_URL has no host: http://HOST[:PORT]/PATH"),
        Some(UrlFault::BadPort) => Err("OTA_TONE_URL: the port must be 1 to 65535"),
        Some(UrlFault::NoPath) => Err(
            "OTA_TONE_URL: after the host (letters, digits, '.', '-') and port comes the path: http://HOST[:PORT]/PATH",
        ),
    }
}

/// The first rule `url` breaks, or `None`.
pub const fn url_fault(url: &str) -> Option<UrlFault> {
    let u = url.as_bytes();
    if u.len() > URL_MAX {
        return Some(UrlFault::TooLong);
    }
    if !starts_with(u, URL_SCHEME.as_bytes()) {
        return Some(UrlFault::NotHttp);
    }
    let mut i = 0;
    while i < u.len() {
        if u[i] <= b' ' || u[i] > b'~' {
            return Some(UrlFault::BadByte);
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
        return Some(UrlFault::NoHost);
    }
    // [:PORT]
    if i < u.len() && u[i] == b':' {
        i += 1;
        let (digits, mut port) = (i, 0u32);
        while i < u.len() && u[i].is_ascii_digit() {
            port = port * 10 + (u[i] - b'0') as u32;
            if port > u16::MAX as u32 {
                return Some(UrlFault::BadPort);
            }
            i += 1;
        }
        if i == digits || port == 0 {
            return Some(UrlFault::BadPort);
        }
    }
    // /PATH
    if i == u.len() || u[i] != b'/' {
        return Some(UrlFault::NoPath);
    }
    None
}

const _: () = {
    if let Err(why) = check(WIFI_SSID, WIFI_PASSWORD, UPDATE_URL) {
        panic!("{}", why);
    }
};

const _: () = {
    if let Err(why) = check_tone_url(TONE_URL) {
        panic!("{}", why);
    }
};
