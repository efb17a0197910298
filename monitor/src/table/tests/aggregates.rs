//! Capacity, namespaces, top-K, port pressure, listings.

use super::*;

#[test]
fn capacity_evicts_oldest_first_and_counts() {
    let mut table = Table::new(Config {
        capacity: 3,
        ..Config::default()
    });
    for port in 0..5u16 {
        table.apply(&birth(
            u64::from(port) * SEC,
            100 + u64::from(port),
            tuple(41000 + port, 80),
            TcpState::TimeWait,
            0,
        ));
    }
    assert_eq!(table.len(), 3);
    assert!(table.get(&k(tuple(41000, 80))).is_none());
    assert!(table.get(&k(tuple(41001, 80))).is_none());
    assert!(table.get(&k(tuple(41004, 80))).is_some());
    let s = table.summary(20, false);
    assert_eq!(s.evictions, 2);
    assert_eq!(population(&table), 3);
    assert_eq!(s.by_local_port.len(), 3);
}

#[test]
fn namespace_gone_purges_its_entries() {
    let mut table = Table::new(Config {
        derive_deaths: true,
        ..Config::default()
    });
    let t = tuple(40050, 80);
    table.apply(&birth(SEC, 1, t, TcpState::TimeWait, 0));
    table.reconcile(&SnapshotRound {
        namespaces: vec![],
        existing: Some(vec![1234]),
    });
    let s = table.summary(20, false);
    assert_eq!(s.exited.get(&(DeathCause::Purged, true)), Some(&1));
    assert!(table.is_empty());
}

#[test]
fn top_k_keeps_the_largest_and_sums_namespaces_unless_asked() {
    let mut table = Table::new(Config::default());
    let mut n = 0u64;
    for (netns, dport, count) in [(1u32, 80u16, 3), (2, 80, 2), (1, 443, 4), (1, 22, 1)] {
        for _ in 0..count {
            n += 1;
            let mut e = birth(n, n, tuple(30000 + n as u16, dport), TcpState::TimeWait, 0);
            if let KernelEvent::TimewaitBirth(tw) = &mut e {
                tw.netns = Some(netns);
            }
            table.apply(&e);
        }
    }
    let s = table.summary(2, false);
    assert_eq!(s.by_remote, vec![((0, ip(2), 80), 5), ((0, ip(2), 443), 4)]);
    let s = table.summary(2, true);
    assert_eq!(s.by_remote, vec![((1, ip(2), 443), 4), ((1, ip(2), 80), 3)]);
}

#[test]
fn port_pressure_counts_ephemeral_tuples_per_destination() {
    let mut round = snapshot(SEC, &[]);
    let ns = &mut round.namespaces[0];
    ns.knobs.port_range = Some((40000, 40003));
    let sock = |sport, state, timewait| DiagSocket {
        family: Family::Ipv4,
        state,
        timewait,
        expires_ms: 0,
        tuple: tuple(sport, 5432),
    };
    ns.sockets = vec![
        sock(40000, TcpState::Established, false),
        sock(40001, TcpState::TimeWait, true),
        sock(40002, TcpState::TimeWait, true),
        sock(40003, TcpState::SynSent, false),
        // Not ephemeral: a server-side socket or an explicit bind.
        sock(5000, TcpState::Established, false),
    ];
    let mut table = Table::new(Config::default());
    table.reconcile(&round);
    let p = table.summary(20, false).pressure;
    assert_eq!((p[0].in_use, p[0].ratio()), (4, 1.0));
    // A listener on a port of the range takes it from every destination.
    let ns = &mut round.namespaces[0];
    ns.sockets.remove(0);
    let mut listener = sock(40000, TcpState::Listen, false);
    listener.tuple.daddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    listener.tuple.dport = 0;
    ns.sockets.push(listener);
    // What that listener accepted is the server side, not connect()s.
    let mut accepted = sock(40000, TcpState::Established, false);
    accepted.tuple.daddr = ip(3);
    ns.sockets.push(accepted);
    let mut table = Table::new(Config::default());
    table.reconcile(&round);
    let p = table.summary(20, false).pressure;
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].in_use, p[0].in_timewait, p[0].range), (4, 2, 4));
    assert_eq!(p[0].ratio(), 1.0);
    assert_eq!((p[0].remote, p[0].remote_port), (ip(2), 5432));
}

#[test]
fn list_filters_and_orders_oldest_first() {
    let mut table = Table::new(Config::default());
    close_with_probes(&mut table, 3 * SEC, 1, 2, tuple(40060, 80), "curl");
    close_with_probes(&mut table, SEC, 3, 4, tuple(40061, 80), "wget");
    close_with_probes(&mut table, 2 * SEC, 5, 6, tuple(40062, 443), "curl");
    let all = table.list(&Filter::default(), Order::Age, 10);
    let ports: Vec<u16> = all.iter().map(|(k, _)| k.tuple.sport).collect();
    assert_eq!(ports, vec![40061, 40062, 40060]);
    let curl = table.list(
        &Filter {
            process: Some("cur".into()),
            port: Some(80),
            ..Filter::default()
        },
        Order::Age,
        10,
    );
    assert_eq!(curl.len(), 1);
    assert_eq!(curl[0].0.tuple.sport, 40060);
    assert_eq!(table.list(&Filter::default(), Order::Age, 1).len(), 1);
    assert_eq!(
        table.list(&Filter::default(), Order::Age, 1)[0]
            .0
            .tuple
            .sport,
        40061
    );
}

#[test]
fn list_filters_by_the_cgroup_keys_an_attribution_resolved_to() {
    let mut table = Table::new(Config::default());
    close_with_probes(&mut table, SEC, 1, 2, tuple(40060, 80), "curl");
    close_with_probes(&mut table, 2 * SEC, 3, 4, tuple(40061, 80), "wget");
    assert_eq!(table.cgroup_keys(), vec![(NS, 7)]);
    let only = |keys: &[(u32, u64)]| Filter {
        cgroups: Some(keys.iter().copied().collect()),
        ..Filter::default()
    };
    assert_eq!(table.list(&only(&[(NS, 7)]), Order::Age, 10).len(), 2);
    // The same id in another namespace is another cgroup key.
    assert!(table.list(&only(&[(NS + 1, 7)]), Order::Age, 10).is_empty());
    assert!(table.list(&only(&[]), Order::Age, 10).is_empty());
}
