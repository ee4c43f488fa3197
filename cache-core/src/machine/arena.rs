//! A generational arena: slots are reused, and every reuse bumps the slot's
//! generation, so a stale id (a handle released twice, a call id that already
//! settled) is detected instead of silently aliasing a newer value.
//!
//! Allocation order is a pure function of the operation sequence (a LIFO free
//! list), which keeps ids — and so traces — deterministic.

use std::fmt;

use super::touch::TouchLog;

/// A slot index plus the generation it was allocated in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    index: u32,
    generation: u32,
}

impl Key {
    /// The slot index, the same for every generation of the slot.
    pub(crate) fn index(self) -> usize {
        self.index as usize
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}v{}", self.index, self.generation)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

struct Slot<T> {
    generation: u32,
    /// The next free slot when this one is free (an intrusive free list:
    /// removing a value never allocates).
    next_free: u32,
    value: Option<T>,
}

/// No next free slot.
const NONE: u32 = u32::MAX;

/// Generation-checked storage for values of type `T`.
pub struct Arena<T> {
    slots: Vec<Slot<T>>,
    /// The most recently freed slot: the top of the LIFO free list.
    free_head: u32,
    len: usize,
    /// Keys inserted, borrowed mutably or removed: every change to a value
    /// goes through one of those three doors, so none escapes the log.
    pub(crate) log: TouchLog<Key>,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free_head: NONE,
            len: 0,
            log: TouchLog::default(),
        }
    }
}

impl<T> Arena<T> {
    /// Stores `value` and returns its key.
    pub fn insert(&mut self, value: T) -> Key {
        let key = self.place(value);
        self.log.note(key);
        key
    }

    fn place(&mut self, value: T) -> Key {
        self.len += 1;
        if self.free_head != NONE {
            let index = self.free_head;
            let slot = &mut self.slots[index as usize];
            self.free_head = slot.next_free;
            slot.next_free = NONE;
            slot.generation = slot.generation.wrapping_add(1);
            slot.value = Some(value);
            return Key {
                index,
                generation: slot.generation,
            };
        }
        let index = u32::try_from(self.slots.len())
            .ok()
            .filter(|i| *i != NONE)
            .expect("arena holds fewer than u32::MAX values");
        self.slots.push(Slot {
            generation: 0,
            next_free: NONE,
            value: Some(value),
        });
        Key {
            index,
            generation: 0,
        }
    }

    /// The value under `key`, if the key is current.
    pub fn get(&self, key: Key) -> Option<&T> {
        let slot = self.slots.get(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.value.as_ref()
    }

    /// Prefetches the slot of `key` (its first `max_lines` cache lines)
    /// without reading it: a hint for a loop about to visit it.
    #[inline]
    pub fn prefetch(&self, key: Key, max_lines: usize) {
        if let Some(slot) = self.slots.get(key.index as usize) {
            crate::prefetch::lines(slot, max_lines);
        }
    }

    /// Mutable access to the value under `key`, if the key is current.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        self.log.note(key);
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.value.as_mut()
    }

    /// Removes and returns the value under `key`, if the key is current.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        self.log.note(key);
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.next_free = self.free_head;
        self.free_head = key.index;
        self.len -= 1;
        Some(value)
    }

    /// Removes the value under `key`, if the key is current, after `take`
    /// has moved out of it what the caller keeps. The rest is dropped where
    /// it lies: a large value is not copied out whole just to be dropped.
    pub fn remove_with<R>(&mut self, key: Key, take: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.log.note(key);
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        let kept = take(slot.value.as_mut()?);
        slot.value = None;
        slot.next_free = self.free_head;
        self.free_head = key.index;
        self.len -= 1;
        Some(kept)
    }

    /// Whether `key` names a live value.
    pub fn contains(&self, key: Key) -> bool {
        self.get(key).is_some()
    }

    /// Number of live values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Live values in slot order (deterministic).
    pub fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, slot)| {
            slot.value.as_ref().map(|v| {
                (
                    Key {
                        index: i as u32,
                        generation: slot.generation,
                    },
                    v,
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_key_is_rejected_after_reuse() {
        let mut arena = Arena::default();
        let a = arena.insert("a");
        assert_eq!(arena.remove(a), Some("a"));
        let b = arena.insert("b");
        assert_eq!(a.index, b.index, "slot is reused");
        assert_ne!(a, b);
        assert_eq!(arena.get(a), None);
        assert_eq!(arena.remove(a), None, "double removal is detected");
        assert_eq!(arena.get(b), Some(&"b"));
        assert_eq!(arena.len(), 1);
    }
}
