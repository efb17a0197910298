//! The records kernel programs put in the `EVENTS` ring buffer, one module
//! per record type.
//!
//! Every record is a `#[repr(C)]` struct that starts with a [`Header`] and
//! has no implicit padding (explicit `_pad` fields instead), so every byte
//! on the wire is defined and any bit pattern reads back as a value. Its
//! size is pinned by a compile-time assertion. The kernel side builds
//! records with their `new` constructors and writes them whole; the daemon
//! reads them with [`unpack`], which checks kind and size first. Nothing
//! else on either side looks at the bytes.

mod bind_refused;
mod closed;
mod connect_failure;
mod reset_sent;
mod state_change;
mod tw_alloc;
mod tw_death;
mod tw_segment;

pub use bind_refused::BindRefused;
pub use closed::Closed;
pub use connect_failure::ConnectFailure;
pub use reset_sent::ResetSent;
pub use state_change::StateChange;
pub use tw_alloc::TwAlloc;
pub use tw_death::{TwDeath, cause};
pub use tw_segment::TwSegment;

/// What a record is. The numbers are part of the wire format (and of
/// recordings), so they are never reused.
pub mod kind {
    pub const STATE_CHANGE: u8 = 1;
    pub const TW_ALLOC: u8 = 2;
    pub const TW_SEGMENT: u8 = 3;
    pub const CONNECT_FAILURE: u8 = 4;
    pub const TW_DEATH: u8 = 5;
    // 6 was CLOSER (contract 2), joined into CLOSED and TW_ALLOC.
    pub const RESET_SENT: u8 = 7;
    pub const CLOSED: u8 = 8;
    pub const BIND_REFUSED: u8 = 9;
}

/// Bumped whenever a record's layout or meaning changes, so a recording of
/// an older contract is refused by name instead of misread.
pub const WIRE_VERSION: u16 = 4;

/// The first 16 bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, nanoseconds since boot.
    pub ts_ns: u64,
    /// Inode of the network namespace it happened in; 0 when it could not
    /// be read.
    pub netns: u32,
    /// One of [`kind`].
    pub kind: u8,
    /// [`family`](crate::tcp::family) of the addresses in the record.
    pub family: u8,
    pub _pad: [u8; 2],
}

/// When, where and in which address family something happened: what
/// every record's header says besides its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub ts_ns: u64,
    pub netns: u32,
    pub family: u8,
}

impl Header {
    pub const fn new(kind: u8, at: Stamp) -> Header {
        Header {
            ts_ns: at.ts_ns,
            netns: at.netns,
            kind,
            family: at.family,
            _pad: [0; 2],
        }
    }

    pub const fn stamp(&self) -> Stamp {
        Stamp {
            ts_ns: self.ts_ns,
            netns: self.netns,
            family: self.family,
        }
    }
}

/// A connection's endpoints as seen from the socket's own side. Ports in
/// host byte order; addresses in network byte order, an IPv4 address in
/// the first four bytes and the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tuple {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

/// Who closed a connection first: the task that moved it from
/// ESTABLISHED to FIN_WAIT1 (close() or shutdown()). All zero when unknown
/// (the close began before twmon, or its record was lost).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Process {
    /// `bpf_get_current_cgroup_id()`: the cgroup v2 id (its directory's
    /// inode number).
    pub cgroup: u64,
    /// Thread group id (what userspace calls the pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The task's comm, NUL padded; whatever the process set, not UTF-8
    /// necessarily.
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Process>() == 32);

impl Process {
    /// From `bpf_get_current_pid_tgid()` and the rest of the task.
    pub const fn new(pid_tgid: u64, cgroup: u64, comm: [u8; 16]) -> Process {
        Process {
            cgroup,
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            comm,
        }
    }

    /// Whether it names a process (pid 0 is the idle task, never a closer).
    pub const fn is_known(&self) -> bool {
        self.pid != 0
    }
}

/// An IPv4 address as a record carries it.
pub const fn ipv4(octets: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0] = octets[0];
    out[1] = octets[1];
    out[2] = octets[2];
    out[3] = octets[3];
    out
}

/// A record type: its kind and, by its size, its length on the wire.
///
/// # Safety
/// Implementors are `#[repr(C)]`, start with a [`Header`], contain only
/// integers and byte arrays, and have no implicit padding, so that every
/// byte is initialised and every bit pattern is a valid value.
pub unsafe trait Wire: Copy {
    const KIND: u8;
    const SIZE: usize = core::mem::size_of::<Self>();

    fn header(&self) -> &Header;

