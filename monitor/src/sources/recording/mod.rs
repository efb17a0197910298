//! Recorded event streams: what `twmon record` writes and `twmon replay`
//! reads. Everything the table is fed, in order (raw kernel records,
//! snapshot rounds and the closers found after them), so a replay rebuilds
//! the same table. The format is
//! documented in docs/record-format.md; keep the two in step.

use std::io::{self, Read, Write};

use monitor_common::record::WIRE_VERSION;
use serde::{Deserialize, Serialize};
use thiserror::Error;

mod closers;
mod counters;
mod round;

use closers::{decode_closers, encode_closers};
use counters::{decode_counters, encode_counters};
use round::{decode_round, encode_round};

use crate::model::{
    hooks::KernelCounts,
    snapshot::{FoundCloser, SnapshotRound},
};

pub const MAGIC: &[u8; 8] = b"TWMONREC";
/// 2: kernel records of several sizes, each as the contract of
/// [`Meta::wire`] lays it out (1 held one 64-byte event type). 4: found
/// closers (kind 4).
pub const VERSION: u16 = 4;
/// Version 3 is version 4 without found-closer frames: still read.
const OLDEST_READ: u16 = 3;
/// Largest kernel record a frame may hold; the largest there is today is
/// far smaller.
const MAX_RECORD: usize = 4096;
/// Frame kinds.
const FRAME_EVENT: u8 = 1;
const FRAME_SNAPSHOT: u8 = 2;
const FRAME_COUNTERS: u8 = 3;
const FRAME_CLOSERS: u8 = 4;
/// Refuse frames larger than this: a corrupt length must not make replay
/// allocate gigabytes. 1 GiB holds ~24 million sockets.
const MAX_FRAME: usize = 1 << 30;

/// What the recording daemon knew that the table's configuration needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// twmon version that wrote the file.
    pub twmon: String,
    /// Version of the kernel/user contract its records follow
    /// (`monitor_common::record::WIRE_VERSION`).
    pub wire: u16,
    /// Kernel release it ran on.
    pub kernel: String,
    /// The kernel's HZ as twmon took it.
    pub hz: u32,
    /// No birth probe: births were derived from transitions.
    pub derive_births: bool,
    /// No death probe: deaths were derived from snapshots.
    pub derive_deaths: bool,
    /// Each hook and the method it was attached with (none: not attached).
    pub hooks: Vec<(String, Option<String>)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// One ring-buffer record as the kernel wrote it.
    Event(Vec<u8>),
    Snapshot(SnapshotRound),
    /// What the kernel counted itself, as of this point.
    Counters(KernelCounts),
    /// Closers found for sockets the round before adopted without one.
    Closers(Vec<FoundCloser>),
}

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("not a twmon recording (it does not start with TWMONREC)")]
    Magic,
    #[error(
        "recording format version {0}; this twmon reads versions {OLDEST_READ} to {VERSION}: \
         replay it with the twmon version that wrote it"
    )]
    Version(u16),
    #[error(
        "recorded by twmon {twmon} with kernel records of contract version {wire}; this twmon \
         reads version {WIRE_VERSION}: replay it with the twmon version that wrote it"
    )]
    Wire { twmon: String, wire: u16 },
    #[error("the recording's header is damaged: {0}")]
    Meta(String),
    #[error("the recording ends inside a frame at byte {0} (cut short while being written?)")]
    Truncated(u64),
    #[error("damaged frame at byte {offset}: {reason}")]
    Frame { offset: u64, reason: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes a recording. Buffered; [`Writer::flush`] after each batch so a
/// killed daemon leaves a file that replays up to its last batch.
pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W, meta: &Meta) -> io::Result<Writer<W>> {
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&0u16.to_le_bytes())?;
        out.write_all(&len32(json.len())?.to_le_bytes())?;
        out.write_all(&json)?;
        Ok(Writer { out })
    }

    pub fn event(&mut self, raw: &[u8]) -> io::Result<()> {
        self.frame(FRAME_EVENT, raw)
    }

    pub fn snapshot(&mut self, round: &SnapshotRound) -> io::Result<()> {
        self.frame(FRAME_SNAPSHOT, &encode_round(round))
    }

    pub fn counters(&mut self, counts: &KernelCounts) -> io::Result<()> {
        self.frame(FRAME_COUNTERS, &encode_counters(counts))
    }

    pub fn closers(&mut self, found: &[FoundCloser]) -> io::Result<()> {
        self.frame(FRAME_CLOSERS, &encode_closers(found))
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        self.out.write_all(&[kind, 0, 0, 0])?;
        self.out.write_all(&len32(payload.len())?.to_le_bytes())?;
        self.out.write_all(payload)
    }
}

