//! The module layering of ota-core, read from its sources: the flash layer depends on no
//! engine, and the staged copy and the update engines do not import each other both ways
//! (the sequential writer and the header-last write they share live in `flash/`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The top-level `crate::x` modules that the non-test code of `files` imports with `use`.
fn imports(files: &[PathBuf]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // Unit tests at the end of a file may use anything.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for line in code.lines() {
            let line = line.trim_start();
            let Some(rest) = line.strip_prefix("use crate::") else {
                continue;
            };
            let module: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(module);
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `name.rs` or every non-test `.rs` file of the folder `name/`.
fn module_files(name: &str) -> Vec<PathBuf> {
    let file = src().join(format!("{name}.rs"));
    let dir = src().join(name);
    let mut files = Vec::new();
    if file.is_file() {
        files.push(file);
    }
    if dir.is_dir() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rs") && p.file_stem().unwrap() != "tests" {
                files.push(p);
            }
        }
    }
    assert!(!files.is_empty(), "module {name} has no source file");
    files
}

#[test]
fn staging_does_not_import_the_update_engines() {
    let used = imports(&module_files("staging"));
    assert!(
        !used.contains("update"),
        "staging.rs imports crate::update ({used:?}): the shared writer belongs to crate::flash"
    );
}

#[test]
fn update_engines_do_not_import_staging() {
    let used = imports(&module_files("update"));
    assert!(
        !used.contains("staging"),
        "update/ imports crate::staging ({used:?})"
    );
}

#[test]
fn flash_layer_depends_on_no_engine_or_format() {
    let used = imports(&module_files("flash"));
    for upper in [
        "update",
        "staging",
        "tone",
        "image",
        "partition",
        "otadata",
        "updater",
        "boot",
        "resume",
    ] {
        assert!(
            !used.contains(upper),
            "flash/ imports crate::{upper} ({used:?}): the flash layer is the bottom layer"
        );
    }
}

#[test]
fn sequential_writer_is_part_of_the_flash_layer() {
    use ota_core::flash::{FlashErrorKind, Region, SequentialWriter};
    let mut mem = vec![0xFFu8; 0x4000];
    let mut w = SequentialWriter::new(Region::new(0x1000, 0x2000));
    let mut flash = ota_core::mem_flash::MemFlash::<4, 4>::new(&mut mem);
    w.write(&mut flash, &[1, 2, 3, 4, 5]).unwrap();
    assert_eq!((w.written(), w.flushed()), (5, 4));
    // Past its region: refused, nothing written.
    let e = w.write(&mut flash, &[0; 0x2000]).unwrap_err();
    assert!(
        matches!(
            e.kind,
            FlashErrorKind::OutsideRegion {
                start: 0x1000,
                size: 0x2000
            }
        ),
        "{e:?}"
    );
    w.flush(&mut flash).unwrap();
    // After the padded last word: refused as such.
    let e = w.write(&mut flash, &[6]).unwrap_err();
    assert_eq!(e.kind, FlashErrorKind::AfterFlush);
    assert_eq!(
        &mem[0x1000..0x1009],
        &[1, 2, 3, 4, 5, 0xFF, 0xFF, 0xFF, 0xFF]
    );
}

/// Every `.rs` and `.md` file of the workspace (the firmware example, fuzz targets and the
/// README included), as text, without build output.
fn workspace_texts() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    dirs.push(p);
                }
            } else if name.ends_with(".rs") || name.ends_with(".md") {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    out.push((p, t));
                }
            }
        }
    }
    out
}

/// `name` occurs as a whole word in `text` other than in `fn name`.
fn used(text: &str, name: &str) -> bool {
    let mut from = 0;
    while let Some(i) = text[from..].find(name) {
        let at = from + i;
        let end = at + name.len();
        let word = |c: char| c.is_alphanumeric() || c == '_';
        let before = text[..at].chars().next_back();
        let after = text[end..].chars().next();
        if !before.is_some_and(word) && !after.is_some_and(word) && !text[..at].ends_with("fn ") {
            return true;
        }
        from = end;
    }
    false
}

#[test]
fn every_public_function_of_ota_core_has_a_caller_or_a_mention() {
    let texts = workspace_texts();
    let mut unused = Vec::new();
    for (path, text) in &texts {
        if !path.to_string_lossy().contains("ota-core/src") {
            continue;
        }
        for line in text.lines() {
            let t = line.trim_start();
            let Some(rest) = t
                .strip_prefix("pub fn ")
                .or_else(|| t.strip_prefix("pub const fn "))
            else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !texts.iter().any(|(_, other)| used(other, &name)) {
                unused.push(format!("{}: {name}", path.display()));
            }
        }
    }
    assert!(
        unused.is_empty(),
        "public functions nothing calls or documents: {unused:#?}"
    );
}
