//! Resumable app downloads against the flaky loopback server (`ota-testsrv`): drops, stalls,
//! ignored Range, a file that changes between requests, lying Content-Length, and interrupted
//! runs (a failed run, a power cut) that the next run resumes from the record in flash.
//! Every test counts the bytes fetched again after each resume (goal: at most one 4 KiB chunk).

mod support;

use std::time::Duration;

use ota_core::resume::{LogPlace, ResumeLog};
use ota_emu::FaultPlan;
use ota_service::items::APP_CHUNK as CHUNK;
use ota_service::{Outcome, StartOverWhy};
use ota_testsrv::{Faults, FlakyServer, Stall};
use support::*;

const SIZE: u32 = 300_000;

fn server(file: &[u8], faults: Faults) -> FlakyServer {
    FlakyServer::start(file.to_vec(), faults).expect("loopback server")
}

fn assert_success(report: &ota_service::RunReport, log: &RunLog) {
    assert_eq!(
        report.results[0].1,
        Outcome::Success,
        "log:\n{}",
        log.lines.join("\n")
    );
}

/// Print and check the refetch count of every resume.
fn check_refetch(what: &str, s: &FlakyServer) -> Vec<u64> {
    let r = refetched(&s.requests());
    for (i, n) in r.iter().enumerate() {
        println!("{what}: resume {}: {} bytes downloaded again", i + 1, n);
        assert!(*n <= CHUNK as u64, "{what}: {n} bytes fetched again");
    }
    r
}

fn the_log(dev: &Dev) -> ResumeLog {
    let slot = *dev.table.ota(1).unwrap();
    ResumeLog::locate(&dev.table, &slot).unwrap()
}

#[test]
fn dropped_connections_resume_in_the_same_run_at_the_byte_they_stopped() {
    let img = image("v2.0.0", SIZE);
    let s = server(
        &img,
        Faults {
            drop_at: vec![50_001, 120_000, 299_000],
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 3));
    assert_success(&report, &log);
    assert_eq!(s.resumed_from(), vec![50_001, 120_000, 299_000]);
    assert!(s.requests()[1..]
        .iter()
        .all(|r| r.if_range.as_deref() == Some(format!("\"v1-{}\"", img.len()).as_str())));
    assert_eq!(check_refetch("drops", &s), vec![0, 0, 0]);
    assert!(s.settle(Duration::from_secs(5)));
    assert_eq!(s.body_bytes_sent(), img.len() as u64, "no byte sent twice");
    assert_eq!(boot(&mut dev).1, "v2.0.0");
    assert_eq!(
        the_log(&dev).read(&mut dev.flash).unwrap(),
        None,
        "record cleared"
    );
}

#[test]
fn stall_longer_than_the_read_timeout_is_retried_from_where_it_stalled() {
    let img = image("v2.0.0", SIZE);
    let s = server(
        &img,
        Faults {
            stall: Some(Stall {
                at: 70_000,
                duration: Duration::from_millis(2500),
            }),
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let item = app_item(&s.url("app.bin"), 3);
    let (report, log) = run_items(&mut dev, vec![Box::new(item)], Duration::from_millis(600));
    assert_success(&report, &log);
    assert!(log.has("timed out"), "{}", log.lines.join("\n"));
    let from = s.resumed_from();
    // The client read everything the server sent before the stall (a kernel buffer may hold
    // the last piece back from the server's count, never the other way). A loaded machine may
    // add other timeouts: one resume must start at the stall.
    assert!(
        from.iter()
            .any(|&f| f <= 70_000 && 70_000 - f <= CHUNK as u64),
        "{:?}",
        s.requests()
    );
    assert_eq!(boot(&mut dev).1, "v2.0.0");
}

#[test]
fn server_that_ignores_range_makes_the_download_start_over_cleanly() {
    let img = image("v2.0.0", SIZE);
    let s = server(
        &img,
        Faults {
            drop_at: vec![100_000],
            ignore_range: true,
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 2));
    assert_success(&report, &log);
    let reqs = s.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].range_start, Some(100_000));
    assert_eq!(reqs[1].status, 200);
    assert!(
        log.started_over(StartOverWhy::RangeIgnored),
        "{}",
        log.lines.join("\n")
    );
    assert_eq!(boot(&mut dev).1, "v2.0.0");
}

