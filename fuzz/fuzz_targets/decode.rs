//! A ring-buffer record, as a kernel program (or a damaged recording)
//! might write it: decoded or rejected with a reason, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = monitor::sources::decode::decode(data);
});
