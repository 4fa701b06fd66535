//! The config of catalogue items: an app item with `project` reads its `uri` as a catalogue.

use std::path::Path;

use ota_service::config::{Config, ItemKind};

fn parse(text: &str) -> Result<Config, String> {
    Config::from_str_named(text, "ota.toml", Path::new("/nonexistent-base"))
        .map_err(|e| e.to_string())
}

#[test]
fn app_item_with_project_is_a_catalogue_item() {
    let c = parse(
        r#"
[[upgrade]]
type = "app"
uri = "http://127.0.0.1:8080/manifest.json"
project = "play_mp3_control"
version_check = "semver"
"#,
    )
    .unwrap();
    let item = &c.upgrade[0];
    assert_eq!(item.kind, ItemKind::App);
    assert_eq!(item.project.as_deref(), Some("play_mp3_control"));
    assert!(item.reboot);
    let items = ota_service::items::from_config::<dummy_flash::Dummy>(&c).unwrap();
    assert_eq!(
        items[0].describe(),
        "http://127.0.0.1:8080/manifest.json (project play_mp3_control)"
    );
}

#[test]
fn catalogue_uri_without_project_is_refused_at_the_uri() {
    let e = parse("[[upgrade]]\ntype = \"app\"\nuri = \"http://h/manifest.json\"\n").unwrap_err();
    assert!(e.starts_with("ota.toml:3:7:"), "{e}");
    assert!(e.contains("add `project"), "{e}");
}

#[test]
fn project_on_a_data_item_or_empty_is_refused() {
    let e = parse(
        "[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/x\"\nlabel = \"flash_tone\"\nproject = \"p\"\n",
    )
    .unwrap_err();
    assert!(e.starts_with("ota.toml:5:"), "{e}");
    assert!(e.contains("`project` is for app items"), "{e}");
    let e = parse("[[upgrade]]\ntype = \"app\"\nuri = \"http://h/m.json\"\nproject = \" \"\n")
        .unwrap_err();
    assert!(e.contains("project must not be empty"), "{e}");
}

/// A flash type for instantiating items (never touched by these tests).
mod dummy_flash {
    use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
    pub struct Dummy;
    impl ErrorType for Dummy {
        type Error = NorFlashErrorKind;
    }
    impl ReadNorFlash for Dummy {
        const READ_SIZE: usize = 1;
        fn read(&mut self, _: u32, _: &mut [u8]) -> Result<(), Self::Error> {
            Err(NorFlashErrorKind::Other)
        }
        fn capacity(&self) -> usize {
            0
        }
    }
    impl NorFlash for Dummy {
        const WRITE_SIZE: usize = 1;
        const ERASE_SIZE: usize = 4096;
        fn erase(&mut self, _: u32, _: u32) -> Result<(), Self::Error> {
            Err(NorFlashErrorKind::Other)
        }
        fn write(&mut self, _: u32, _: &[u8]) -> Result<(), Self::Error> {
            Err(NorFlashErrorKind::Other)
        }
    }
}
