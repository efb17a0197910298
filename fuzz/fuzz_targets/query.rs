//! The query string of an /api/v1 request, through the parameter checks
//! every handler relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::web::params;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // As axum's Query extractor decodes it.
    let Ok(query) = serde_urlencoded::from_str::<params::Params>(text) else {
        return;
    };
    let _ = params::limit(&query, 100);
    let _ = params::top(&query, 20);
    let _ = params::order(&query);
    let _ = params::filter(&query);
});
