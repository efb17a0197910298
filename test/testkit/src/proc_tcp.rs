//! The kernel's own socket list as /proc/net/tcp and tcp6 print it (what
//! netstat reads; `ss` asks sock_diag for the same sockets): the oracle
//! these tests hold twmon to.

use std::fs;

/// One socket line, its fields as the kernel prints them (hex).
pub(crate) struct ProcSocket<'a> {
    /// `0100007F:1F90`: address and port.
    pub local: &'a str,
    pub remote: &'a str,
    /// `06` is TIME_WAIT, `05` FIN_WAIT2.
    pub state: &'a str,
    /// `tr:when`: `03` the timewait timer, `02` keepalive.
    pub timer: &'a str,
}

impl<'a> ProcSocket<'a> {
    fn parse(line: &'a str) -> Option<ProcSocket<'a>> {
        let mut f = line.split_whitespace().skip(1);
        let (local, remote, state) = (f.next()?, f.next()?, f.next()?);
        let timer = f.nth(1)?;
        Some(ProcSocket {
            local,
            remote,
            state,
            timer,
        })
    }
}

/// /proc/thread-self/net/`file` (tcp or tcp6) in the calling thread's
/// namespace; empty when it cannot be read.
pub(crate) fn read(file: &str) -> String {
    fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default()
}

/// The sockets of a table [`read`] returned.
pub(crate) fn sockets(table: &str) -> impl Iterator<Item = ProcSocket<'_>> {
    table.lines().skip(1).filter_map(ProcSocket::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_taken_by_position() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:9C40 0100007F:1F90 05 00000000:00000000 03:00000F9F 00000000     0        0 0 3 0000000000000000\n";
        let s: Vec<_> = sockets(table).collect();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].local, s[0].remote, s[0].state, s[0].timer),
            ("0100007F:9C40", "0100007F:1F90", "05", "03:00000F9F")
        );
    }
}
