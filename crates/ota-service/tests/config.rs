//! The `ota device run` TOML config: shortcut keys, explicit lists, defaults, and errors that
//! point at the right line.

use std::path::{Path, PathBuf};

use ota_core::version::VersionPolicy;
use ota_service::config::{example, Config, ConfigError, DataFormat, ItemKind, UpgradeSpec};
use ota_service::source::RetryPolicy;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str_named(text, "ota.toml", Path::new("/nonexistent-base"))
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn shortcut_keys_build_the_example_list_data_then_app() {
    let c = parse(
        r#"
firmware_upgrade_uri = "http://127.0.0.1:8080/play_mp3_control.bin"
data_upgrade_uri = "file://sdcard/flash_tone.bin"
data_partition_label = "flash_tone"
force_check_firmware_version = false
"#,
    )
    .unwrap();
    assert_eq!(c, example("127.0.0.1:8080"));
    assert_eq!(c.upgrade.len(), 2);
    let data = &c.upgrade[0];
    assert_eq!(data.kind, ItemKind::Data);
    assert_eq!(data.uri, "file://sdcard/flash_tone.bin");
    assert_eq!(data.label.as_deref(), Some("flash_tone"));
    assert_eq!(data.format, DataFormat::Tone);
    assert!(!data.reboot && !data.break_after_fail);
    let app = &c.upgrade[1];
    assert_eq!(app.kind, ItemKind::App);
    assert_eq!(app.version_check, VersionPolicy::None);
    assert!(app.reboot);
}

#[test]
fn shortcut_force_check_selects_newer_policy() {
    let c =
        parse("firmware_upgrade_uri = \"http://h/a.bin\"\nforce_check_firmware_version = true\n")
            .unwrap();
    assert_eq!(c.upgrade.len(), 1);
    assert_eq!(c.upgrade[0].kind, ItemKind::App);
    assert_eq!(c.upgrade[0].version_check, VersionPolicy::Newer);
}

#[test]
fn shortcut_data_only_defaults_label_to_flash_tone() {
    let c = parse("data_upgrade_uri = \"file:///sdcard/t.bin\"\n").unwrap();
    assert_eq!(c.upgrade.len(), 1);
    assert_eq!(c.upgrade[0].label.as_deref(), Some("flash_tone"));
    assert_eq!(c.upgrade[0].format, DataFormat::Tone);
}

#[test]
fn explicit_list_keeps_order_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
    let text = r#"
[[upgrade]]
type = "data"
uri = "file://sdcard/flash_tone.bin"
label = "flash_tone"
format = "tone"
version_check = "semver"
reboot = false
break_after_fail = true

[[upgrade]]
type = "app"
uri = "https://127.0.0.1:8443/app.bin"
version_check = "newer"
reboot = false
cert = "ca.pem"
"#;
    let c = Config::from_str(text, dir.path()).unwrap();
    assert_eq!(
        c.upgrade,
        vec![
            UpgradeSpec {
                kind: ItemKind::Data,
                uri: "file://sdcard/flash_tone.bin".into(),
                label: Some("flash_tone".into()),
                format: DataFormat::Tone,
                version_check: VersionPolicy::Semver,
                reboot: false,
                break_after_fail: true,
                cert: None,
                retry: RetryPolicy::default(),
                resume: true,
                staging: None,
                project: None,
                limits: ota_service::source::TransferLimits::default(),
                ddi: None,
                catalogue: None,
            },
            UpgradeSpec {
                kind: ItemKind::App,
                uri: "https://127.0.0.1:8443/app.bin".into(),
                label: None,
                format: DataFormat::Raw,
                version_check: VersionPolicy::Newer,
                reboot: false,
                break_after_fail: false,
                cert: Some(dir.path().join("ca.pem")),
                retry: RetryPolicy::default(),
                resume: true,
                staging: None,
                project: None,
                limits: ota_service::source::TransferLimits::default(),
                ddi: None,
                catalogue: None,
            },
        ]
    );
}