#[test]
fn file_changed_between_requests_is_downloaded_again_from_zero() {
    let img = image("v2.0.0", SIZE);
    let newer = image("v3.0.0", 250_000);
    let s = server(
        &img,
        Faults {
            drop_at: vec![100_000],
            change: Some((1, newer.clone())),
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 2));
    assert_success(&report, &log);
    let reqs = s.requests();
    assert_eq!(
        reqs[1].if_range.as_deref(),
        Some(format!("\"v1-{}\"", img.len()).as_str())
    );
    assert_eq!(
        reqs[1].status, 200,
        "If-Range did not match: whole new file"
    );
    assert_eq!(boot(&mut dev).1, "v3.0.0", "the new file, never a mix");
}

#[test]
fn range_answer_for_another_file_version_is_caught_by_its_etag() {
    let img = image("v2.0.0", SIZE);
    let newer = image("v3.0.0", SIZE);
    // A broken cache: it honours Range although If-Range names the old version, so the 206
    // holds the new file's bytes, with the new ETag. Splicing them would make a mix.
    let s = server(
        &img,
        Faults {
            drop_at: vec![100_000],
            change: Some((1, newer)),
            ignore_if_range: true,
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 2));
    assert_success(&report, &log);
    let reqs = s.requests();
    assert_eq!(reqs[1].status, 206);
    assert_eq!(reqs[2].range_start, None, "asked again from byte 0");
    assert!(
        log.started_over(StartOverWhy::FileChanged),
        "{}",
        log.lines.join("\n")
    );
    assert_eq!(boot(&mut dev).1, "v3.0.0");
}

#[test]
fn content_length_longer_than_the_body_is_resumed_and_verified() {
    let img = image("v2.0.0", SIZE);
    let s = server(
        &img,
        Faults {
            content_length_delta: 5_000,
            lie_times: 1,
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 2));
    assert_success(&report, &log);
    let reqs = s.requests();
    // The body ended at the real end: asking for the rest gets 416, and the image verifies.
    assert_eq!(reqs[1].range_start, Some(img.len() as u64));
    assert_eq!(reqs[1].status, 416);
    assert_eq!(boot(&mut dev).1, "v2.0.0");
}

#[test]
fn content_length_shorter_than_the_file_is_completed_with_a_range_request() {
    let img = image("v2.0.0", SIZE);
    let s = server(
        &img,
        Faults {
            content_length_delta: -100_000,
            lie_times: 1,
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 2));
    assert_success(&report, &log);
    assert_eq!(s.resumed_from(), vec![img.len() as u64 - 100_000]);
    assert_eq!(check_refetch("short Content-Length", &s), vec![0]);
    assert_eq!(boot(&mut dev).1, "v2.0.0");
}

#[test]
fn content_length_beyond_the_slot_is_refused_before_any_erase() {
    let img = image("v2.0.0", SIZE);
    let s = server(
        &img,
        Faults {
            content_length_delta: 2 << 20,
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let before = dev.flash.contents().to_vec();
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 0));
    match &report.results[0].1 {
        Outcome::Failed { message, .. } => {
            assert!(
                message.contains("does not fit in partition ota_1"),
                "{message}"
            )
        }
        o => panic!("expected a failure, got {o:?}\n{}", log.lines.join("\n")),
    }
    assert!(dev.flash.contents() == &before[..], "device changed");
}

#[test]
fn failed_run_leaves_a_record_that_the_next_run_resumes() {
    let img = image("v2.0.0", SIZE);
    let s = server(
        &img,
        Faults {
            drop_at: vec![100_000],
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    // No retries: the first run fails at the drop.
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 0));
    assert!(matches!(report.results[0].1, Outcome::Failed { .. }));
    assert_eq!(boot(&mut dev).1, "v1.0.0", "the old app still boots");
    let rec = the_log(&dev).read(&mut dev.flash).unwrap().unwrap();
    let cp = 100_000 / CHUNK as u32 * CHUNK as u32;
    assert_eq!(rec.progress, cp);
    assert_eq!(
        log.last_progress, cp as u64,
        "every written chunk is checkpointed"
    );
    // The next run (a new process: a new item, state only in flash).
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 0));
    assert_success(&report, &log);
    assert!(
        log.resumed_from_record() == vec![98304],
        "{}",
        log.lines.join("\n")
    );
    let reqs = s.requests();
    assert_eq!(reqs[1].range_start, Some(cp as u64));
    assert_eq!(reqs[1].status, 206);
    let again = check_refetch("failed run", &s);
    assert_eq!(again, vec![100_000 - cp as u64]);
    assert_eq!(boot(&mut dev).1, "v2.0.0");
    assert_eq!(the_log(&dev).read(&mut dev.flash).unwrap(), None);
}

