//! `feedbuttons validate`: loading and diagnostics.
