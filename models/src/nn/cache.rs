//! Arrays that depend only on shapes (positional embeddings, interpolation matrices, frame
//! indices), built on the host once per shape and reused by every later call.
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use mlx_rs::Array;

use crate::error::{Error, Result};

pub struct ArrayCache<K>(Mutex<HashMap<K, Array>>);

impl<K> Default for ArrayCache<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash> ArrayCache<K> {
    /// The array for `key`, built (and evaluated) by `make` on first use.
    pub fn get_or_make(&self, key: K, make: impl FnOnce() -> Result<Array>) -> Result<Array> {
        let mut map = self.0.lock().map_err(|_| Error::InvalidArgument("array cache poisoned by a panic".into()))?;
        if let Some(a) = map.get(&key) {
            return Ok(a.clone());
        }
        let a = make()?;
        a.eval()?;
        map.insert(key, a.clone());
        Ok(a)
    }
}