#[test]
fn explicit_defaults_reboot_app_only_raw_format_no_version_check() {
    let c = parse(
        r#"
[[upgrade]]
type = "data"
uri = "http://h/d.bin"
label = "storage"

[[upgrade]]
type = "app"
uri = "http://h/a.bin"
"#,
    )
    .unwrap();
    let (d, a) = (&c.upgrade[0], &c.upgrade[1]);
    assert_eq!(d.format, DataFormat::Raw);
    assert_eq!(d.version_check, VersionPolicy::None);
    assert!(!d.reboot && !d.break_after_fail && d.cert.is_none());
    assert_eq!(a.format, DataFormat::Raw);
    assert_eq!(a.version_check, VersionPolicy::None);
    assert!(a.reboot && !a.break_after_fail);
}

#[test]
fn shortcut_items_come_before_explicit_items() {
    let c = parse(
        r#"
firmware_upgrade_uri = "http://h/fw.bin"

[[upgrade]]
type = "data"
uri = "file://sdcard/extra.bin"
label = "extra"
"#,
    )
    .unwrap();
    let uris: Vec<&str> = c.upgrade.iter().map(|u| u.uri.as_str()).collect();
    assert_eq!(uris, ["http://h/fw.bin", "file://sdcard/extra.bin"]);
}

#[test]
fn load_resolves_cert_relative_to_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/ca.pem"), "x").unwrap();
    let path = dir.path().join("ota.toml");
    std::fs::write(
        &path,
        "[[upgrade]]\ntype = \"app\"\nuri = \"https://h/a.bin\"\ncert = \"certs/ca.pem\"\n",
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.upgrade[0].cert, Some(dir.path().join("certs/ca.pem")));
}

#[test]
fn load_missing_file_names_the_file() {
    let e = Config::load(Path::new("/nonexistent/ota.toml")).unwrap_err();
    assert!(e.io.is_some());
    assert!(e.to_string().starts_with("/nonexistent/ota.toml: "), "{e}");
}

