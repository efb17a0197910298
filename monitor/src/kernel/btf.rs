//! Struct field offsets from the running kernel's BTF.
//!
//! Rust eBPF programs carry no CO-RE relocations, so anything they read
//! from kernel structs is read at offsets resolved here, at start, and
//! handed to the programs as load-time globals. A field that cannot be
//! resolved disables only what needs it.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use monitor_common::{OFFSET_UNKNOWN, SockOffsets};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Loads kernel BTF from `path` (normally [`VMLINUX_BTF`]).
pub fn load(path: &Path) -> Result<Btf> {
    if !path.exists() {
        bail!(
            "kernel BTF not found at {}: the kernel was built without \
             CONFIG_DEBUG_INFO_BTF=y (give a BTF file for this kernel with --btf)",
            path.display()
        );
    }
    Btf::from_file(path)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("parsing kernel BTF {}", path.display()))
}

/// Resolves every offset the programs use. A field this kernel lacks
/// stays [`OFFSET_UNKNOWN`] (and is logged); the caller decides which
/// programs can still run.
pub fn resolve(btf: &Btf) -> SockOffsets {
    let field = |root: &str, path: &[&str]| match offset_of(btf, root, path) {
        Ok(off) => off,
        Err(err) => {
            log::warn!("{err:#}");
            OFFSET_UNKNOWN
        }
    };
    let skc = |name: &str| field("sock", &["__sk_common", name]);
    SockOffsets {
        skc_family: skc("skc_family"),
        skc_num: skc("skc_num"),
        skc_dport: skc("skc_dport"),
        skc_rcv_saddr: skc("skc_rcv_saddr"),
        skc_daddr: skc("skc_daddr"),
        skc_v6_rcv_saddr: skc("skc_v6_rcv_saddr"),
        skc_v6_daddr: skc("skc_v6_daddr"),
        skc_net: skc("skc_net"),
        skc_state: skc("skc_state"),
        net_inum: field("net", &["ns", "inum"]),
        sk_protocol: field("sock", &["sk_protocol"]),
        tw_substate: field("inet_timewait_sock", &["tw_substate"]),
        task_nsproxy: field("task_struct", &["nsproxy"]),
        nsproxy_net_ns: field("nsproxy", &["net_ns"]),
        tw_timer: field("inet_timewait_sock", &["tw_timer"]),
        inet_sport: field("inet_sock", &["inet_sport"]),
    }
}

/// Number of parameters of kernel function `name`, None if BTF does not
/// describe it (then fentry cannot attach to it either).
pub fn func_params(btf: &Btf, name: &str) -> Option<usize> {
    let func = btf
        .resolve_types_by_name(name)
        .ok()?
        .into_iter()
        .find_map(|t| match t {
            Type::Func(f) => Some(f),
            _ => None,
        })?;
    match btf.resolve_chained_type(&func).ok()? {
        Type::FuncProto(proto) => Some(proto.parameters.len()),
        _ => None,
    }
}

/// Byte offset of the member reached by following `path` from struct
/// `root`, looking through anonymous structs and unions on the way.
pub fn offset_of(btf: &Btf, root: &str, path: &[&str]) -> Result<u32> {
    let types = btf
        .resolve_types_by_name(root)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("struct {root} not in BTF"))?;
    let mut current = types
        .into_iter()
        .find(|t| matches!(t, Type::Struct(_)))
        .ok_or_else(|| anyhow!("struct {root} not in BTF"))?;
    let mut bits = 0u32;
    for (i, name) in path.iter().enumerate() {
        let (offset, ty) = find_member(btf, &current, name)?
            .ok_or_else(|| anyhow!("{root}.{} not in BTF", path[..=i].join(".")))?;
        bits += offset;
        current = strip(btf, ty)?;
    }
    if !bits.is_multiple_of(8) {
        bail!("{root}.{} is a bitfield", path.join("."));
    }
    Ok(bits / 8)
}

/// Looks `name` up among the members of `ty`, descending into anonymous
/// members; returns the bit offset relative to `ty` and the member's type.
fn find_member(btf: &Btf, ty: &Type, name: &str) -> Result<Option<(u32, Type)>> {
    let members = match ty {
        Type::Struct(s) | Type::Union(s) => &s.members,
        _ => return Ok(None),
    };
    for member in members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        let member_ty = btf
            .resolve_chained_type(member)
            .map_err(|e| anyhow!("{e}"))?;
        if member_name == name {
            return Ok(Some((member.bit_offset(), member_ty)));
        }
        if member_name.is_empty() {
            let inner = strip(btf, member_ty)?;
            if let Some((off, found)) = find_member(btf, &inner, name)? {
                return Ok(Some((member.bit_offset() + off, found)));
            }
        }
    }
    Ok(None)
}

/// Follows typedefs and qualifiers to the underlying type.
fn strip(btf: &Btf, mut ty: Type) -> Result<Type> {
    for _ in 0..32 {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t),
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => btf.resolve_chained_type(t),
            Type::TypeTag(t) => btf.resolve_chained_type(t),
            _ => return Ok(ty),
        }
        .map_err(|e| anyhow!("{e}"))?;
    }
    bail!("type chain too long")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves against this machine's own kernel: the offsets must land
    /// inside the structs and `skc_net` must sit in `sock_common`, which
    /// starts `struct sock`.
    #[test]
    fn resolves_offsets_on_this_kernel() {
        let btf = load(Path::new(VMLINUX_BTF)).unwrap();
        let o = resolve(&btf);
        assert!(
            o.tuple_known() && o.netns_known() && o.task_netns_known(),
            "{o:?}"
        );
        let sock_common = offset_of(&btf, "sock", &["__sk_common"]).unwrap();
        assert_eq!(sock_common, 0);
        // sock_common's layout has been stable for a decade: addresses, then
        // the hash, then ports, then the family.
        assert_eq!((o.skc_daddr, o.skc_rcv_saddr), (0, 4), "{o:?}");
        assert_eq!((o.skc_dport, o.skc_num), (12, 14), "{o:?}");
        assert_eq!(o.skc_family, 16, "{o:?}");
        // `skc_state` directly follows `skc_family` in every kernel since 2.6.
        assert_eq!(o.skc_state, 18, "{o:?}");
        assert!(o.skc_v6_daddr > o.skc_family && o.skc_v6_rcv_saddr == o.skc_v6_daddr + 16);
        assert!(o.skc_net > 0 && o.skc_net < 136, "{o:?}");
        assert!(o.net_inum < 4096, "{o:?}");
        assert!(offset_of(&btf, "sock", &["__sk_common", "no_such_field"]).is_err());
        assert!(o.sk_protocol > o.skc_net && o.sk_protocol < 1024, "{o:?}");
        assert!(o.tw_substate > o.skc_family && o.tw_substate < 512, "{o:?}");
        assert_eq!(func_params(&btf, "tcp_time_wait"), Some(3));
        assert_eq!(func_params(&btf, "inet_twsk_alloc"), Some(3));
        assert_eq!(func_params(&btf, "no_such_function_twmon"), None);
    }
}
