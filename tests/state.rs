//! The applied-state store.
