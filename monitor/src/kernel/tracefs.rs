//! tracefs: making sure it is mounted (many VMs and containers boot without
//! it) and checking tracepoint record layouts against what the kernel
//! programs read.

use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};
use nix::mount::{MsFlags, mount};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs root, mounting it at /sys/kernel/tracing when absent.
pub fn ensure_mounted() -> Result<&'static Path> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(Path::new(dir));
        }
    }
    log::info!("tracefs is not mounted; mounting it at {TRACEFS}");
    mount(
        Some("nodev"),
        TRACEFS,
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "tracefs is not mounted and mounting it failed; mount it with \
             `mount -t tracefs nodev {TRACEFS}` (needs CAP_SYS_ADMIN)"
        )
    })?;
    Ok(Path::new(TRACEFS))
}

/// One `field:` line of a tracepoint format file.
#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// Parses the `field:` lines of `events/<category>/<name>/format`.
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let decl = line.strip_prefix("field:")?.split(';').next()?.trim();
            // `__u8 saddr[4]` -> `saddr`; `const void * skaddr` -> `skaddr`.
            let name = decl
                .rsplit(|c: char| c.is_whitespace() || c == '*')
                .next()?
                .split('[')
                .next()?
                .to_string();
            let value = |key: &str| -> Option<usize> {
                line.split(';')
                    .find_map(|part| part.trim().strip_prefix(key))?
                    .trim()
                    .parse()
                    .ok()
            };
            Some(Field {
                name,
                offset: value("offset:")?,
                size: value("size:")?,
            })
        })
        .collect()
}

/// Checks that `fields` has each `(name, offset, size)` of `expected`.
pub fn check_layout(fields: &[Field], expected: &[(&str, usize, usize)]) -> Result<()> {
    for &(name, offset, size) in expected {
        match fields.iter().find(|f| f.name == name) {
            Some(f) if f.offset == offset && f.size == size => {}
            Some(f) => bail!(
                "field {name} is at offset {} size {}, twmon expects offset {offset} size {size}",
                f.offset,
                f.size
            ),
            None => bail!("field {name} is missing"),
        }
    }
    Ok(())
}

/// Verifies the running kernel's layout of tracepoint `category:name`.
pub fn verify_tracepoint(
    root: &Path,
    category: &str,
    name: &str,
    expected: &[(&str, usize, usize)],
) -> Result<Vec<Field>> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "tracepoint {category}:{name} not found ({}): this kernel is too old or built without it",
            path.display()
        )
    })?;
    let fields = parse_format(&text);
    check_layout(&fields, expected).with_context(|| {
        format!("tracepoint {category}:{name} has a record layout twmon does not know")
    })?;
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_common::tracepoints::set_state_tp;

    /// Verbatim from Linux 6.18.
    const FORMAT: &str = "name: inet_sock_set_state
ID: 1528
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;

print fmt: \"family=%s protocol=%s\", REC->family
";

    #[test]
    fn parses_fields() {
        let fields = parse_format(FORMAT);
        assert_eq!(fields.len(), 15);
        assert_eq!(
            fields[4],
            Field {
                name: "skaddr".into(),
                offset: 8,
                size: 8
            }
        );
        assert_eq!(fields[11].name, "saddr");
        assert_eq!(fields[14].name, "daddr_v6");
    }

    #[test]
    fn accepts_the_known_layout() {
        check_layout(&parse_format(FORMAT), set_state_tp::FIELDS).unwrap();
    }

    #[test]
    fn rejects_a_moved_or_missing_field() {
        let moved = FORMAT.replace("sport;\toffset:24", "sport;\toffset:28");
        let err = check_layout(&parse_format(&moved), set_state_tp::FIELDS).unwrap_err();
        assert!(err.to_string().contains("sport"), "{err}");
        let missing = FORMAT.replace("protocol;", "proto;");
        let err = check_layout(&parse_format(&missing), set_state_tp::FIELDS).unwrap_err();
        assert_eq!(err.to_string(), "field protocol is missing");
    }
}
