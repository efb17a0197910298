//! A buffer of netlink inet_diag replies, as recv() returns them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor::{model::tcp::Family, sources::diag::parse_replies};

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let family = if data.first().is_some_and(|b| b & 1 == 1) {
        Family::Ipv6
    } else {
        Family::Ipv4
    };
    let _ = parse_replies(data, family, &mut out);
});
