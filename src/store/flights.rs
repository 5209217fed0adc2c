//! Keys in flight in this process (the `memory` and `disk` stores): which
//! request reserved which idempotency key. Not durable, on purpose: a
//! reservation lives as long as its request, and a restart ends both.
//! What makes a key safe across a crash is the kept answer, written with
//! the job.

use std::collections::HashMap;
use std::sync::Mutex;

use super::keys::{IdemKey, Owner};
use crate::floor::lock;

/// Reservations by key.
#[derive(Debug, Default)]
pub(crate) struct Flights(Mutex<HashMap<IdemKey, Owner>>);

impl Flights {
    /// Reserves `key` for `owner`; false when another request holds it.
    pub(crate) fn take(&self, key: &IdemKey, owner: Owner) -> bool {
        let mut held = lock(&self.0);
        match held.get(key) {
            Some(o) => *o == owner,
            None => {
                held.insert(key.clone(), owner);
                true
            }
        }
    }

    /// Ends `owner`'s reservation of `key` (another's is left alone).
    pub(crate) fn end(&self, key: &IdemKey, owner: Owner) {
        let mut held = lock(&self.0);
        if held.get(key) == Some(&owner) {
            held.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_at_a_time() {
        let f = Flights::default();
        let k = IdemKey::new("s", "k").expect("a key");
        let (a, b) = (Owner::new(), Owner::new());
        assert!(f.take(&k, a));
        assert!(f.take(&k, a), "the holder again");
        assert!(!f.take(&k, b));
        f.end(&k, b);
        assert!(!f.take(&k, b), "b cannot end a's");
        f.end(&k, a);
        assert!(f.take(&k, b));
    }
}
