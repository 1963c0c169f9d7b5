//! NVMe structures. TODO(issue 2): being written.
