//! A web config file (exporter-toolkit YAML), with whatever it names
//! missing from disk.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use monitor::web::config::WebConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = WebConfig::parse(text, Path::new("/nonexistent"));
    }
});
