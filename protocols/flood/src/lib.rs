//! Topic flooding (`/bcos/flood/1.0.0`): being written.
