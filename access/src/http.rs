//! TODO(issue 6): http
