//! Status sync (`/bcos/status/1.0.0`): being written.
