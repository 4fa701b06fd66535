//! Emulation of ESP-IDF's 2nd-stage bootloader app selection (idf-formats.md §2.6).
//!
//! CONTRACT (skeleton): to be written.
