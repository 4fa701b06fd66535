//! ota-emu (skeleton)