#[test]
fn power_cut_mid_download_then_the_next_run_resumes_from_flash() {
    let img = image("v2.0.0", SIZE);
    let s = server(&img, Faults::default());
    let mut dev = device(EXAMPLE_CSV);
    // Cut after 150 KB of flash programming/erasing (≈ 75 KB of image: erase + write).
    dev.flash.set_fault_plan(FaultPlan {
        power_cut_after_bytes: Some(150_000),
        ..FaultPlan::default()
    });
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 3));
    assert!(dev.flash.power_cut_happened());
    assert!(matches!(report.results[0].1, Outcome::Failed { .. }));
    dev.flash.power_cycle();
    assert_eq!(boot(&mut dev).1, "v1.0.0");
    let rec = the_log(&dev).read(&mut dev.flash).unwrap().unwrap();
    // The last chunk reported written is the checkpoint: only the chunk in flight at the cut
    // (at most 4 KiB) is fetched again.
    assert_eq!(rec.progress as u64, log.last_progress);
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 3));
    assert_success(&report, &log);
    let from = s.resumed_from();
    assert_eq!(from, vec![rec.progress as u64]);
    println!(
        "power cut: resumed from byte {} of {} = the last chunk written before the cut; only the chunk in flight (at most {} bytes) is downloaded again",
        rec.progress,
        img.len(),
        CHUNK
    );
    assert_eq!(boot(&mut dev).1, "v2.0.0");
}

#[test]
fn resumed_download_of_a_changed_file_starts_over_with_the_new_file() {
    let img = image("v2.0.0", SIZE);
    let newer = image("v3.0.0", SIZE);
    let s = server(
        &img,
        Faults {
            drop_at: vec![150_000],
            change: Some((1, newer)),
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let (report, _) = run_app(&mut dev, app_item(&s.url("app.bin"), 0));
    assert!(matches!(report.results[0].1, Outcome::Failed { .. }));
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 0));
    assert_success(&report, &log);
    let reqs = s.requests();
    assert_eq!(
        reqs[1].if_range.as_deref(),
        Some(format!("\"v1-{}\"", img.len()).as_str())
    );
    assert_eq!(reqs[1].status, 200);
    assert!(
        log.started_over(StartOverWhy::FileChanged),
        "{}",
        log.lines.join("\n")
    );
    assert_eq!(boot(&mut dev).1, "v3.0.0");
}

#[test]
fn without_a_validator_runs_retry_in_place_but_do_not_persist() {
    let img = image("v2.0.0", SIZE);
    let faults = Faults {
        drop_at: vec![60_000, 200_000],
        etag: false,
        last_modified: false,
        ..Faults::default()
    };
    let s = server(&img, faults.clone());
    let mut dev = device(EXAMPLE_CSV);
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 0));
    assert!(matches!(report.results[0].1, Outcome::Failed { .. }));
    assert!(
        log.has("sent no ETag or Last-Modified"),
        "{}",
        log.lines.join("\n")
    );
    assert_eq!(the_log(&dev).read(&mut dev.flash).unwrap(), None);
    // The next run starts from 0 (no Range); its own drop is retried in place.
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 1));
    assert_success(&report, &log);
    let reqs = s.requests();
    assert_eq!(reqs[1].range_start, None);
    assert_eq!(reqs[2].range_start, Some(200_000));
    assert_eq!(reqs[2].if_range, None);
    assert_eq!(boot(&mut dev).1, "v2.0.0");
}

