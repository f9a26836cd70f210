//! TODO(issue 6): ws
