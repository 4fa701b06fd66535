//! The catalogue's JSON contract and the image choice, as server and devices use them.

use ota_catalogue::{
    parse_sha256, pick, Catalogue, CatalogueEntry, EntryKind, PickError, CATALOGUE_FORMAT,
    MAX_CATALOGUE_BYTES,
};
use ota_core::version::VersionPolicy;

fn app(path: &str, chip: &str, project: &str, version: &str) -> CatalogueEntry {
    CatalogueEntry {
        path: path.into(),
        kind: EntryKind::App,
        size: 1000,
        sha256: "00".repeat(32),
        chip: Some(chip.into()),
        project: Some(project.into()),
        version: Some(version.into()),
        secure_version: Some(0),
        idf_ver: None,
        format: None,
        files: None,
        error: None,
        deltas: Vec::new(),
    }
}

fn cat(entries: Vec<CatalogueEntry>) -> Catalogue {
    Catalogue {
        format: CATALOGUE_FORMAT,
        serial: None,
        entries,
    }
}

#[test]
fn catalogue_entries_say_project_name_and_still_read_project() {
    let e = app("/a.bin", "esp32", "blink", "v1.0.0");
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["project_name"], "blink");
    assert!(v.get("project").is_none(), "{v}");
    let mut old = v.clone();
    let name = old.as_object_mut().unwrap().remove("project_name").unwrap();
    old["project"] = name;
    let back: CatalogueEntry = serde_json::from_value(old).unwrap();
    assert_eq!(back, e);
}

#[test]
fn catalogue_json_round_trips_and_refuses_other_formats() {
    let c = cat(vec![app("/a", "esp32", "p", "v1.0.0")]);
    assert_eq!(Catalogue::from_json(&c.to_json()).unwrap(), c);
    let e = Catalogue::from_json(br#"{"format": 2, "entries": []}"#).unwrap_err();
    assert!(e.contains("format 2") && e.contains("expected 1"), "{e}");
    let e = Catalogue::from_json(b"{").unwrap_err();
    assert!(e.contains("line 1"), "{e}");
    let e = Catalogue::from_json(br#"{"format": 1, "entries": [{"path": 3}]}"#).unwrap_err();
    assert!(e.contains("path") || e.contains("string"), "{e}");
}

#[test]
fn catalogue_larger_than_the_bound_is_refused_before_parsing() {
    let mut big = br#"{"format": 1, "entries": []}"#.to_vec();
    big.resize(MAX_CATALOGUE_BYTES + 1, b' ');
    let e = Catalogue::from_json(&big).unwrap_err();
    assert!(e.contains(&MAX_CATALOGUE_BYTES.to_string()), "{e}");
}

#[test]
fn catalogue_written_by_the_server_keeps_every_key_even_null() {
    let mut e = app("/t.bin", "esp32", "p", "v1");
    e.kind = EntryKind::Tone;
    e.chip = None;
    let v = serde_json::to_value(cat(vec![e])).unwrap();
    let entry = &v["entries"][0];
    for key in [
        "path",
        "kind",
        "size",
        "sha256",
        "chip",
        "project_name",
        "version",
        "secure_version",
        "idf_ver",
        "format",
        "files",
        "error",
    ] {
        assert!(entry.get(key).is_some(), "{key} missing in {entry}");
    }
    assert_eq!(entry["kind"], "tone");
    assert!(entry["chip"].is_null());
}

#[test]
fn pick_takes_newest_for_chip_and_project_under_every_policy() {
    let c = cat(vec![
        app("/a", "esp32", "p", "v1.0.0"),
        app("/b", "esp32", "p", "v1.2.0"),
        app("/c", "esp32", "p", "v1.1.9"),
        app("/d", "esp32c3", "p", "v9.0.0"),
        app("/e", "esp32", "q", "v9.0.0"),
    ]);
    for policy in VersionPolicy::ALL {
        assert_eq!(
            pick(&c, "esp32", "p", policy).unwrap().path,
            "/b",
            "{policy}"
        );
    }
    assert_eq!(
        pick(&c, "esp32c3", "p", VersionPolicy::Newer).unwrap().path,
        "/d"
    );
}

#[test]
fn pick_never_offers_an_entry_with_an_error() {
    let mut bad = app("/new", "esp32", "p", "v9.0.0");
    bad.error = Some("checksum mismatch".into());
    let c = cat(vec![bad.clone(), app("/old", "esp32", "p", "v1.0.0")]);
    assert_eq!(
        pick(&c, "esp32", "p", VersionPolicy::Semver).unwrap().path,
        "/old"
    );
    let e = pick(&cat(vec![bad]), "esp32", "p", VersionPolicy::None).unwrap_err();
    assert_eq!(
        e,
        PickError::NoImage {
            chip: "esp32".into(),
            project: "p".into(),
            others: 0,
            corrupt: 1
        }
    );
    assert!(e.to_string().contains("1 corrupt"), "{e}");
}

#[test]
fn pick_skips_git_describe_versions_under_newer() {
    let c = cat(vec![
        app("/x", "esp32", "p", "v2.2-237-g6532b89f"),
        app("/y", "esp32", "p", "v2.2-252-g62edbd26-dirty"),
    ]);
    assert_eq!(
        pick(&c, "esp32", "p", VersionPolicy::Semver).unwrap().path,
        "/y"
    );
    let e = pick(&c, "esp32", "p", VersionPolicy::Newer).unwrap_err();
    assert!(matches!(e, PickError::NoVersion { count: 2, .. }), "{e:?}");
    assert!(e.to_string().contains("version_check = \"newer\""), "{e}");
}

#[test]
fn pick_under_none_ranks_unparsable_versions_lowest_and_ties_by_path() {
    let c = cat(vec![
        app("/z", "esp32", "p", "nightly"),
        app("/a", "esp32", "p", "v0.1"),
    ]);
    assert_eq!(
        pick(&c, "esp32", "p", VersionPolicy::None).unwrap().path,
        "/a"
    );
    let c = cat(vec![
        app("/m", "esp32", "p", "nightly"),
        app("/n", "esp32", "p", "nightly"),
    ]);
    assert_eq!(
        pick(&c, "esp32", "p", VersionPolicy::None).unwrap().path,
        "/n"
    );
    assert!(pick(&c, "esp32", "p", VersionPolicy::Semver).is_err());
}

#[test]
fn sha256_hex_takes_64_hex_digits_only() {
    assert_eq!(parse_sha256(&"ab".repeat(32)), Some([0xab; 32]));
    assert_eq!(parse_sha256(&"AB".repeat(32)), Some([0xab; 32]));
    assert_eq!(parse_sha256("ab"), None);
    assert_eq!(parse_sha256(&"zz".repeat(32)), None);
    // A sign is not a digit, though `u8::from_str_radix` takes one.
    assert_eq!(parse_sha256(&"+a".repeat(32)), None);
    // Multi-byte UTF-8 of the right byte length.
    assert_eq!(parse_sha256(&"é".repeat(32)), None);
}
