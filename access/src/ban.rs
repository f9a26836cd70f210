//! TODO(issue 6): ban
