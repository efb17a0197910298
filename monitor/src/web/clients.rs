//! Who holds the server's connections, so that each client is held to its
//! share and can only crowd out itself: a client address at its share that
//! opens another connection loses its own oldest, and when the server is
//! full a newcomer takes the oldest connection of whoever holds the most.
//! One address (or a few) opening idle, slow or stalled connections cannot
//! keep Prometheus out, even from the same address: its next connection
//! takes the place of the flood's oldest.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::task::AbortHandle;

/// The connections each client address holds, oldest first.
#[derive(Debug, Default)]
pub struct Clients {
    next_id: u64,
    total: usize,
    by_addr: HashMap<IpAddr, Vec<(u64, Option<AbortHandle>)>>,
    refused: u64,
    evicted: u64,
}

/// Why a connection was not let in: the server is full and no client
/// holds more than one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Clients {
    pub fn shared() -> Arc<Mutex<Clients>> {
        Arc::default()
    }

    /// Lets a connection from `ip` in (its id): over its share, in place of
    /// its own oldest; when `total` is reached, in place of the greediest
    /// client's oldest.
    pub fn admit(&mut self, ip: IpAddr, per_client: usize, total: usize) -> Result<u64, Full> {
        let held = self.by_addr.get(&ip).map_or(0, Vec::len);
        if held >= per_client.max(1) {
            self.evict_oldest(ip);
        } else if self.total >= total.max(1) && !self.evict_from_greediest(held + 1) {
            self.refused += 1;
            return Err(Full);
        }
        self.next_id += 1;
        self.total += 1;
        self.by_addr
            .entry(ip)
            .or_default()
            .push((self.next_id, None));
        Ok(self.next_id)
    }

    /// The handle that aborts connection `id` of `ip`, once spawned.
    pub fn attach(&mut self, ip: IpAddr, id: u64, handle: AbortHandle) {
        if let Some(slot) = self
            .by_addr
            .get_mut(&ip)
            .and_then(|held| held.iter_mut().find(|(i, _)| *i == id))
        {
            slot.1 = Some(handle);
        } else {
            // Evicted (or ended) before it was attached.
            handle.abort();
        }
    }

    /// Connection `id` of `ip` ended (or was evicted already).
    pub fn release(&mut self, ip: IpAddr, id: u64) {
        let Some(held) = self.by_addr.get_mut(&ip) else {
            return;
        };
        if let Some(at) = held.iter().position(|(i, _)| *i == id) {
            held.remove(at);
            self.total -= 1;
        }
        if held.is_empty() {
            self.by_addr.remove(&ip);
        }
    }

    /// Aborts the oldest connection of the client holding the most, if it
    /// holds more than `than` (the newcomer's count once admitted).
    fn evict_from_greediest(&mut self, than: usize) -> bool {
        let Some((&ip, held)) = self.by_addr.iter().max_by_key(|(_, held)| held.len()) else {
            return false;
        };
        if held.len() <= than {
            return false;
        }
        self.evict_oldest(ip);
        true
    }

    /// Aborts the oldest connection `ip` holds.
    fn evict_oldest(&mut self, ip: IpAddr) {
        let Some(&(id, ref handle)) = self.by_addr.get(&ip).and_then(|held| held.first()) else {
            return;
        };
        if let Some(handle) = handle {
            handle.abort();
        }
        self.release(ip, id);
        self.evicted += 1;
    }

    /// Connections held now, refused and evicted so far.
    pub fn counts(&self) -> (usize, u64, u64) {
        (self.total, self.refused, self.evicted)
    }
}

/// Releases a connection's place when its task ends or is aborted.
pub struct Place {
    pub clients: Arc<Mutex<Clients>>,
    pub ip: IpAddr,
    pub id: u64,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(self.ip, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_client_over_its_share_crowds_out_only_itself() {
        let mut c = Clients::default();
        let first = c.admit(ip(1), 3, 10).expect("room");
        for _ in 0..2 {
            c.admit(ip(1), 3, 10).expect("within its share");
        }
        let fourth = c.admit(ip(1), 3, 10).expect("in place of its oldest");
        assert_eq!(c.counts(), (3, 0, 1));
        assert!(c.admit(ip(2), 3, 10).is_ok());
        c.release(ip(1), first);
        assert_eq!(c.counts().0, 4, "the evicted one was released already");
        c.release(ip(1), fourth);
        assert_eq!(c.counts().0, 3);
    }

    #[test]
    fn when_full_a_newcomer_takes_from_the_greediest() {
        let mut c = Clients::default();
        let first = c.admit(ip(1), 8, 4).expect("room");
        for _ in 0..3 {
            c.admit(ip(1), 8, 4).expect("room");
        }
        // Full: 10.0.0.2 takes 10.0.0.1's oldest.
        assert!(c.admit(ip(2), 8, 4).is_ok());
        assert_eq!(c.counts(), (4, 0, 1));
        // Its place is gone; releasing it again changes nothing.
        c.release(ip(1), first);
        assert_eq!(c.counts().0, 4);
        // Four clients holding one each: nobody is greedier.
        c.admit(ip(3), 8, 4).expect("takes from 10.0.0.1 again");
        c.admit(ip(4), 8, 4).expect("and again");
        assert_eq!(c.admit(ip(5), 8, 4), Err(Full));
    }

    #[test]
    fn released_places_are_free_again() {
        let mut c = Clients::default();
        let id = c.admit(ip(1), 1, 1).expect("room");
        assert_eq!(c.admit(ip(2), 1, 1), Err(Full));
        c.release(ip(1), id);
        assert!(c.admit(ip(2), 1, 1).is_ok());
    }
}
