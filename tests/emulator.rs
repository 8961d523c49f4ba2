//! The emulator, driven with plain HTTP.
