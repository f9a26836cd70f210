//! TODO(issue 6): tls