#[test]
fn image_filling_the_slot_resumes_only_with_an_ota_resume_partition() {
    // 1 MB slot: an image that reaches the last sector leaves no room for the log there.
    let img = image("v2.0.0", 0x100000 - 100);
    for (csv, resumes) in [(EXAMPLE_CSV, false), (RESUME_PART_CSV, true)] {
        let s = server(
            &img,
            Faults {
                drop_at: vec![500_000],
                ..Faults::default()
            },
        );
        let mut dev = device(csv);
        let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 0));
        assert!(matches!(report.results[0].1, Outcome::Failed { .. }));
        let slot = *dev.table.ota(1).unwrap();
        let log_place = ResumeLog::locate(&dev.table, &slot).unwrap();
        if resumes {
            assert_eq!(log_place.place(), LogPlace::Partition);
        } else {
            assert!(
                log.has("No resume record for this download"),
                "{}",
                log.lines.join("\n")
            );
        }
        let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 0));
        assert_success(&report, &log);
        let second = &s.requests()[1];
        if resumes {
            assert_eq!(second.range_start, Some(500_000 / 4096 * 4096));
        } else {
            assert_eq!(second.range_start, None);
        }
        assert_eq!(boot(&mut dev).1, "v2.0.0");
    }
}

#[test]
fn exhausted_retries_fail_with_the_network_error_and_keep_the_record() {
    let img = image("v2.0.0", SIZE);
    let s = server(
        &img,
        Faults {
            drop_at: vec![40_000, 80_000, 120_000],
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let before = dev.flash.contents()[OTADATA as usize..OTA_1 as usize].to_vec();
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 2));
    match &report.results[0].1 {
        Outcome::Failed { cause, .. } => assert!(
            matches!(
                cause,
                Some(ota_service::Cause::Source(
                    ota_service::source::SourceError::ShortBody { .. }
                ))
            ),
            "{cause:?}"
        ),
        o => panic!("{o:?}\n{}", log.lines.join("\n")),
    }
    assert!(log.has("retry 2 of 2"));
    assert!(
        dev.flash.contents()[OTADATA as usize..OTA_1 as usize] == before[..],
        "otadata or the running slot changed"
    );
    let rec = the_log(&dev).read(&mut dev.flash).unwrap().unwrap();
    assert_eq!(rec.progress, 120_000 / 4096 * 4096);
}

#[test]
fn drop_inside_the_image_header_is_resumed_too() {
    let img = image("v2.0.0", SIZE);
    let s = server(
        &img,
        Faults {
            drop_at: vec![100],
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let (report, log) = run_app(&mut dev, app_item(&s.url("app.bin"), 1));
    assert_success(&report, &log);
    assert_eq!(s.resumed_from(), vec![100]);
    assert_eq!(check_refetch("drop in the header", &s), vec![0]);
    assert_eq!(boot(&mut dev).1, "v2.0.0");
}

#[test]
fn server_errors_are_retried_with_a_doubling_backoff() {
    let img = image("v2.0.0", SIZE);
    let s = server(
        &img,
        Faults {
            status_first: Some((503, 2)),
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let mut item = app_item(&s.url("app.bin"), 3);
    item.retry.backoff = Duration::from_millis(20);
    let (report, log) = run_app(&mut dev, item);
    assert_success(&report, &log);
    assert!(
        log.has("HTTP 503 Service Unavailable; retry 1 of 3 in 20 ms"),
        "{}",
        log.lines.join("\n")
    );
    assert!(log.has("retry 2 of 3 in 40 ms"), "{}", log.lines.join("\n"));
    assert_eq!(s.requests().len(), 3);
    assert_eq!(boot(&mut dev).1, "v2.0.0");
}

#[test]
fn not_found_is_final_and_not_retried() {
    let img = image("v2.0.0", SIZE);
    let s = server(
        &img,
        Faults {
            status_first: Some((404, 10)),
            ..Faults::default()
        },
    );
    let mut dev = device(EXAMPLE_CSV);
    let before = dev.flash.contents().to_vec();
    let (report, _) = run_app(&mut dev, app_item(&s.url("app.bin"), 3));
    match &report.results[0].1 {
        Outcome::Failed { cause, .. } => assert!(
            matches!(
                cause,
                Some(ota_service::Cause::Source(
                    ota_service::source::SourceError::HttpStatus { status: 404, .. }
                ))
            ),
            "{cause:?}"
        ),
        o => panic!("{o:?}"),
    }
    assert_eq!(s.requests().len(), 1, "a 404 is not retried");
    assert!(dev.flash.contents() == &before[..], "device changed");
}
