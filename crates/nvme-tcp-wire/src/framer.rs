//! Streaming PDU framer. TODO(issue 2): being written.
