//! Delta patches from the fuzzer: the applier over a fixed base, fed in chunks whose sizes
//! the input chooses, never panics, never produces more than the declared output, never reads
//! the base outside it; every checkpoint it offers restores to an equal applier, and a patch
//! that completes produces exactly `to_size` bytes. The esp_delta_ota header parser and the
//! checkpoint record parser get the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::delta::{
    ApplyError, Checkpoint, DeltaApplier, DeltaBase, EspDeltaHeader, PatchHeader, CHECKPOINT_LEN,
    ESP_DELTA_HEADER_LEN,
};

/// A base that checks every read is inside it.
struct Base(Vec<u8>);

impl DeltaBase for Base {
    type Error = ();
    fn len(&self) -> u32 {
        self.0.len() as u32
    }
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), ()> {
        let end = offset as usize + buf.len();
        assert!(end <= self.0.len(), "read {offset}+{} outside the base", buf.len());
        buf.copy_from_slice(&self.0[offset as usize..end]);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (ctl, patch) = (data[0], &data[1..]);
    let _ = PatchHeader::parse(patch);
    if let Some(h) = patch.get(..ESP_DELTA_HEADER_LEN) {
        let _ = EspDeltaHeader::parse(h.try_into().unwrap());
    }
    if let Some(r) = patch.get(..CHECKPOINT_LEN) {
        if let Ok(cp) = Checkpoint::from_bytes(r) {
            let _ = DeltaApplier::resume(&cp, 4096);
        }
    }
    let mut base = Base((0..4096u32).map(|i| (i * 31 % 251) as u8).collect());
    let mut a = DeltaApplier::new(base.len());
    let mut out = 0u64;
    let chunk = 1 + (ctl as usize % 64);
    for piece in patch.chunks(chunk) {
        let r = a.feed(&mut base, piece, &mut |b: &[u8]| {
            out += b.len() as u64;
            Ok::<(), ()>(())
        });
        if let Some(to) = a.to_size() {
            assert!(out <= to as u64);
        }
        if let Some(cp) = a.checkpoint() {
            let back = Checkpoint::from_bytes(&cp.to_bytes()).unwrap();
            assert_eq!(DeltaApplier::resume(&back, base.len()).unwrap(), a);
        }
        match r {
            Ok(()) => {}
            Err(ApplyError::Patch(_)) => return,
            Err(e) => panic!("{e:?}"),
        }
    }
    if let Ok(n) = a.finish() {
        assert_eq!(n as u64, out);
    }
});
