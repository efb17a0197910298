//! Facts about the running kernel that are not in BTF.

/// Release of the running kernel (`uname -r`), empty if unreadable.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The kernel's HZ (CONFIG_HZ), from its build config where the
/// distribution ships it; 250, the most common, otherwise. Only turns the
/// FIN_WAIT2 timeout of a timewait birth into time until the next
/// snapshot gives the exact expiry.
pub fn kernel_hz() -> u32 {
    let config = std::fs::read_to_string(format!("/boot/config-{}", kernel_release()));
    config
        .ok()
        .and_then(|text| parse_config_hz(&text))
        .unwrap_or_else(|| {
            log::info!("CONFIG_HZ not found under /boot; assuming 250");
            250
        })
}

fn parse_config_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|line| line.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
        .filter(|hz| *hz > 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_hz() {
        let text = "CONFIG_HZ_250=y\n# CONFIG_HZ_1000 is not set\nCONFIG_HZ=250\n";
        assert_eq!(super::parse_config_hz(text), Some(250));
        assert_eq!(super::parse_config_hz("CONFIG_HZ_PERIODIC=y\n"), None);
        assert_eq!(super::parse_config_hz("CONFIG_HZ=0\n"), None);
    }
}
