//! A recording file: its header, meta and every frame it holds, read until
//! its end or the first damage, which must be an error, not a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::sources::recording::Reader;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut reader) = Reader::new(data) {
        while let Ok(Some(_)) = reader.next_frame() {}
    }
});
