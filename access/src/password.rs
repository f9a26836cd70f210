//! TODO(issue 6): password