/// A frame's length, refused when the reader would refuse it: a file
/// that cannot be replayed is not worth writing.
fn len32(n: usize) -> io::Result<u32> {
    if n > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a frame of {n} bytes is more than a recording may hold ({MAX_FRAME})"
        )));
    }
    u32::try_from(n).map_err(|_| io::Error::other("frame larger than 4 GiB"))
}

/// Reads a recording frame by frame.
pub struct Reader<R: Read> {
    input: R,
    offset: u64,
    pub meta: Meta,
}

impl<R: Read> Reader<R> {
    pub fn new(mut input: R) -> Result<Reader<R>, RecordError> {
        let mut head = [0u8; 16];
        input.read_exact(&mut head).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => RecordError::Magic,
            _ => RecordError::Io(e),
        })?;
        if &head[..8] != MAGIC {
            return Err(RecordError::Magic);
        }
        let version = u16::from_le_bytes([head[8], head[9]]);
        if !(OLDEST_READ..=VERSION).contains(&version) {
            return Err(RecordError::Version(version));
        }
        let meta_len = u32::from_le_bytes([head[12], head[13], head[14], head[15]]) as usize;
        if meta_len > MAX_FRAME {
            return Err(RecordError::Meta(format!("{meta_len} bytes long")));
        }
        let mut json = vec![0u8; meta_len];
        input.read_exact(&mut json).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => RecordError::Truncated(16),
            _ => RecordError::Io(e),
        })?;
        let meta: Meta =
            serde_json::from_slice(&json).map_err(|e| RecordError::Meta(e.to_string()))?;
        if meta.wire != WIRE_VERSION {
            return Err(RecordError::Wire {
                twmon: meta.twmon,
                wire: meta.wire,
            });
        }
        Ok(Reader {
            input,
            offset: 16 + meta_len as u64,
            meta,
        })
    }

    /// The next frame, `None` at a clean end of file.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, RecordError> {
        let at = self.offset;
        let mut head = [0u8; 8];
        match read_full(&mut self.input, &mut head)? {
            0 => return Ok(None),
            8 => {}
            _ => return Err(RecordError::Truncated(at)),
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(RecordError::Frame {
                offset: at,
                reason: format!("length {len} is implausible"),
            });
        }
        let mut payload = vec![0u8; len];
        if read_full(&mut self.input, &mut payload)? != len {
            return Err(RecordError::Truncated(at));
        }
        self.offset += 8 + len as u64;
        let bad = |reason: String| RecordError::Frame { offset: at, reason };
        match head[0] {
            // Kept as the kernel wrote it, malformed or not: the replay
            // decodes (and counts) it exactly as the daemon did.
            FRAME_EVENT if len <= MAX_RECORD => Ok(Some(Frame::Event(payload))),
            FRAME_EVENT => Err(bad(format!(
                "a kernel record of {len} bytes (at most {MAX_RECORD})"
            ))),
            FRAME_SNAPSHOT => decode_round(&payload)
                .map(|r| Some(Frame::Snapshot(r)))
                .map_err(bad),
            FRAME_COUNTERS => decode_counters(&payload)
                .map(|c| Some(Frame::Counters(c)))
                .map_err(bad),
            FRAME_CLOSERS => decode_closers(&payload)
                .map(|f| Some(Frame::Closers(f)))
                .map_err(bad),
            other => Err(bad(format!("unknown frame kind {other}"))),
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A cursor over a frame's payload.
pub(super) struct Bytes<'a> {
    pub rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("frame shorter than its contents".into());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A count of items of `size` bytes each, checked against what is left.
    pub fn count(&mut self, size: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(size) > self.rest.len() {
            return Err(format!("{n} items do not fit in the frame"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        event::{Comm, Process},
        hooks::Hook,
        snapshot::{DiagSocket, Knobs, NetnsSnapshot},
        tcp::{Family, FourTuple, TcpState},
    };

    /// Length of the opaque event frame the tests write.
    const EVENT: usize = 64;

    fn meta() -> Meta {
        Meta {
            twmon: "0.1.0".into(),
            wire: WIRE_VERSION,
            kernel: "6.1.0".into(),
            hz: 250,
            derive_births: true,
            derive_deaths: false,
            hooks: vec![("timewait_birth".into(), Some("fentry".into()))],
        }
    }

    fn round() -> SnapshotRound {
        SnapshotRound {
            namespaces: vec![NetnsSnapshot {
                netns: 7,
                taken_ns: 123_456_789,
                sockets: vec![
                    DiagSocket {
                        family: Family::Ipv6,
                        state: TcpState::TimeWait,
                        timewait: true,
                        expires_ms: 59_000,
                        tuple: FourTuple {
                            saddr: "fd00::1".parse().unwrap(),
                            sport: 41000,
                            daddr: "fd00::2".parse().unwrap(),
                            dport: 443,
                        },
                    },
                    DiagSocket {
                        family: Family::Ipv4,
                        state: TcpState::Established,
                        timewait: false,
                        expires_ms: 0,
                        tuple: FourTuple {
                            saddr: "10.0.0.1".parse().unwrap(),
                            sport: 41001,
                            daddr: "10.0.0.2".parse().unwrap(),
                            dport: 80,
                        },
                    },
                ],
                knobs: Knobs {
                    max_tw_buckets: Some(262144),
                    tw_reuse: Some(2),
                    port_range: Some((32768, 60999)),
                    fin_timeout_s: None,
                    timestamps: None,
                },
            }],
            existing: Some(vec![7, 8]),
        }
    }

    fn counts() -> KernelCounts {
        let mut c = KernelCounts::default();
        c.transitions
            .insert((TcpState::FinWait2, TcpState::Close), 30);
        c.errors.insert((Hook::SetState, "ringbuf_full"), 2);
        c.skipped_runs.insert(Hook::TimewaitBirth, 1);
        c
    }

    fn found() -> Vec<FoundCloser> {
        let closer = |comm: &str, pid: u32| Process {
            pid,
            tid: pid + 1,
            cgroup: u64::MAX - 5,
            comm: Comm::new(comm),
        };
        let snap = round();
        let socket = |i: usize| snap.namespaces[0].sockets[i];
        [(0, "nginx", 7), (1, "envoy: worker", 4_000_000)]
            .into_iter()
            .map(|(i, comm, pid)| FoundCloser {
                netns: 7,
                family: socket(i).family,
                tuple: socket(i).tuple,
                closer: closer(comm, pid),
            })
            .collect()
    }

    fn written() -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), &meta()).unwrap();
        w.event(&[7u8; EVENT]).unwrap();
        w.snapshot(&round()).unwrap();
        w.snapshot(&SnapshotRound::default()).unwrap();
        w.counters(&counts()).unwrap();
        w.closers(&found()).unwrap();
        w.flush().unwrap();
        w.out
    }

    #[test]
    fn round_trips() {
        let bytes = written();
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert_eq!(r.meta, meta());
        assert_eq!(
            r.next_frame().unwrap(),
            Some(Frame::Event(vec![7u8; EVENT]))
        );
        assert_eq!(r.next_frame().unwrap(), Some(Frame::Snapshot(round())));
        assert_eq!(
            r.next_frame().unwrap(),
            Some(Frame::Snapshot(SnapshotRound::default()))
        );
        assert_eq!(r.next_frame().unwrap(), Some(Frame::Counters(counts())));
        assert_eq!(r.next_frame().unwrap(), Some(Frame::Closers(found())));
        assert_eq!(r.next_frame().unwrap(), None);
    }

    #[test]
    fn version_3_files_are_read() {
        let mut w = Writer::new(Vec::new(), &meta()).unwrap();
        w.snapshot(&round()).unwrap();
        let mut bytes = w.out;
        bytes[8..10].copy_from_slice(&3u16.to_le_bytes());
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert_eq!(r.next_frame().unwrap(), Some(Frame::Snapshot(round())));
        assert_eq!(r.next_frame().unwrap(), None);
    }

    #[test]
    fn a_cut_file_replays_up_to_the_cut_and_says_where() {
        let bytes = written();
        let cut = &bytes[..bytes.len() - 3];
        let mut r = Reader::new(cut).unwrap();
        assert!(matches!(r.next_frame(), Ok(Some(Frame::Event(_)))));
        assert!(matches!(r.next_frame(), Ok(Some(Frame::Snapshot(_)))));
        assert!(matches!(r.next_frame(), Ok(Some(Frame::Snapshot(_)))));
        assert!(matches!(r.next_frame(), Ok(Some(Frame::Counters(_)))));
        let err = r.next_frame().unwrap_err();
        assert!(matches!(err, RecordError::Truncated(_)), "{err}");
        assert!(err.to_string().contains("cut short"));
    }

    #[test]
    fn rejects_other_files_and_versions() {
        assert!(matches!(
            Reader::new(&b"hello"[..]),
            Err(RecordError::Magic)
        ));
        assert!(matches!(
            Reader::new(&b"GIF89a\0\0\0\0\0\0\0\0\0\0"[..]),
            Err(RecordError::Magic)
        ));
        let mut bytes = written();
        bytes[8] = 9;
        let err = Reader::new(&bytes[..]).err().unwrap();
        assert!(
            err.to_string().contains("version 9") && err.to_string().contains("versions 3 to 4"),
            "{err}"
        );
        bytes[8] = 2;
        assert!(matches!(
            Reader::new(&bytes[..]),
            Err(RecordError::Version(2))
        ));
        let old_contract = Meta { wire: 1, ..meta() };
        let bytes = Writer::new(Vec::new(), &old_contract).unwrap().out;
        let err = Reader::new(&bytes[..]).err().unwrap();
        assert!(
            err.to_string().contains("contract version 1") && err.to_string().contains("0.1.0"),
            "{err}"
        );
    }

    #[test]
    fn damaged_frames_are_errors_not_panics() {
        let bytes = written();
        let header = 16 + serde_json::to_vec(&meta()).unwrap().len();
        // Unknown frame kind.
        let mut b = bytes.clone();
        b[header] = 42;
        let mut r = Reader::new(&b[..]).unwrap();
        assert!(r.next_frame().unwrap_err().to_string().contains("kind 42"));
        // An absurd socket count inside a snapshot.
        let mut b = bytes.clone();
        let snap = header + 8 + EVENT + 8;
        let sockets_count_at = snap + 1 + 4 + 8 + 4 + 4 + 8 + 24 + 5;
        b[sockets_count_at..sockets_count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut r = Reader::new(&b[..]).unwrap();
        r.next_frame().unwrap();
        assert!(
            r.next_frame()
                .unwrap_err()
                .to_string()
                .contains("do not fit")
        );
        // A found closer of an unknown family.
        let mut b = bytes.clone();
        let closers = bytes.len() - 4 - 2 * closers::FOUND_SIZE;
        b[closers + 4 + 4] = 3;
        let mut r = Reader::new(&b[..]).unwrap();
        for _ in 0..4 {
            r.next_frame().unwrap();
        }
        let err = r.next_frame().unwrap_err().to_string();
        assert!(err.contains("unknown address family"), "{err}");
    }
}
