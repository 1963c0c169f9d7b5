//! Receive-side PDU header validation. TODO(issue 2): being written.
