//! TODO(issue 6): acl