    /// The record's bytes as the ring buffer holds them.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: the trait's contract: no padding, so every byte of the
        // value is initialised.
        unsafe { core::slice::from_raw_parts((self as *const Self).cast::<u8>(), Self::SIZE) }
    }
}

/// Reads a `T` from `bytes`, which must be exactly its size.
fn read<T: Wire>(bytes: &[u8]) -> Result<T, UnpackError> {
    if bytes.len() != T::SIZE {
        return Err(UnpackError::Size {
            kind: T::KIND,
            len: bytes.len(),
            expected: T::SIZE,
        });
    }
    // SAFETY: the length matches, every bit pattern is a valid `T` (the
    // trait's contract), and read_unaligned assumes nothing about where
    // the ring buffer put the bytes.
    Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// One record of any type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    StateChange(StateChange),
    TwAlloc(TwAlloc),
    TwSegment(TwSegment),
    ConnectFailure(ConnectFailure),
    TwDeath(TwDeath),
    Closed(Closed),
    ResetSent(ResetSent),
    BindRefused(BindRefused),
}

/// Where the kind byte sits in every record.
const KIND_AT: usize = 12;
const _: () = assert!(core::mem::offset_of!(Header, kind) == KIND_AT);
const _: () = assert!(core::mem::size_of::<Header>() == 16);
const _: () = assert!(core::mem::size_of::<Tuple>() == 36);

/// Why bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnpackError {
    /// Shorter than a header.
    Short(usize),
    UnknownKind(u8),
    Size {
        kind: u8,
        len: usize,
        expected: usize,
    },
}

impl core::fmt::Display for UnpackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UnpackError::Short(len) => write!(f, "a record of {len} bytes has no header"),
            UnpackError::UnknownKind(kind) => write!(f, "unknown record kind {kind}"),
            UnpackError::Size {
                kind,
                len,
                expected,
            } => write!(
                f,
                "a record of kind {kind} is {len} bytes, expected {expected}"
            ),
        }
    }
}

/// Reads one record as the kernel wrote it.
pub fn unpack(bytes: &[u8]) -> Result<Record, UnpackError> {
    if bytes.len() < core::mem::size_of::<Header>() {
        return Err(UnpackError::Short(bytes.len()));
    }
    Ok(match bytes[KIND_AT] {
        kind::STATE_CHANGE => Record::StateChange(read(bytes)?),
        kind::TW_ALLOC => Record::TwAlloc(read(bytes)?),
        kind::TW_SEGMENT => Record::TwSegment(read(bytes)?),
        kind::CONNECT_FAILURE => Record::ConnectFailure(read(bytes)?),
        kind::TW_DEATH => Record::TwDeath(read(bytes)?),
        kind::CLOSED => Record::Closed(read(bytes)?),
        kind::RESET_SENT => Record::ResetSent(read(bytes)?),
        kind::BIND_REFUSED => Record::BindRefused(read(bytes)?),
        other => return Err(UnpackError::UnknownKind(other)),
    })
}

impl Record {
    pub fn header(&self) -> &Header {
        match self {
            Record::StateChange(r) => r.header(),
            Record::TwAlloc(r) => r.header(),
            Record::TwSegment(r) => r.header(),
            Record::ConnectFailure(r) => r.header(),
            Record::TwDeath(r) => r.header(),
            Record::Closed(r) => r.header(),
            Record::ResetSent(r) => r.header(),
            Record::BindRefused(r) => r.header(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Record::StateChange(r) => r.as_bytes(),
            Record::TwAlloc(r) => r.as_bytes(),
            Record::TwSegment(r) => r.as_bytes(),
            Record::ConnectFailure(r) => r.as_bytes(),
            Record::TwDeath(r) => r.as_bytes(),
            Record::Closed(r) => r.as_bytes(),
            Record::ResetSent(r) => r.as_bytes(),
            Record::BindRefused(r) => r.as_bytes(),
        }
    }
}

/// Implements [`Wire`] for a record type and pins its size, which each
/// type gives as the sum of its fields' sizes: equal to `size_of`, there is
/// no room for implicit padding.
macro_rules! wire {
    ($ty:ty, $kind:expr, $size:expr) => {
        const _: () = assert!(core::mem::size_of::<$ty>() == $size);
        const _: () = assert!(core::mem::offset_of!($ty, header) == 0);
        // SAFETY: `#[repr(C)]` (each type), header first and no implicit
        // padding (both asserted above), integers and byte arrays only.
        unsafe impl $crate::record::Wire for $ty {
            const KIND: u8 = $kind;
            fn header(&self) -> &$crate::record::Header {
                &self.header
            }
        }
    };
}
pub(crate) use wire;
