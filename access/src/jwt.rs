//! TODO(issue 6): jwt