#[test]
fn unknown_key_names_line_and_column_and_allowed_keys() {
    let e = err(r#"firmware_upgrade_uri = "http://h/a.bin"

[[upgrade]]
type = "data"
uri = "file://sdcard/t.bin"
# a comment
lable = "flash_tone"
"#);
    assert_eq!(e.position, Some((7, 1)), "{e}");
    let s = e.to_string();
    assert!(
        s.starts_with("ota.toml:7:1: unknown field `lable`, expected one of"),
        "{s}"
    );
    assert!(s.contains("`label`"), "{s}");
}

#[test]
fn unknown_top_level_key_is_rejected() {
    let e = err("firmware_upgrade_url = \"http://h/a.bin\"\n");
    assert_eq!(e.line(), Some(1));
    assert!(e.message.contains("firmware_upgrade_url"), "{e}");
}

#[test]
fn wrong_type_names_the_line() {
    let e =
        err("firmware_upgrade_uri = \"http://h/a.bin\"\nforce_check_firmware_version = \"yes\"\n");
    assert_eq!(e.line(), Some(2), "{e}");
    assert!(e.message.contains("invalid type"), "{e}");
}

#[test]
fn bad_enum_value_lists_allowed_values() {
    let e =
        err("[[upgrade]]\ntype = \"app\"\nuri = \"http://h/a.bin\"\nversion_check = \"newest\"\n");
    assert_eq!(e.line(), Some(4), "{e}");
    for v in ["none", "newer", "semver"] {
        assert!(e.message.contains(v), "{e}");
    }
    let e = err("[[upgrade]]\ntype = \"bootloader\"\nuri = \"http://h/a.bin\"\n");
    assert_eq!(e.line(), Some(2), "{e}");
    assert!(
        e.message.contains("`app`") && e.message.contains("`data`"),
        "{e}"
    );
    let e = err(
        "[[upgrade]]\ntype = \"data\"\nuri = \"http://h/a.bin\"\nlabel = \"x\"\nformat = \"wav\"\n",
    );
    assert_eq!(e.line(), Some(5), "{e}");
    assert!(
        e.message.contains("`raw`") && e.message.contains("`tone`"),
        "{e}"
    );
}

#[test]
fn data_item_without_label_is_rejected_at_its_table() {
    let e = err("firmware_upgrade_uri = \"http://h/a.bin\"\n\n[[upgrade]]\ntype = \"data\"\nuri = \"http://h/d.bin\"\n");
    assert_eq!(e.position, Some((3, 1)), "{e}");
    assert!(e.message.contains("label"), "{e}");
}

#[test]
fn app_item_with_label_or_format_is_rejected() {
    let e = err("[[upgrade]]\ntype = \"app\"\nuri = \"http://h/a.bin\"\nlabel = \"ota_0\"\n");
    assert_eq!(e.position, Some((4, 9)), "{e}");
    assert!(e.message.contains("`label` is for data items"), "{e}");
    let e = err("[[upgrade]]\ntype = \"app\"\nuri = \"http://h/a.bin\"\nformat = \"raw\"\n");
    assert_eq!(e.line(), Some(4), "{e}");
    assert!(e.message.contains("`format` is for data items"), "{e}");
}

#[test]
fn raw_data_item_with_version_check_is_rejected() {
    let e = err("[[upgrade]]\ntype = \"data\"\nuri = \"http://h/a.bin\"\nlabel = \"x\"\nversion_check = \"newer\"\n");
    assert_eq!(e.line(), Some(5), "{e}");
}

#[test]
fn empty_config_has_no_items() {
    for text in ["", "# nothing\n", "force_check_firmware_version = true\n"] {
        let e = err(text);
        assert_eq!(e.position, None);
        assert_eq!(
            e.to_string(),
            "ota.toml: no upgrade items: set firmware_upgrade_uri/data_upgrade_uri or add [[upgrade]] tables"
        );
    }
}

#[test]
fn missing_cert_file_names_its_line() {
    let e = err("[[upgrade]]\ntype = \"app\"\nuri = \"https://h/a.bin\"\ncert = \"nope.pem\"\n");
    assert_eq!(e.position, Some((4, 8)), "{e}");
    assert!(e.message.contains("cert file not found"), "{e}");
    assert!(e.message.contains("nonexistent-base"), "{e}");
}

#[test]
fn unsupported_uri_scheme_is_rejected_with_its_line() {
    let e = err("firmware_upgrade_uri = \"ftp://h/a.bin\"\n");
    assert_eq!(e.position, Some((1, 24)), "{e}");
    let e = err("[[upgrade]]\ntype = \"app\"\nuri = \"foo http://h/a.bin\"\n");
    assert_eq!(e.line(), Some(3), "{e}");
}

#[test]
fn missing_required_key_is_reported() {
    let e = err("[[upgrade]]\ntype = \"app\"\n");
    assert_eq!(e.line(), Some(1), "{e}");
    assert!(e.message.contains("missing field `uri`"), "{e}");
}

#[test]
fn syntax_error_names_the_line() {
    let e = err("firmware_upgrade_uri = \"http://h/a.bin\"\ndata_upgrade_uri = \n");
    assert_eq!(e.line(), Some(2), "{e}");
}

#[test]
fn example_uses_given_host_port() {
    let c = example("10.0.0.2:9000");
    assert_eq!(
        c.upgrade[1].uri,
        "http://10.0.0.2:9000/play_mp3_control.bin"
    );
    assert_eq!(c.upgrade[0].uri, "file://sdcard/flash_tone.bin");
    let _: Vec<PathBuf> = c.upgrade.iter().filter_map(|u| u.cert.clone()).collect();
}

#[test]
fn retries_and_resume_keys_set_app_items_with_top_level_defaults() {
    let c = parse(
        r#"
firmware_upgrade_uri = "http://h/a.bin"
retries = 5
retry_backoff_ms = 40

[[upgrade]]
type = "app"
uri = "http://h/b.bin"
retries = 0
resume = false
"#,
    )
    .unwrap();
    assert_eq!(c.upgrade[0].retry.retries, 5);
    assert_eq!(
        c.upgrade[0].retry.backoff,
        std::time::Duration::from_millis(40)
    );
    assert!(c.upgrade[0].resume);
    assert_eq!(c.upgrade[1].retry.retries, 0);
    assert_eq!(
        c.upgrade[1].retry.backoff,
        std::time::Duration::from_millis(40)
    );
    assert!(!c.upgrade[1].resume);
}

#[test]
fn retries_are_bounded_and_resume_is_for_app_items_of_every_kind() {
    let e = err("firmware_upgrade_uri = \"http://h/a.bin\"\nretries = 1000\n");
    assert_eq!(e.line(), Some(2), "{e}");
    assert!(e.message.contains("retries must be at most 100"), "{e}");
    let e = err("firmware_upgrade_uri = \"http://h/a.bin\"\nretry_backoff_ms = 600000\n");
    assert!(e.message.contains("at most 60000"), "{e}");
    let c = ota_service::config::Config::from_str(
        "[[upgrade]]\ntype = \"data\"\nlabel = \"x\"\nuri = \"http://h/a.bin\"\nretries = 2\n",
        std::path::Path::new("."),
    )
    .unwrap();
    assert_eq!(c.upgrade[0].retry.retries, 2, "data items retry too");
    let e = err(
        "[[upgrade]]\ntype = \"data\"\nlabel = \"x\"\nuri = \"http://h/a.bin\"\nresume = true\n",
    );
    assert_eq!(e.line(), Some(5), "{e}");
    assert!(e.message.contains("`resume` is for app items"), "{e}");
    // Catalogue and DDI items resume too; `resume = false` turns it off, and the top-level
    // default reaches them.
    let c = parse(
        "[[upgrade]]\ntype = \"app\"\nuri = \"http://h/manifest.json\"\nproject = \"p\"\nresume = false\n",
    )
    .unwrap();
    assert!(!c.upgrade[0].resume);
    let c = parse(
        "resume = false\n[[upgrade]]\ntype = \"app\"\nuri = \"http://h/manifest.json\"\nproject = \"p\"\n",
    )
    .unwrap();
    assert!(!c.upgrade[0].resume);
    let c =
        parse("[[upgrade]]\ntype = \"app\"\nuri = \"http://h/manifest.json\"\nproject = \"p\"\n")
            .unwrap();
    assert!(c.upgrade[0].resume);
    let c = parse(
        "[[upgrade]]\ntype = \"ddi\"\nuri = \"http://h:8080\"\ntenant = \"DEFAULT\"\ncontroller_id = \"d\"\nresume = false\n",
    )
    .unwrap();
    assert!(!c.upgrade[0].resume);
}

#[test]
fn control_character_in_a_comment_is_named() {
    // Found by the `config` fuzz target: toml gives an empty message for this.
    let e = err("#\u{1}\0\0\u{1}rrtrt");
    assert_eq!(e.position, Some((1, 2)), "{e}");
    assert!(e.message.contains("U+0001"), "{e}");
}

#[test]
fn staging_names_a_spare_partition_for_data_items_only() {
    let c = parse(
        "[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/t.bin\"\nlabel = \"flash_tone\"\n\
         staging = \"tone_stage\"\n",
    )
    .unwrap();
    assert_eq!(c.upgrade[0].staging.as_deref(), Some("tone_stage"));
    let e =
        err("[[upgrade]]\ntype = \"app\"\nuri = \"file://sdcard/a.bin\"\nstaging = \"spare\"\n");
    assert_eq!(e.line(), Some(4), "{e}");
    assert!(e.to_string().contains("`staging` is for data items"), "{e}");
    let e = err(
        "[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/t.bin\"\nlabel = \"flash_tone\"\n\
         staging = \"flash_tone\"\n",
    );
    assert_eq!(e.line(), Some(5), "{e}");
    assert!(e.to_string().contains("must differ from the target"), "{e}");
    let e = err(
        "[[upgrade]]\ntype = \"data\"\nuri = \"file://sdcard/t.bin\"\nlabel = \"x\"\nstaging = \" \"\n",
    );
    assert!(e.to_string().contains("staging must not be empty"), "{e}");
}

#[test]
fn ddi_item_reads_tenant_id_token_and_poll_bounds() {
    use ota_service::config::{DdiToken, MAX_DDI_POLLS};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "abc123\n").unwrap();
    let text = r#"
[[upgrade]]
type = "ddi"
uri = "http://127.0.0.1:8080"
tenant = "DEFAULT"
controller_id = "dev-1"
token_file = "token"
polls = 3
max_sleep_ms = 2000
"#;
    let c = Config::from_str(text, dir.path()).unwrap();
    let spec = &c.upgrade[0];
    assert_eq!(spec.kind, ItemKind::Ddi);
    assert!(spec.reboot);
    let ddi = spec.ddi.as_ref().unwrap();
    assert_eq!(ddi.tenant, "DEFAULT");
    assert_eq!(ddi.controller_id, "dev-1");
    assert_eq!(ddi.token, DdiToken::Target(dir.path().join("token")));
    assert_eq!(ddi.polls, 3);
    assert_eq!(ddi.max_sleep, std::time::Duration::from_millis(2000));
    assert_eq!(
        ota_service::config::read_token_file(&dir.path().join("token")).unwrap(),
        "abc123"
    );

    let bad = |body: &str, needle: &str| {
        let e = Config::from_str(body, dir.path()).unwrap_err();
        assert!(e.to_string().contains(needle), "{e} lacks {needle}");
        assert!(e.line().is_some(), "{e} has no line");
    };
    let head = "[[upgrade]]\ntype = \"ddi\"\nuri = \"http://127.0.0.1:1\"\n";
    bad(
        &format!("{head}controller_id = \"d\"\n"),
        "without `tenant`",
    );
    bad(
        &format!("{head}tenant = \"T\"\n"),
        "without `controller_id`",
    );
    bad(
        &format!("{head}tenant = \"a/b\"\ncontroller_id = \"d\"\n"),
        "not allowed",
    );
    bad(
        &format!("{head}tenant = \"T\"\ncontroller_id = \"d\"\ntoken_file = \"nope\"\n"),
        "token file not found",
    );
    bad(
        &format!(
            "{head}tenant = \"T\"\ncontroller_id = \"d\"\npolls = {}\n",
            MAX_DDI_POLLS + 1
        ),
        "polls must be",
    );
    bad(
        "[[upgrade]]\ntype = \"ddi\"\nuri = \"file://sdcard/x\"\ntenant = \"T\"\ncontroller_id = \"d\"\n",
        "http:// or https://",
    );
    bad(
        "[[upgrade]]\ntype = \"app\"\nuri = \"http://h/a.bin\"\ntenant = \"T\"\n",
        "for DDI items",
    );
    std::fs::write(dir.path().join("two"), "a b").unwrap();
    assert!(
        ota_service::config::read_token_file(&dir.path().join("two"))
            .unwrap_err()
            .contains("not printable")
    );
}

