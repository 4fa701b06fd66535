//! ota-service (skeleton)
