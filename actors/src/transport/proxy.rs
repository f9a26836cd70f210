//! TODO(issue 6): proxy
