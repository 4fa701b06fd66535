//! The TOML configuration of `ota device run`: no panic on any text, and every error names a
//! place inside the text (line and column within it) or none.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ota_service::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_str_named(text, "fuzz.toml", Path::new("/nonexistent-fuzz-base")) {
        Ok(c) => assert!(!c.upgrade.is_empty()),
        Err(e) => {
            if let Some((line, col)) = e.position {
                assert!(line >= 1 && col >= 1);
                assert!(
                    line <= text.lines().count().max(1) + 1,
                    "line {line} beyond the text"
                );
            }
            assert!(!e.message.is_empty());
            let _ = e.to_string();
        }
    }
});
