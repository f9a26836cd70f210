//! TODO(issue 6): bucket