#[test]
fn catalogue_key_is_found_beside_the_config_and_data_items_name_their_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cat.pub.pem"), "not checked here").unwrap();
    let text = r#"
catalogue_key = "cat.pub.pem"

[[upgrade]]
type = "data"
uri = "http://127.0.0.1:8080/flash_tone.bin"
label = "flash_tone"
format = "tone"
catalogue = "http://127.0.0.1:8080/manifest.json"

[[upgrade]]
type = "app"
uri = "http://127.0.0.1:8080/manifest.json"
project = "app"
"#;
    let c = Config::from_str_named(text, "ota.toml", dir.path()).unwrap();
    assert_eq!(c.catalogue_key, Some(dir.path().join("cat.pub.pem")));
    assert_eq!(c.catalogue_serial, None);
    assert_eq!(
        c.upgrade[0].catalogue.as_deref(),
        Some("http://127.0.0.1:8080/manifest.json")
    );
    assert!(c.check_catalogue_items().is_ok());
}

#[test]
fn catalogue_key_errors_name_the_place_and_the_unauthenticated_item() {
    let e = err("catalogue_key = \"nope.pem\"\nfirmware_upgrade_uri = \"http://h/x.bin\"\n");
    assert_eq!(e.line(), Some(1));
    assert!(e.message.contains("catalogue_key file not found"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.pem"), "x").unwrap();
    let text = "catalogue_key = \"k.pem\"\n[[upgrade]]\ntype = \"data\"\nuri = \"http://h/t.bin\"\nlabel = \"flash_tone\"\n";
    let e = Config::from_str_named(text, "ota.toml", dir.path()).unwrap_err();
    assert_eq!(e.line(), Some(1));
    assert!(
        e.message
            .contains("item 0 (http://h/t.bin) is not authenticated"),
        "{e}"
    );
    assert!(e.message.contains("`catalogue = "), "{e}");

    // `catalogue` is for data items, and must be a URI the device can fetch.
    let e = err("[[upgrade]]\ntype = \"app\"\nuri = \"http://h/a.bin\"\ncatalogue = \"http://h/manifest.json\"\n");
    assert_eq!(e.line(), Some(4));
    let e = err("[[upgrade]]\ntype = \"data\"\nuri = \"http://h/t.bin\"\nlabel = \"t\"\ncatalogue = \"ftp://h/manifest.json\"\n");
    assert_eq!(e.line(), Some(5));
    assert!(e.message.contains("unsupported uri"), "{e}");
}
